"""Text generation from the fused tokens: captioning, and answers to questions.

An autoregressive decoder (`heads.text_decoder.TextDecoder`) reads the fused tokens through
cross-attention and is trained with teacher forcing on a text column; in evaluation the model
calls `generate`, which runs greedy search, beam search or temperature sampling through the
model's `next_logits` (so a late fusion averages each step's logits over its parts).

Token ids: 0 pads; the text ids follow the text modality's tokenizers (`bytes`: byte b is
b + 1, so 1-256; `bpe`: 1-256 the byte symbols, then one id per merge, `merges` fitted on the
training rows' texts); then the start id BOS = that tokenizer's size (257 for bytes) and the
end id EOS = BOS + 1. A target is its text's ids followed by EOS, at most `max_length` in all;
a prediction is (max_length,) ids, EOS included, zeros after it.

    model:
      tasks:
        caption: {type: generation, target: caption, tokenizer: bpe, decoding: beam}
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from functools import cached_property
from typing import Any, Literal

import tokenizers as tk
import torch
import torch.nn.functional as F
from torch import Tensor

from omnifuse.errors import ConfigError, DataError
from omnifuse.heads.text_decoder import (
    PAD,
    NextLogits,
    Special,
    TextDecoder,
    beam_search,
    greedy,
    sample,
)
from omnifuse.interfaces import Batch, Fused
from omnifuse.manifest import Manifest
from omnifuse.metrics import text_metrics
from omnifuse.modalities.text import BYTE_VOCAB, bpe_tokenizer, bpe_vocab, train_bpe
from omnifuse.registry import register_task
from omnifuse.tasks.base import Task, TaskSpec, TaskView, missing_label, no_loss

Decoding = Literal["greedy", "beam", "sample"]
logger = logging.getLogger(__name__)


class Codec:
    """Text <-> ids with the generation task's start and end ids (see the module docstring)."""

    def __init__(self, merges: Sequence[tuple[str, str]] | None) -> None:
        self.merges = None if merges is None else list(merges)
        text_ids = BYTE_VOCAB if merges is None else len(bpe_vocab(merges)) + 1
        self.special = Special(bos=text_ids, eos=text_ids + 1)
        self.size = text_ids + 2

    @cached_property
    def tokenizer(self) -> tk.Tokenizer | None:
        if self.merges is None:
            return None
        tokenizer = bpe_tokenizer(self.merges)
        tokenizer.decoder = tk.decoders.ByteLevel()
        return tokenizer

    def encode(self, text: str) -> list[int]:
        if self.tokenizer is None:
            return [b + 1 for b in text.encode("utf-8")]
        return list(self.tokenizer.encode(text).ids)

    def decode(self, ids: Sequence[int]) -> str:
        """The text of `ids` up to the first end id; padding and the start id are skipped."""
        text: list[int] = []
        for i in ids:
            if i == self.special.eos:
                break
            if 0 < i < self.special.bos:
                text.append(i)
        if self.tokenizer is None:
            return bytes(i - 1 for i in text).decode("utf-8", errors="replace")
        return str(self.tokenizer.decode(text))


class Generation(Task):
    def __init__(
        self,
        *,
        name: str,
        dim: int,
        codec: Codec,
        max_length: int,
        depth: int,
        heads: int,
        decoding: Decoding,
        beam_size: int,
        temperature: float,
        weight: float,
    ) -> None:
        super().__init__(name=name, weight=weight)
        self.codec, self.max_length = codec, max_length
        self.decoding, self.beam_size, self.temperature = decoding, beam_size, temperature
        self.decoder = TextDecoder(
            dim=dim, vocab_size=codec.size, max_length=max_length, depth=depth, heads=heads
        )

    def describe(self, prediction: Tensor) -> str:
        """The generated text."""
        return self.codec.decode(prediction.tolist())

    def forward(self, view: TaskView) -> Tensor:
        """In training, teacher-forced next-token logits (B, T, V) for the batch's targets
        (B, T); in evaluation, the generated ids (B, max_length)."""
        if not self.training:

            def next_logits(prefix: Tensor, rows: Tensor) -> Tensor:
                # each step's logits averaged over a late fusion's parts, like every other
                # prediction, so the searches know nothing of fusion
                fused = view.fused.select(rows)
                return fused.combine(lambda part: {"": self.step(part, prefix)})[""]

            return self.generate(next_logits, len(view.batch))
        targets = view.batch.targets[self.name].to(view.fused.tokens.device)
        start = torch.full_like(targets[:, :1], self.codec.special.bos)
        prefix = torch.cat([start, targets[:, :-1]], 1)
        return view.combine(lambda part: self.decoder(prefix, part))

    def step(self, fused: Fused, prefix: Tensor) -> Tensor:
        """Next-token logits (B, V) after `prefix` (B, T), reading `fused` (B samples)."""
        return self.decoder(prefix.to(fused.tokens.device), fused)[:, -1]

    def generate(self, next_logits: NextLogits, size: int) -> Tensor:
        """The generated ids (size, max_length) of `size` samples, by the configured search
        over `next_logits(prefix, rows)`."""
        special, length = self.codec.special, self.max_length
        if self.decoding == "beam":
            return beam_search(next_logits, size, special, length, self.beam_size)
        if self.decoding == "sample":
            return sample(next_logits, size, special, length, self.temperature)
        return greedy(next_logits, size, special, length)

    def loss(self, prediction: Tensor, batch: Batch) -> Tensor:
        """Cross-entropy over the tokens (end included, padding not) of labelled samples."""
        targets = batch.targets[self.name].to(prediction.device)
        keep = self.labelled(batch).to(prediction.device)[:, None] & (targets != PAD)
        if not keep.any():
            return no_loss(prediction)
        return F.cross_entropy(prediction[keep], targets[keep])

    def metrics(self, prediction: Tensor, target: Tensor) -> dict[str, float]:
        """BLEU-4 (sacrebleu, corpus level), ROUGE-L F1 (mean) and exact match, all in [0, 1]."""
        generated = [self.codec.decode(ids) for ids in prediction.tolist()]
        references = [self.codec.decode(ids) for ids in target.tolist()]
        return text_metrics(generated, references)


@register_task("generation")
class GenerationSpec(TaskSpec):
    """Generate the text of column `target` (a caption, an answer) from the fused tokens.

    `tokenizer`: UTF-8 `bytes` or a byte-level `bpe` of at most `vocab_size` ids whose
    `merges` are fitted on the training split. Targets are cut to `max_length` tokens, the
    end token included; generation stops there. The decoder has `depth` blocks of `heads`
    heads. `decoding`: `greedy`, `beam` (`beam_size` beams, length-normalised) or `sample`
    (softmax at `temperature`, from torch's global RNG). `weight` scales the loss.
    """

    target: str

    def __init__(
        self,
        name: str,
        *,
        target: str,
        tokenizer: Literal["bytes", "bpe"] = "bytes",
        vocab_size: int = 1024,
        merges: list[tuple[str, str]] | None = None,
        max_length: int = 64,
        depth: int = 2,
        heads: int = 4,
        decoding: Decoding = "greedy",
        beam_size: int = 4,
        temperature: float = 1.0,
        weight: float = 1.0,
    ) -> None:
        super().__init__(name, weight=weight)
        where = f"model.tasks.{name}"
        for option, value, least in (
            ("max_length", max_length, 1),
            ("depth", depth, 1),
            ("beam_size", beam_size, 1),
            ("vocab_size", vocab_size, BYTE_VOCAB + 1),
        ):
            if value < least:
                raise ConfigError(f"{where}.{option}: must be at least {least}, got {value}")
        if not temperature > 0:
            raise ConfigError(f"{where}.temperature: must be positive, got {temperature}")
        self.target, self.tokenizer, self.vocab_size = target, tokenizer, vocab_size
        self.max_length, self.depth, self.heads = max_length, depth, heads
        self.decoding, self.beam_size, self.temperature = decoding, beam_size, temperature
        # before `fit`, a BPE task has no merges yet: it is built with the 256 byte symbols
        self.codec = Codec(None if tokenizer == "bytes" else merges or [])

    def texts(self, manifest: Manifest, rows: Sequence[int]) -> list[str]:
        texts = []
        for index in rows:
            text = manifest.rows[index].get(self.target)
            if missing_label(text):
                continue
            if not isinstance(text, str):
                raise DataError(
                    f"{manifest.where(index)}, column '{self.target}': expected text, "
                    f"got {type(text).__name__}"
                )
            texts.append(text)
        return texts

    def fit(self, manifest: Manifest, rows: Sequence[int]) -> dict[str, Any]:
        """The BPE merges of the training rows' texts (tokenizer bpe, unless given)."""
        texts = self.texts(manifest, rows)
        fitted: dict[str, Any] = {}
        codec = self.codec
        if self.tokenizer == "bpe" and not self.codec.merges:
            fitted["merges"] = train_bpe(texts, self.vocab_size)
            codec = Codec(fitted["merges"])
        cut = sum(len(codec.encode(t)) + 1 > self.max_length for t in texts)
        if cut:
            logger.warning(
                "task '%s': %d of %d training texts are longer than max_length %d tokens "
                "(the end token included) and are cut",
                self.name,
                cut,
                len(texts),
                self.max_length,
            )
        return fitted

    def load_target(self, row: Mapping[str, Any]) -> Tensor | None:
        value = row.get(self.target)
        if missing_label(value):
            return None
        if not isinstance(value, str):
            raise DataError(f"column '{self.target}': expected text, got {type(value).__name__}")
        ids = [*self.codec.encode(value)[: self.max_length - 1], self.codec.special.eos]
        return torch.tensor(ids, dtype=torch.long)

    def target_template(self) -> Tensor:
        return torch.zeros(1, dtype=torch.long)

    def build(self, *, dim: int, modalities: Sequence[str]) -> Generation:
        return Generation(
            name=self.name,
            dim=dim,
            codec=self.codec,
            max_length=self.max_length,
            depth=self.depth,
            heads=self.heads,
            decoding=self.decoding,
            beam_size=self.beam_size,
            temperature=self.temperature,
            weight=self.weight,
        )
