"""Text: token ids from UTF-8 bytes or from a byte-level BPE trained on the training texts;
a small transformer encoder.

Id 0 pads in both tokenizers. With `bytes`, byte b is id b + 1. With `bpe`, ids 1-256 are the
256 byte symbols and each learned merge adds one id, in merge order; the pre-tokenizer maps
every input to bytes first, so text the training split never showed still encodes (byte
fallback). The merges are stored in the fitted config, which alone rebuilds the tokenizer.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import tokenizers as tk
import torch
from pydantic import Field
from tokenizers import Tokenizer
from torch import Tensor, nn

from omnifuse.config import Component, ModalityConfig
from omnifuse.errors import DataError
from omnifuse.interfaces import Tokens
from omnifuse.layers.attention import SelfAttentionBlock
from omnifuse.manifest import Manifest
from omnifuse.modalities.base import Modality, TruncationCount, is_missing
from omnifuse.registry import create_encoder, register_encoder, register_kind

PAD = 0
BYTE_VOCAB = 257  # byte b is token b + 1; 0 pads


def encode_bytes(text: str, max_length: int) -> Tensor:
    """Token ids of `text`: its UTF-8 bytes shifted by one, truncated to `max_length`."""
    return torch.tensor(list(text.encode("utf-8")[:max_length]), dtype=torch.long) + 1


def train_bpe(texts: Sequence[str], vocab_size: int) -> list[tuple[str, str]]:
    """The merges of a byte-level BPE with at most `vocab_size` ids (padding included)."""
    tokenizer = tk.Tokenizer(tk.models.BPE())
    tokenizer.pre_tokenizer = tk.pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = tk.trainers.BpeTrainer(
        vocab_size=vocab_size - 1,
        initial_alphabet=tk.pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[],
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer)
    merges = json.loads(tokenizer.to_str())["model"]["merges"]
    # tokenizers >= 0.20 saves a merge as a pair, older versions as "a b"
    pairs = [m.split(" ", 1) if isinstance(m, str) else m for m in merges]
    return [(a, b) for a, b in pairs]


def bpe_vocab(merges: Sequence[tuple[str, str]]) -> dict[str, int]:
    """Symbol -> id: the 256 byte symbols from 1, then each merge's result in merge order."""
    alphabet = sorted(tk.pre_tokenizers.ByteLevel.alphabet())
    vocab = {symbol: i + 1 for i, symbol in enumerate(alphabet)}
    for a, b in merges:
        vocab.setdefault(a + b, len(vocab) + 1)
    return vocab


def bpe_tokenizer(merges: Sequence[tuple[str, str]]) -> Tokenizer:
    tokenizer = tk.Tokenizer(tk.models.BPE(vocab=bpe_vocab(merges), merges=list(merges)))
    tokenizer.pre_tokenizer = tk.pre_tokenizers.ByteLevel(add_prefix_space=False)
    return tokenizer


class TextConfig(ModalityConfig):
    """A text value per row as token ids, truncated to `max_length` (an empty cell is absent).
    A text longer than `max_chars` characters is cut to them before it is tokenised, so a huge
    cell costs no more than that; it counts as truncated.

    `tokenizer: bytes` uses UTF-8 bytes; `bpe` a byte-level BPE of `vocab_size` tokens trained
    on the training split (its `merges` are fitted), which still encodes any input.
    """

    kind: Literal["text"] = "text"
    column: str | None = None
    max_length: int = Field(128, ge=1)
    # characters kept of a longer text before tokenising (far more than max_length tokens
    # need): bounds the time and memory a huge cell costs
    max_chars: int = Field(100_000, ge=1)
    tokenizer: Literal["bytes", "bpe"] = "bytes"
    vocab_size: int = Field(4096, ge=258)  # bpe: the padding id, 256 bytes, then merges
    merges: list[tuple[str, str]] | None = None  # bpe merges, fitted on the training split
    encoder: Component = Component(type="text_transformer")


@register_kind("text", config=TextConfig)
class TextModality(Modality[TextConfig]):
    suffixes = (".txt",)

    def __init__(self, name: str, config: TextConfig) -> None:
        super().__init__(name, config)
        self.truncations = TruncationCount(name, "texts", f"{config.max_length} tokens")

    @cached_property
    def tokenizer(self) -> Tokenizer | None:
        """The BPE tokenizer of the fitted merges; None for bytes."""
        if self.config.tokenizer == "bytes":
            return None
        if self.config.merges is None:
            raise DataError(f"column '{self.column}': the BPE tokenizer is not fitted yet")
        return bpe_tokenizer(self.config.merges)

    @property
    def vocab_size(self) -> int:
        if self.config.tokenizer == "bytes":
            return BYTE_VOCAB
        return len(bpe_vocab(self.config.merges or [])) + 1

    def load_value(self, value: Any, root: Path) -> Tensor:
        if not isinstance(value, str):
            raise DataError(f"column '{self.column}': expected text, got {type(value).__name__}")
        limit = self.config.max_length
        cut = len(value) > self.config.max_chars
        value = value[: self.config.max_chars]
        if self.tokenizer is None:
            size = len(value.encode("utf-8"))
            ids = encode_bytes(value, limit)
        else:
            encoded = self.tokenizer.encode(value).ids
            size = len(encoded)
            ids = torch.tensor(encoded[:limit], dtype=torch.long)
        self.truncations.add(cut or size > limit)
        return ids

    def notes(self) -> dict[str, Any]:
        return self.truncations.notes()

    def fit(self, manifest: Manifest, rows: Sequence[int], *, files: int = 256) -> TextConfig:
        if self.config.tokenizer == "bytes" or self.config.merges is not None:
            return self.config
        texts = []
        for index in rows:
            text = manifest.rows[index].get(self.column)
            if is_missing(text):
                continue
            if not isinstance(text, str):
                raise DataError(
                    f"{manifest.where(index)}, column '{self.column}': expected text, "
                    f"got {type(text).__name__}"
                )
            texts.append(text)
        merges = train_bpe(texts, self.config.vocab_size)
        return self.config.model_copy(update={"merges": merges})

    def template(self) -> Tensor:
        return torch.zeros(1, dtype=torch.long)

    def cell(self, path: Path) -> Any:
        """A loose .txt file's text (UTF-8), read no further than `max_chars` needs."""
        try:
            with path.open(encoding="utf-8") as file:
                return file.read(self.config.max_chars + 1)
        except UnicodeDecodeError as error:
            raise DataError(f"{path}: not UTF-8 text: {error.reason}") from None

    def build_encoder(self, dim: int) -> nn.Module:
        encoder = self.config.encoder
        # encoders that re-tokenize the text (pretrained ones) are registered with
        # needs={"tokenizer": "bytes"}; the ids' vocabulary size is given to every encoder
        return create_encoder(
            encoder.type,
            dim=dim,
            max_length=self.config.max_length,
            vocab_size=self.vocab_size,
            **encoder.options,
        )


class TransformerTextEncoder(nn.Module):
    def __init__(
        self, *, dim: int, max_length: int, vocab_size: int, depth: int, heads: int
    ) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, dim, padding_idx=PAD)
        self.position = nn.Parameter(torch.randn(max_length, dim) * 0.02)
        self.blocks = nn.ModuleList(SelfAttentionBlock(dim=dim, heads=heads) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: Tensor, lengths: Tensor) -> Tokens:
        mask = torch.arange(x.shape[1], device=x.device) < lengths[:, None]  # (B, L)
        tokens = self.embed(x) + self.position[: x.shape[1]]
        for block in self.blocks:
            tokens = block(tokens, mask)
        return Tokens(self.norm(tokens), mask)


@register_encoder("text_transformer", kinds=("text",))
def text_transformer(
    dim: int, max_length: int, vocab_size: int = BYTE_VOCAB, *, depth: int = 2, heads: int = 4
) -> TransformerTextEncoder:
    """Token embeddings with learned positions through `depth` transformer layers."""
    return TransformerTextEncoder(
        dim=dim, max_length=max_length, vocab_size=vocab_size, depth=depth, heads=heads
    )
