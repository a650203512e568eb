"""Images: files read with Pillow, resized, normalised; a convolutional and a patch encoder."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from PIL import Image
from pydantic import Field, model_validator
from torch import Tensor, nn

from omnifuse.config import Component, ModalityConfig
from omnifuse.errors import ConfigError, DataError
from omnifuse.interfaces import Tokens
from omnifuse.layers.attention import SelfAttentionBlock
from omnifuse.manifest import Manifest
from omnifuse.modalities.base import MAX_PIXELS, Modality, decode_image
from omnifuse.modalities.image_augment import ImageAugment, RandomShift, SpecMask
from omnifuse.modalities.perturbations import Perturbation, gaussian_noise, occlusion
from omnifuse.registry import create_encoder, register_encoder, register_kind

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


class ImageConfig(ModalityConfig):
    """An image file per row, resized to `size` x `size`, read as RGB (`channels: 3`) or
    greyscale (`channels: 1`: a third of the memory for grey images), in [0, 1] before
    normalisation: 16-bit grey divided by 65535, 32-bit integer grey by 2**31 - 1, float grey
    clipped to [0, 1], transparency composited onto white, the EXIF orientation applied
    (`modalities.base.decode_image`). An image of more than `max_pixels` pixels (read from
    its header, before decoding) is refused."""

    kind: Literal["image"] = "image"
    column: str | None = None
    size: int = Field(64, ge=8)
    channels: Literal[1, 3] = 3
    max_pixels: int = Field(MAX_PIXELS, ge=1)  # width x height; larger images are errors
    encoder: Component = Component(type="image_conv")
    # "fitted": per-channel statistics of the training split; "imagenet": the fixed ImageNet
    # statistics that pretrained backbones expect
    normalize: Literal["fitted", "imagenet"] = "fitted"
    mean: list[float] | None = None  # per channel, fitted on the training split
    std: list[float] | None = None

    @model_validator(mode="after")
    def _statistics_fit_channels(self) -> ImageConfig:
        if self.normalize == "imagenet" and self.channels != 3:
            raise ValueError("normalize: imagenet needs channels: 3")
        for name in ("mean", "std"):
            values = getattr(self, name)
            if values is not None and len(values) != self.channels:
                raise ValueError(f"{name} has {len(values)} values for {self.channels} channels")
        return self


@register_kind("image", config=ImageConfig)
class ImageModality(Modality[ImageConfig]):
    suffixes = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")

    def perturbations(self) -> dict[str, Perturbation]:
        return {"gaussian": gaussian_noise, "occlusion": occlusion}

    def read(self, value: Any, root: Path) -> Tensor:
        """The image as (channels, size, size) floats in [0, 1] (see `ImageConfig`)."""
        path = self.resolve(value, root)
        config = self.config
        # what Pillow raises for files it cannot decode (SyntaxError: a broken PNG); anything
        # else is made a DataError by `load`
        try:
            array = decode_image(
                path, size=config.size, grey=config.channels == 1, max_pixels=config.max_pixels
            )
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
            raise DataError(f"column '{self.column}': cannot read image {value}: {error}") from None
        return torch.from_numpy(array).permute(2, 0, 1).contiguous()

    def statistics(self) -> tuple[list[float], list[float]]:
        """The per-channel mean and standard deviation that loading normalises pixels with:
        a loaded image is (pixels - mean) / std."""
        if self.config.normalize == "imagenet":
            return IMAGENET_MEAN, IMAGENET_STD
        channels = self.config.channels
        return self.config.mean or [0.5] * channels, self.config.std or [0.25] * channels

    def load_value(self, value: Any, root: Path) -> Tensor:
        mean, std = self.statistics()
        image = self.read(value, root)
        return (image - torch.tensor(mean).view(-1, 1, 1)) / torch.tensor(std).view(-1, 1, 1)

    def fit(self, manifest: Manifest, rows: Sequence[int], *, files: int = 256) -> ImageConfig:
        if self.config.normalize == "imagenet":
            return self.config
        images = self.read_some(manifest, rows, files)
        if not images:
            return self.config
        pixels = torch.stack(images).transpose(0, 1).flatten(1)  # (channels, pixels)
        return self.config.model_copy(
            update={"mean": pixels.mean(1).tolist(), "std": pixels.std(1).clamp(min=1e-3).tolist()}
        )

    def template(self) -> Tensor:
        return torch.zeros(self.config.channels, self.config.size, self.config.size)

    def build_encoder(self, dim: int) -> nn.Module:
        encoder = self.config.encoder
        return create_encoder(
            encoder.type,
            dim=dim,
            size=self.config.size,
            channels=self.config.channels,
            **encoder.options,
        )


class ConvImageEncoder(nn.Module):
    """Stride-2 convolution stages, then one token per cell of the final feature map."""

    def __init__(
        self, *, dim: int, size: int, channels: int, width: int, stages: int, augment: bool
    ) -> None:
        super().__init__()
        self.augment = ImageAugment() if augment else nn.Identity()
        layers: list[nn.Module] = []
        for stage in range(stages):
            out = dim if stage == stages - 1 else width * 2**stage
            layers += [nn.Conv2d(channels, out, 3, stride=2, padding=1), nn.GroupNorm(1, out)]
            layers += [nn.GELU()] if stage < stages - 1 else []
            channels = out
        self.stem = nn.Sequential(*layers)
        grid = math.ceil(size / 2**stages)
        self.position = nn.Parameter(torch.randn(grid * grid, dim) * 0.02)

    def forward(self, x: Tensor, lengths: Tensor) -> Tokens:
        x = self.augment(x)  # the identity unless training with augment
        tokens = self.stem(x).flatten(2).transpose(1, 2) + self.position  # (B, grid*grid, D)
        mask = torch.ones(tokens.shape[:2], dtype=torch.bool, device=x.device)
        return Tokens(tokens, mask)


@register_encoder("image_conv", kinds=("image",))
def image_conv(
    dim: int,
    size: int,
    channels: int = 3,
    *,
    width: int = 32,
    stages: int = 3,
    augment: bool = False,
) -> ConvImageEncoder:
    """A small convolutional stem: ceil(size / 2**stages)**2 tokens. `augment`: random
    resized crop, flip and colour jitter while training."""
    if width < 1 or stages < 1:
        raise ConfigError(f"image_conv: width ({width}) and stages ({stages}) must be >= 1")
    return ConvImageEncoder(
        dim=dim, size=size, channels=channels, width=width, stages=stages, augment=augment
    )


class LeNetImageEncoder(nn.Module):
    """LeNet-like, as MultiBench's AV-MNIST encoders: 5x5 convolutions, each followed by ReLU
    and 2x2 max pooling, channels doubling per stage, then a 1x1 projection to `dim`: one
    token per cell of the final feature map. The convolutions run channels-last, 1.4x (56 px)
    to 1.6x (112 px) faster on CPU for so few channels (docs/benchmarks.md)."""

    def __init__(
        self,
        *,
        dim: int,
        size: int,
        channels: int,
        width: int,
        stages: int,
        shift: tuple[int, int],
        masks: int,
        mask_width: int,
    ) -> None:
        super().__init__()
        self.augment = nn.Sequential(RandomShift(*shift), SpecMask(masks, mask_width))
        layers: list[nn.Module] = []
        for stage in range(stages):
            out = width * 2**stage
            layers += [nn.Conv2d(channels, out, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2)]
            channels = out
        self.stem = nn.Sequential(*layers, nn.Conv2d(channels, dim, 1))
        # Module.to(memory_format=...) is documented but missing from torch's type stub
        self.stem.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        grid = size // 2**stages
        self.position = nn.Parameter(torch.randn(grid * grid, dim) * 0.02)

    def forward(self, x: Tensor, lengths: Tensor) -> Tokens:
        x = self.augment(x).contiguous(memory_format=torch.channels_last)
        tokens = self.stem(x).flatten(2).transpose(1, 2) + self.position  # (B, grid*grid, D)
        mask = torch.ones(tokens.shape[:2], dtype=torch.bool, device=x.device)
        return Tokens(tokens, mask)


@register_encoder("image_lenet", kinds=("image",))
def image_lenet(
    dim: int,
    size: int,
    channels: int = 3,
    *,
    width: int = 6,
    stages: int = 3,
    shift: tuple[int, int] = (0, 0),
    masks: int = 0,
    mask_width: int = 8,
) -> LeNetImageEncoder:
    """A LeNet-like CNN: (size // 2**stages)**2 tokens. While training: `shift: [x, y]`
    translates each image by up to x pixels across and y down (digits: [2, 2]; a spectrogram
    in time: [8, 0]); `masks` bands of rows and of columns, each up to `mask_width` pixels,
    are zeroed (SpecAugment, for spectrograms)."""
    if width < 1 or stages < 1 or size < 2**stages:
        raise ConfigError(
            f"image_lenet: width ({width}) and stages ({stages}) must be >= 1 and the image"
            f" ({size} px) at least 2**stages"
        )
    if len(shift) != 2 or min(shift) < 0 or masks < 0 or mask_width < 0:
        raise ConfigError("image_lenet: shift is two pixel counts >= 0; masks, mask_width >= 0")
    return LeNetImageEncoder(
        dim=dim,
        size=size,
        channels=channels,
        width=width,
        stages=stages,
        shift=(int(shift[0]), int(shift[1])),
        masks=masks,
        mask_width=mask_width,
    )


class PatchImageEncoder(nn.Module):
    """ViT-style: non-overlapping patches, linearly embedded, with learned positions, through
    transformer layers."""

    def __init__(
        self,
        *,
        dim: int,
        size: int,
        channels: int,
        patch: int,
        depth: int,
        heads: int,
        augment: bool,
    ) -> None:
        super().__init__()
        self.augment = ImageAugment() if augment else nn.Identity()
        self.embed = nn.Conv2d(channels, dim, patch, stride=patch)
        self.position = nn.Parameter(torch.randn((size // patch) ** 2, dim) * 0.02)
        self.blocks = nn.ModuleList(SelfAttentionBlock(dim=dim, heads=heads) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: Tensor, lengths: Tensor) -> Tokens:
        x = self.augment(x)
        tokens = self.embed(x).flatten(2).transpose(1, 2) + self.position  # (B, patches, D)
        mask = torch.ones(tokens.shape[:2], dtype=torch.bool, device=x.device)
        for block in self.blocks:
            tokens = block(tokens, mask)
        return Tokens(self.norm(tokens), mask)


@register_encoder("image_patch", kinds=("image",))
def image_patch(
    dim: int,
    size: int,
    channels: int = 3,
    *,
    patch: int = 8,
    depth: int = 2,
    heads: int = 4,
    augment: bool = False,
) -> PatchImageEncoder:
    """(size / patch)**2 patch tokens through `depth` transformer layers. `augment`: random
    resized crop, flip and colour jitter while training."""
    if patch < 1 or size % patch:
        raise ConfigError(f"image_patch: image size {size} is not a multiple of patch {patch}")
    return PatchImageEncoder(
        dim=dim,
        size=size,
        channels=channels,
        patch=patch,
        depth=depth,
        heads=heads,
        augment=augment,
    )
