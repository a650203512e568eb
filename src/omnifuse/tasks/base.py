"""A task is one registered unit in one file: its plain `TaskSpec` (options, the modalities it
reads, its target column: fitting and loading labels without any nn.Module) and the `Task`
module that the spec builds (head, loss, metrics). The model calls one method of a task,
`forward(view)`, with a `TaskView` of what the model has computed for the batch.

    @register_task("my_task")
    class MyTaskSpec(TaskSpec):
        def __init__(self, name: str, *, target: str, weight: float = 1.0) -> None: ...
        def build(self, *, dim, modalities) -> Task: ...
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from functools import cached_property
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from omnifuse.heads.query import QueryHead
from omnifuse.interfaces import Batch, Fused, Tokens
from omnifuse.layers.attention import masked_mean
from omnifuse.manifest import Manifest
from omnifuse.modalities.base import Modality, is_missing
from omnifuse.registry import closest


def missing_label(value: Any) -> bool:
    """An empty cell (None, NaN, '' or only whitespace): the row has no label, and a task
    leaves it out of its loss and metrics."""
    return is_missing(value) or (isinstance(value, str) and not value.strip())


def hide(tokens: Tokens, keep: Tensor) -> Tokens:
    """`tokens` masked and zeroed where `keep` is False: per sample (B,) or per token (B, N)."""
    mask = tokens.mask & (keep[:, None] if keep.ndim == 1 else keep)
    return Tokens(tokens.tokens * mask[..., None], mask)


def mask_tokens(tokens: Tokens, ratio: float) -> Tokens:
    """`tokens` with each token hidden with probability `ratio` (all of them at 1), drawn from
    torch's global RNG."""
    if ratio >= 1:
        return hide(tokens, torch.zeros_like(tokens.mask))
    return hide(tokens, torch.rand(tokens.mask.shape, device=tokens.mask.device) >= ratio)


class TaskView:
    """What the model has computed for a batch, as a task reads it.

    tokens: modality -> the encoder tokens the model saw (absent or dropped samples masked).
    embeddings: modality -> (B, D) their masked mean (zero where absent or hidden).
    fused: the fusion of `tokens` (for late fusion, with one part per modality).
    target_embeddings: modality -> (B, D) pooled tokens of every modality the samples have,
        before modality dropout and hiding, without gradient (reconstruction targets).
    batch: the batch itself (targets for teacher forcing, raw inputs).

    `read(fused)` decodes every task's queries from a fused result in one pass of the shared
    Perceiver IO decoder; `combine(predict)` averages a late fusion's per-part predictions;
    `hiding(modality, ratio)` is the view with that modality hidden, fused once more.
    """

    def __init__(
        self,
        *,
        tokens: dict[str, Tokens],
        batch: Batch,
        target_embeddings: dict[str, Tensor],
        fuse: Callable[[dict[str, Tokens]], Fused],
        decode: Callable[[Fused], dict[str, Tensor]],
    ) -> None:
        self.tokens = tokens
        self.batch = batch
        self.target_embeddings = target_embeddings
        self._fuse, self._decode = fuse, decode
        self._read: dict[int, tuple[Fused, dict[str, Tensor]]] = {}
        self._hidden: dict[tuple[str, float], TaskView] = {}

    @cached_property
    def embeddings(self) -> dict[str, Tensor]:
        return {name: masked_mean(t.tokens, t.mask) for name, t in self.tokens.items()}

    @cached_property
    def fused(self) -> Fused:
        return self._fuse(self.tokens)

    def read(self, fused: Fused) -> dict[str, Tensor]:
        """task -> (B, Q, D): every task's queries read from `fused`, once per fused result."""
        if id(fused) not in self._read:  # the fused result is kept, so its id stays its own
            self._read[id(fused)] = (fused, self._decode(fused))
        return self._read[id(fused)][1]

    def combine(self, predict: Callable[[Fused], Tensor]) -> Tensor:
        """`predict(fused)`, or for a late fusion the weighted mean of `predict(part)` over its
        parts, so that no prediction ever reads two modalities at once."""
        return self.fused.combine(lambda part: {"": predict(part)})[""]

    def alone(self, keep: Mapping[str, Tensor]) -> TaskView:
        """This view with each sample reduced to one modality, the one whose (B,) flag in
        `keep` is set (at most one per sample), fused once more: what the model predicts from
        that modality alone (`model.unimodal_loss`). A late fusion's parts already are each
        modality alone, so they are reused, weighted by `keep`, and so are the decoder's
        reads."""
        view = TaskView(
            tokens={name: hide(t, keep[name]) for name, t in self.tokens.items()},
            batch=self.batch,
            target_embeddings=self.target_embeddings,
            fuse=self._fuse,
            decode=self._decode,
        )
        view._read = self._read  # keyed by the fused results themselves: safe to share
        fused = self.fused
        if fused.parts is not None:
            weights = {name: keep[name].to(fused.pooled.dtype) for name in fused.parts}
            view.fused = replace(fused, weights=weights)
        return view

    def hiding(self, modality: str, ratio: float = 1.0) -> TaskView:
        """This view with `modality` hidden in every sample (or, with `ratio` < 1, that
        fraction of its tokens), fused once more; shared by the tasks asking the same."""
        key = (modality, ratio)
        if key not in self._hidden:
            tokens = dict(self.tokens)
            tokens[modality] = mask_tokens(tokens[modality], ratio)
            self._hidden[key] = TaskView(
                tokens=tokens,
                batch=self.batch,
                target_embeddings=self.target_embeddings,
                fuse=self._fuse,
                decode=self._decode,
            )
        return self._hidden[key]


class Task(nn.Module):
    """The module of a task, built by its spec: `forward(view)` predicts for a batch.

    A task that reads the fused tokens through the shared Perceiver IO decoder has a `head`
    (its learned output queries and output layer) and reads `view.read(fused)[self.name]`.
    """

    head: QueryHead | None
    # whether `model.unimodal_loss` also trains this task on each modality alone: a task with
    # one label per sample (classification, regression), not one that pairs modalities
    per_modality: ClassVar[bool] = False

    def __init__(self, *, name: str, weight: float) -> None:
        super().__init__()
        self.name = name
        self.weight = weight
        self.head = None  # tasks that read the fused tokens set their QueryHead

    def decoded(self, view: TaskView) -> Tensor:
        """(B, Q, out): this task's head on its queries as read from the view's fused tokens;
        for a late fusion, averaged over the parts."""
        head = self.head
        assert head is not None
        return view.combine(lambda part: head(view.read(part)[self.name]))

    def describe(self, prediction: Tensor) -> Any:
        """One sample's prediction as JSON-able output, or None for tasks that predict no
        target (alignment: see `omnifuse embed`)."""
        return None

    def labelled(self, batch: Batch) -> Tensor:
        """(B,) which samples of the batch count for this task's loss and metrics."""
        return batch.labelled[self.name]

    def evaluation_target(self, batch: Batch) -> Tensor:
        """(B, ...) what `metrics` compares predictions with: the batch's targets, or zeros
        for a task without a target column."""
        return batch.targets.get(self.name, torch.zeros(len(batch)))

    def forward(self, view: TaskView) -> Tensor:
        """The prediction for a batch (for an autoregressive task in training, teacher-forced
        logits; in evaluation, the generated output)."""
        raise NotImplementedError

    def setup(self, encoders: Mapping[str, nn.Module]) -> None:
        """Called once by the model after its encoders are built: a task that keeps its own
        copy of an encoder (an EMA teacher) makes it here."""

    def read_preprocessing(self, modalities: Mapping[str, Modality]) -> None:
        """Called once by the model with its modalities (their fitted preprocessing): a task
        that turns a modality's inputs back into files (pixels) reads its statistics here."""

    def after_step(self, encoders: Mapping[str, nn.Module]) -> None:
        """Called after each optimizer step (an EMA teacher follows its encoder here)."""

    def loss(self, prediction: Tensor, batch: Batch) -> Tensor:
        raise NotImplementedError

    def metrics(self, prediction: Tensor, target: Tensor) -> dict[str, float]:
        """Metrics over a whole evaluation set of labelled samples."""
        raise NotImplementedError


class TaskSpec:
    """The plain side of a task, built from its config entry: `TASKS.create(type, name,
    **options)`. Its keyword-only constructor parameters are the task's options, checked
    against their types before any work. It fits and loads the task's targets (no nn.Module),
    says which modalities it needs, and builds its `Task`."""

    target: str | None = None  # the manifest column of its labels

    def __init__(self, name: str, *, weight: float = 1.0) -> None:
        self.name = name
        self.weight = weight

    def reads(self) -> dict[str, list[str]]:
        """The modalities this task reads by name, under the option that names them."""
        return {}

    def unmet(self, modalities: Sequence[str]) -> str | None:
        """Why this task cannot run on a model of `modalities` ('option: problem'), or None."""
        for option, names in self.reads().items():
            for name in names:
                if name not in modalities:
                    return (
                        f"{option}: unknown modality '{name}'{closest(name, modalities)}; "
                        f"the config defines {', '.join(sorted(modalities))}"
                    )
        return None

    def fit(self, manifest: Manifest, rows: Sequence[int]) -> dict[str, Any]:
        """Options fitted on the training rows (class lists, statistics); stored in the config."""
        return {}

    def load_target(self, row: Mapping[str, Any]) -> Tensor | None:
        """The target for one row, or None when the row has no label for this task."""
        return None

    def has_label(self, row: Mapping[str, Any]) -> bool:
        """Whether the row has a label in this task's target column (counted for reports)."""
        return self.target is None or not missing_label(row.get(self.target))

    def target_template(self) -> Tensor:
        """A placeholder target (shape and dtype) for samples without a label."""
        return torch.zeros(())

    def build(self, *, dim: int, modalities: Sequence[str]) -> Task:
        """The task's module for a model of width `dim` over `modalities` (sorted)."""
        raise NotImplementedError


def no_loss(prediction: Tensor) -> Tensor:
    """A zero that keeps the graph connected, for a batch in which no sample counts."""
    return prediction.sum() * 0.0
