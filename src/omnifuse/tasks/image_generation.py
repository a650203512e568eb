"""Image generation: an image's discrete codes predicted from the fused tokens of the others.

The target is an image modality of the model (`modality`), which the task hides from every
sample and fuses the rest once more (`TaskView.hiding`), so the images are conditioned on
whatever else a sample has: a caption, a sound, table cells, a class. A frozen image
tokenizer, the saved model folder of an `image_tokenizer` task named by `tokenizer`, turns
the target images into code grids and generated codes back into pixels; it is read from that
folder whenever the task is built and is not part of this model's weights.

A `heads.image_decoder.CodeTransformer` reads the fused tokens through cross-attention and
predicts the codes, trained one of two ways (`decoding`):

- `parallel` (MaskGIT/Muse): a share cos(pi/2 * u), u ~ U(0, 1), of each image's codes is
  replaced by [MASK] and predicted with bidirectional attention; generation reveals the codes
  in `steps` steps, the most confident first, on the cosine schedule.
- `autoregressive`: codes in raster order, causal attention, one code per step.

Classifier-free guidance (Ho and Salimans 2022): in training, a sample's condition is dropped
with probability `condition_dropout`, by hiding every modality it has (masked, as an absent
modality always is), so the same transformer also learns the unconditional distribution; in
generation the logits are u + guidance * (c - u) from the conditional c and unconditional u
passes: `guidance` 1 samples the conditional model, 0 the unconditional one, and larger
values follow the condition more closely. Codes are drawn at `temperature` (0: the most
probable) from a generator seeded with `seed`: the same seed gives the same images.

In training the prediction is (B, N, V + 2): the logits, then each position's target code and
whether the loss counts it; in evaluation it is (B, 2, N): the generated codes and the true
codes of the sample's image (-1 where it has none).

    model:
      tasks:
        picture: {type: image_generation, modality: image, tokenizer: runs/tokenizer}
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import Tensor

from omnifuse.config import parse_config
from omnifuse.errors import ConfigError, OmnifuseError
from omnifuse.heads.image_decoder import CodeTransformer, autoregressive_decode, parallel_decode
from omnifuse.heads.image_tokenizer import FSQTokenizer, code_usage
from omnifuse.interfaces import Batch, Fused
from omnifuse.modalities.base import Modality
from omnifuse.modalities.image import ImageModality
from omnifuse.registry import register_task
from omnifuse.tasks.base import Task, TaskSpec, TaskView, no_loss

Decoding = Literal["parallel", "autoregressive"]


@dataclass(frozen=True)
class Sampling:
    """How images are generated: decoding `steps` (parallel only), `temperature`, classifier-
    free `guidance` scale and the generator's `seed`."""

    steps: int
    temperature: float
    guidance: float
    seed: int


def load_tokenizer(folder: str | Path, where: str) -> FSQTokenizer:
    """The frozen FSQ tokenizer of the model saved in `folder` (trained with one
    `image_tokenizer` task), in evaluation mode; any problem is one OmnifuseError line."""
    folder = Path(folder)
    head = f"{where}: {folder}"
    config_path, weights_path = folder / "config.json", folder / "model.safetensors"
    if not folder.is_dir():
        raise OmnifuseError(f"{head}: no such folder (a model trained with an image_tokenizer)")
    for path in (config_path, weights_path):
        if not path.is_file():
            raise OmnifuseError(f"{head}: no {path.name}; not a saved omnifuse model")
    try:
        data = json.loads(config_path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise OmnifuseError(
            f"{head}: config.json is not valid JSON; the model is damaged"
        ) from None
    config = parse_config(data, str(config_path))
    names = [n for n, t in config.model.tasks.items() if t.type == "image_tokenizer"]
    if len(names) != 1:
        raise OmnifuseError(f"{head}: has {len(names)} image_tokenizer tasks; it needs one")
    name = names[0]
    spec = config.task_spec(name)
    image = config.modalities.get(spec.modality)
    assert image is not None  # checked when the config was parsed
    tokenizer = FSQTokenizer(
        channels=image.channels,  # type: ignore[attr-defined]
        size=image.size,  # type: ignore[attr-defined]
        width=spec.width,
        stages=spec.stages,
        levels=spec.levels,
    )
    try:
        weights = load_file(str(weights_path))
    except (SafetensorError, OSError) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise OmnifuseError(f"{head}: model.safetensors is not readable ({reason})") from None
    prefix = f"tasks.{name}.tokenizer."
    mine = {k[len(prefix) :]: v for k, v in weights.items() if k.startswith(prefix)}
    try:
        tokenizer.load_state_dict(mine)
    except RuntimeError:
        raise OmnifuseError(f"{head}: the tokenizer's weights do not match its config") from None
    return tokenizer.eval().requires_grad_(False)


def _where(drop: Tensor, kept: Fused, dropped: Fused) -> Fused:
    """Per sample, `dropped` where `drop` (B,) is True, else `kept` (shapes alike)."""
    d = drop.to(kept.mask.device)
    parts = weights = None
    if kept.parts is not None and dropped.parts is not None:
        parts = {n: _where(drop, p, dropped.parts[n]) for n, p in kept.parts.items()}
    if kept.weights is not None and dropped.weights is not None:
        weights = {n: torch.where(d, dropped.weights[n], w) for n, w in kept.weights.items()}
    return Fused(
        torch.where(d[:, None, None], dropped.tokens, kept.tokens),
        torch.where(d[:, None], dropped.mask, kept.mask),
        torch.where(d[:, None], dropped.pooled, kept.pooled),
        parts,
        weights,
    )


def unconditional(view: TaskView) -> TaskView:
    """The view with every modality hidden in every sample."""
    for name in sorted(view.tokens):
        view = view.hiding(name)
    return view


class ImageGeneration(Task):
    mean: Tensor  # (C, 1, 1) the image modality's normalisation
    std: Tensor

    def __init__(
        self,
        *,
        name: str,
        dim: int,
        modality: str,
        tokenizer: FSQTokenizer,
        decoding: Decoding,
        depth: int,
        heads: int,
        condition_dropout: float,
        sampling: Sampling,
        weight: float,
    ) -> None:
        super().__init__(name=name, weight=weight)
        self.modality, self.decoding = modality, decoding
        self.condition_dropout, self.sampling = condition_dropout, sampling
        self.frozen = (tokenizer,)  # a tuple: not a submodule, so not in this model's weights
        self.length = tokenizer.grid * tokenizer.grid
        self.vocab = tokenizer.codebook_size
        self.transformer = CodeTransformer(
            dim=dim,
            vocab=self.vocab,
            length=self.length,
            depth=depth,
            heads=heads,
            causal=decoding == "autoregressive",
        )

    @property
    def tokenizer(self) -> FSQTokenizer:
        """The frozen tokenizer, on this task's device."""
        tokenizer = self.frozen[0]
        device = self.transformer.position.device
        if tokenizer.decoder[0].weight.device != device:
            self.frozen = (tokenizer.to(device),)
        return self.frozen[0]

    def read_preprocessing(self, modalities: Mapping[str, Modality]) -> None:
        """The image modality's statistics, to turn its inputs into pixels; its size and
        channels must be the tokenizer's."""
        where = f"model.tasks.{self.name}"
        image = modalities[self.modality]
        if not isinstance(image, ImageModality):
            raise ConfigError(f"{where}.modality: '{self.modality}' is not an image modality")
        t = self.frozen[0]
        if (image.config.size, image.config.channels) != (t.size, t.channels):
            raise ConfigError(
                f"{where}.tokenizer: it reads {t.size}x{t.size} images of {t.channels} "
                f"channels; modality '{self.modality}' has size {image.config.size}, channels "
                f"{image.config.channels}"
            )
        mean, std = image.statistics()
        self.register_buffer("mean", torch.tensor(mean).view(-1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(-1, 1, 1), persistent=False)

    def labelled(self, batch: Batch) -> Tensor:
        """Samples that have the image to learn from (or to compare with)."""
        return batch.present[self.modality]

    @torch.no_grad()
    def target_codes(self, batch: Batch) -> Tensor:
        """(B, N) the codes of the batch's images (meaningless where absent)."""
        x = batch.inputs[self.modality].to(self.mean.device)
        pixels = (x * self.std + self.mean).clamp(0, 1).float()
        return self.tokenizer.encode(pixels).flatten(1)

    def images(self, codes: Tensor) -> Tensor:
        """(B, C, S, S) pixels in [0, 1] of generated codes (B, N)."""
        with torch.no_grad():
            return self.tokenizer.decode(codes.long().to(self.mean.device)).float()

    def forward(self, view: TaskView) -> Tensor:
        """Training: (B, N, V + 2) logits, target codes and counted flags; evaluation:
        (B, 2, N) generated and true codes (see the module docstring)."""
        if not self.training:
            generated = self.generate(view)
            true = self.target_codes(view.batch)
            here = view.batch.present[self.modality].to(true.device)[:, None]
            return torch.stack([generated, torch.where(here, true, -1)], 1).float()
        codes = self.target_codes(view.batch)  # (B, N)
        fused = view.hiding(self.modality).fused
        drop = torch.rand(len(codes), device=codes.device) < self.condition_dropout
        if drop.any():
            fused = _where(drop, fused, unconditional(view).fused)
        if self.decoding == "autoregressive":
            start = torch.full_like(codes[:, :1], self.transformer.special)
            ids, counted = torch.cat([start, codes[:, :-1]], 1), torch.ones_like(codes).bool()
        else:
            ids, counted = self.masked(codes)
        logits = fused.combine(lambda part: {"": self.transformer(ids, part)})[""]
        return torch.cat([logits.float(), codes[..., None].float(), counted[..., None]], -1)

    def masked(self, codes: Tensor) -> tuple[Tensor, Tensor]:
        """`codes` with a cosine-distributed share per sample (at least one) replaced by
        [MASK], and where."""
        b, n = codes.shape
        ratio = torch.cos(math.pi / 2 * torch.rand(b, device=codes.device))
        count = (ratio * n).ceil().clamp(1, n)  # (B,)
        order = torch.rand(b, n, device=codes.device).argsort(1).argsort(1)  # random ranks
        where = order < count[:, None]
        return torch.where(where, self.transformer.special, codes), where

    def generate(self, view: TaskView) -> Tensor:
        """(B, N) codes for the batch of `view`, conditioned on what it has (not the image)."""
        sampling = self.sampling
        conditional = view.hiding(self.modality)
        empty = unconditional(view)

        def logits_of(ids: Tensor, fused: Fused) -> Tensor:
            return fused.combine(lambda part: {"": self.transformer(ids, part)})[""].float()

        def guided(ids: Tensor) -> Tensor:
            if sampling.guidance == 0:
                return logits_of(ids, empty.fused)
            c = logits_of(ids, conditional.fused)
            if sampling.guidance == 1:
                return c
            u = logits_of(ids, empty.fused)
            return u + sampling.guidance * (c - u)

        device = self.transformer.position.device
        generator = torch.Generator(device).manual_seed(sampling.seed)
        size = len(view.batch)
        if self.decoding == "autoregressive":
            return autoregressive_decode(
                guided,
                size=size,
                length=self.length,
                vocab=self.vocab,
                temperature=sampling.temperature,
                generator=generator,
                device=device,
            )
        return parallel_decode(
            guided,
            size=size,
            length=self.length,
            vocab=self.vocab,
            steps=sampling.steps,
            temperature=sampling.temperature,
            generator=generator,
            device=device,
        )

    def loss(self, prediction: Tensor, batch: Batch) -> Tensor:
        """Cross-entropy of the counted positions (masked ones, or all autoregressively) of
        samples that have the image."""
        logits, codes, counted = prediction[..., :-2], prediction[..., -2], prediction[..., -1]
        keep = self.labelled(batch).to(prediction.device)[:, None] & (counted > 0)
        if not keep.any():
            return no_loss(prediction)
        return F.cross_entropy(logits[keep], codes[keep].long())

    def describe(self, prediction: Tensor) -> dict[str, list[int]]:
        """The generated code grid, in raster order."""
        return {"codes": prediction[0].long().tolist()}

    def metrics(self, prediction: Tensor, target: Tensor) -> dict[str, float]:
        """The share of generated codes equal to the true image's (a weak signal: many images
        fit a condition), and the perplexity and codebook share of the generated codes."""
        if len(prediction) == 0:
            return {"token_accuracy": float("nan")}
        generated, true = prediction[:, 0].long(), prediction[:, 1].long()
        accuracy = (generated == true).float().mean().item()
        return {"token_accuracy": accuracy} | code_usage(generated, self.vocab)


@register_task("image_generation")
class ImageGenerationSpec(TaskSpec):
    """Generate the image modality `modality` from the model's other modalities, as codes of
    the frozen tokenizer saved in the folder `tokenizer` (a path relative to the working
    directory, or absolute). `decoding`: `parallel` (masked-token training, `steps` steps of
    iterative parallel decoding on a cosine schedule) or `autoregressive`. The transformer
    has `depth` blocks of `heads` heads. `condition_dropout`: the share of training samples
    whose condition is hidden, for classifier-free `guidance` (0: unconditional, 1: plain
    conditional). Codes are drawn at `temperature` (0: argmax) from a generator seeded with
    `seed`. `weight` scales the loss."""

    def __init__(
        self,
        name: str,
        *,
        modality: str,
        tokenizer: str,
        decoding: Decoding = "parallel",
        depth: int = 4,
        heads: int = 4,
        condition_dropout: float = 0.1,
        steps: int = 8,
        temperature: float = 1.0,
        guidance: float = 2.0,
        seed: int = 0,
        weight: float = 1.0,
    ) -> None:
        super().__init__(name, weight=weight)
        where = f"model.tasks.{name}"
        if depth < 1 or steps < 1:
            raise ConfigError(f"{where}: depth ({depth}) and steps ({steps}) must be >= 1")
        if not 0 <= condition_dropout < 1:
            raise ConfigError(
                f"{where}.condition_dropout: must be in [0, 1), got {condition_dropout}"
            )
        if temperature < 0 or guidance < 0:
            raise ConfigError(f"{where}: temperature and guidance must be >= 0")
        self.modality, self.tokenizer, self.decoding = modality, tokenizer, decoding
        self.depth, self.heads, self.condition_dropout = depth, heads, condition_dropout
        self.sampling = Sampling(steps, temperature, guidance, seed)

    def reads(self) -> dict[str, list[str]]:
        return {"modality": [self.modality]}

    def unmet(self, modalities: Sequence[str]) -> str | None:
        if len(modalities) < 2 and self.modality in modalities:
            return "modality: image generation needs a modality to condition on besides it"
        return super().unmet(modalities)

    def build(self, *, dim: int, modalities: Sequence[str]) -> ImageGeneration:
        return ImageGeneration(
            name=self.name,
            dim=dim,
            modality=self.modality,
            tokenizer=load_tokenizer(self.tokenizer, f"model.tasks.{self.name}.tokenizer"),
            decoding=self.decoding,
            depth=self.depth,
            heads=self.heads,
            condition_dropout=self.condition_dropout,
            sampling=self.sampling,
            weight=self.weight,
        )
