"""Video without a decoder: frames from a folder of images or a .npy array; a tubelet encoder.

A cell names a folder of frame images (sorted by file name) or a .npy array (T, H, W, C) or
(T, H, W) of uint8. `frames` frames are taken uniformly (the middle of each of `frames` equal
segments, so a clip shorter than `frames` repeats frames), resized to `size` x `size` RGB and
normalised per channel with statistics fitted on the training split: a (3, frames, size, size)
tensor. Frame images are read as the image kind reads them (`modalities.base.decode_image`:
any Pillow mode, transparency onto white), and a frame of more than 50 million pixels is
refused.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image
from PIL.Image import Resampling
from pydantic import Field
from torch import Tensor, nn

from omnifuse.config import Component, ModalityConfig
from omnifuse.errors import ConfigError, DataError
from omnifuse.interfaces import Tokens
from omnifuse.layers.attention import SelfAttentionBlock
from omnifuse.manifest import Manifest
from omnifuse.modalities.base import MAX_PIXELS, LooseFile, Modality, decode_image, load_npy
from omnifuse.modalities.perturbations import Perturbation, gaussian_noise, occlusion
from omnifuse.registry import create_encoder, register_encoder, register_kind

FRAME_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp"}


def sample_indices(total: int, frames: int) -> list[int]:
    """`frames` indices into `total` frames, one at the middle of each equal segment."""
    return [int((i + 0.5) * total / frames) for i in range(frames)]


class VideoConfig(ModalityConfig):
    """A folder of frame images (sorted by name) or a .npy array (T, H, W, C) of uint8 per row;
    `frames` frames sampled uniformly, each resized to `size` x `size` RGB."""

    kind: Literal["video"] = "video"
    column: str | None = None
    frames: int = Field(8, ge=1)
    size: int = Field(64, ge=8)
    encoder: Component = Component(type="video_tubelet")
    mean: list[float] | None = None  # per channel, fitted on the training split
    std: list[float] | None = None


@register_kind("video", config=VideoConfig)
class VideoModality(Modality[VideoConfig]):
    def perturbations(self) -> dict[str, Perturbation]:
        return {"gaussian": gaussian_noise, "occlusion": occlusion}

    def read(self, value: Any, root: Path) -> Tensor:
        """The sampled frames as (3, frames, size, size) floats in [0, 1]."""
        path = self.locate(value, root)
        if path.is_dir():
            frames = self.folder_frames(path, value, root)
        elif path.is_file() and path.suffix.lower() == ".npy":
            frames = self.array_frames(path, value)
        elif path.is_file():
            raise DataError(
                f"column '{self.column}': {value} is neither a folder of frames nor a .npy file"
            )
        else:
            raise DataError(f"column '{self.column}': file or folder not found: {value}")
        video = torch.from_numpy(np.stack(frames))  # (frames, size, size, 3)
        return video.permute(3, 0, 1, 2).contiguous()

    def folder_frames(self, folder: Path, value: Any, root: Path) -> list[np.ndarray]:
        """The sampled frame images, read as the image kind reads them (`decode_image`); each
        must lie inside the dataset folder too (but in a loose folder given to the model)."""
        names = sorted(p for p in folder.iterdir() if p.suffix.lower() in FRAME_SUFFIXES)
        if not names:
            raise DataError(f"column '{self.column}': no frame images in folder {value}")
        frames = []
        for index in sample_indices(len(names), self.config.frames):
            name = LooseFile(names[index]) if isinstance(value, LooseFile) else names[index]
            path = self.resolve(name, root)
            try:
                frames.append(
                    decode_image(path, size=self.config.size, grey=False, max_pixels=MAX_PIXELS)
                )
            except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
                raise DataError(
                    f"column '{self.column}': cannot read frame {names[index].name} of {value}: "
                    f"{error}"
                ) from None
        return frames

    def array_frames(self, path: Path, value: Any) -> list[np.ndarray]:
        try:
            array = load_npy(path)
        except (ValueError, OSError) as error:
            raise DataError(f"column '{self.column}': cannot read array {value}: {error}") from None
        if array.ndim == 3:
            array = array[..., None]
        if array.ndim != 4 or array.shape[-1] not in (1, 3) or 0 in array.shape:
            raise DataError(
                f"column '{self.column}': {value} has shape {tuple(array.shape)}, "
                f"expected (T, H, W, C) with C 1 or 3"
            )
        if array.dtype != np.uint8:
            raise DataError(f"column '{self.column}': {value} holds {array.dtype}, expected uint8")
        if array.shape[1] * array.shape[2] > MAX_PIXELS:
            raise DataError(
                f"column '{self.column}': {value} has frames of {array.shape[2]} x "
                f"{array.shape[1]} pixels, more than the limit of {MAX_PIXELS}"
            )
        picked = array[sample_indices(array.shape[0], self.config.frames)]
        if picked.shape[-1] == 1:
            picked = picked[..., 0]  # Pillow takes grey frames as (H, W)
        size = (self.config.size, self.config.size)
        return [
            np.asarray(
                Image.fromarray(np.asarray(frame)).convert("RGB").resize(size, Resampling.BILINEAR),
                dtype=np.float32,
            )
            / 255.0
            for frame in picked
        ]

    def load_value(self, value: Any, root: Path) -> Tensor:
        mean = torch.tensor(self.config.mean or [0.5] * 3).view(3, 1, 1, 1)
        std = torch.tensor(self.config.std or [0.25] * 3).view(3, 1, 1, 1)
        return (self.read(value, root) - mean) / std

    def fit(self, manifest: Manifest, rows: Sequence[int], *, files: int = 256) -> VideoConfig:
        videos = self.read_some(manifest, rows, min(files, 64))  # a video is frames x size^2
        if not videos:
            return self.config
        pixels = torch.stack(videos).transpose(0, 1).flatten(1)  # (3, pixels)
        return self.config.model_copy(
            update={"mean": pixels.mean(1).tolist(), "std": pixels.std(1).clamp(min=1e-3).tolist()}
        )

    def template(self) -> Tensor:
        return torch.zeros(3, self.config.frames, self.config.size, self.config.size)

    def build_encoder(self, dim: int) -> nn.Module:
        encoder = self.config.encoder
        return create_encoder(
            encoder.type,
            dim=dim,
            frames=self.config.frames,
            size=self.config.size,
            **encoder.options,
        )


class TubeletEncoder(nn.Module):
    """ViViT-style tubelets: non-overlapping `tubelet` x `patch` x `patch` blocks embedded by a
    3-d convolution, with learned time and space positions, through transformer layers."""

    def __init__(
        self, *, dim: int, frames: int, size: int, tubelet: int, patch: int, depth: int, heads: int
    ) -> None:
        super().__init__()
        kernel = (tubelet, patch, patch)
        self.embed = nn.Conv3d(3, dim, kernel, stride=kernel)
        self.time_position = nn.Parameter(torch.randn(frames // tubelet, 1, dim) * 0.02)
        self.space_position = nn.Parameter(torch.randn(1, (size // patch) ** 2, dim) * 0.02)
        self.blocks = nn.ModuleList(SelfAttentionBlock(dim=dim, heads=heads) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: Tensor, lengths: Tensor) -> Tokens:
        # x: (B, 3, frames, size, size) -> (B, D, steps, grid, grid)
        grid = self.embed(x)
        tokens = grid.flatten(3).permute(0, 2, 3, 1)  # (B, steps, grid*grid, D)
        tokens = (tokens + self.time_position + self.space_position).flatten(1, 2)
        mask = torch.ones(tokens.shape[:2], dtype=torch.bool, device=x.device)
        for block in self.blocks:
            tokens = block(tokens, mask)
        return Tokens(self.norm(tokens), mask)


@register_encoder("video_tubelet", kinds=("video",))
def video_tubelet(
    dim: int,
    frames: int,
    size: int,
    *,
    tubelet: int = 2,
    patch: int = 16,
    depth: int = 2,
    heads: int = 4,
) -> TubeletEncoder:
    """(frames / tubelet) * (size / patch)**2 tokens through `depth` transformer layers."""
    if tubelet < 1 or frames % tubelet:
        raise ConfigError(f"video_tubelet: frames {frames} is not a multiple of tubelet {tubelet}")
    if patch < 1 or size % patch:
        raise ConfigError(f"video_tubelet: frame size {size} is not a multiple of patch {patch}")
    return TubeletEncoder(
        dim=dim, frames=frames, size=size, tubelet=tubelet, patch=patch, depth=depth, heads=heads
    )
