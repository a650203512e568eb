"""Pretrained image encoders from a local Hugging Face directory: ViT, or the vision tower of CLIP.

Inputs come from the image modality with `normalize: imagenet`; the backbone converts them to
its own normalisation (`image_mean`/`image_std` of the directory's preprocessor_config.json, or
ImageNet's when it has none). `size` should be the model's `image_size`; another multiple of
the patch size works by interpolating the position embeddings. The tokens are the last hidden
states: the class token and one per patch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from omnifuse.errors import ConfigError
from omnifuse.interfaces import Tokens
from omnifuse.modalities.image import IMAGENET_MEAN, IMAGENET_STD
from omnifuse.pretrained.encoder import Backbone, PretrainedEncoder, Train
from omnifuse.pretrained.hf import (
    load_config,
    load_model,
    model_directory,
    preprocessor_config,
    transformer_blocks,
)
from omnifuse.registry import register_encoder

MODEL_CLASSES = {
    "vit": "ViTModel",
    "clip": "CLIPVisionModel",
    "clip_vision_model": "CLIPVisionModel",
}


class HFImageBackbone(Backbone):
    scale: Tensor
    shift: Tensor

    def __init__(
        self, model: Any, *, size: int, mean: list[float], std: list[float], name: str
    ) -> None:
        super().__init__()
        self.model = model
        self.width = model.config.hidden_size
        self.name = name
        self.interpolate = size != model.config.image_size
        # ImageNet-normalised x -> the model's normalisation: x * scale + shift
        own_mean, own_std = torch.tensor(mean), torch.tensor(std)
        scale = torch.tensor(IMAGENET_STD) / own_std
        shift = (torch.tensor(IMAGENET_MEAN) - own_mean) / own_std
        self.register_buffer("scale", scale.view(1, 3, 1, 1), persistent=False)
        self.register_buffer("shift", shift.view(1, 3, 1, 1), persistent=False)

    def blocks(self) -> Sequence[nn.Module]:
        return transformer_blocks(self.model, self.name)

    def forward(self, x: Tensor, lengths: Tensor) -> Tokens:
        pixels = x * self.scale + self.shift
        out = self.model(pixel_values=pixels, interpolate_pos_encoding=self.interpolate)
        hidden = out.last_hidden_state  # (B, 1 + patches, width)
        return Tokens(hidden, torch.ones(hidden.shape[:2], dtype=torch.bool, device=x.device))


@register_encoder("image_hf", kinds=("image",), needs={"channels": 3})
def image_hf(
    dim: int,
    size: int,
    channels: int = 3,
    *,
    path: str,
    train: Train = "none",
    cache: bool = True,
    cache_dir: str | None = None,
) -> PretrainedEncoder:
    """A local Hugging Face directory holding a ViT or a CLIP model (its vision tower is used);
    loaded offline. `train`: "none" (frozen), "all", or the last k transformer layers."""
    directory = model_directory(path, "image_hf")
    config = load_config(directory, "image_hf")
    if config.model_type not in MODEL_CLASSES:
        raise ConfigError(
            f"encoder 'image_hf' option path: {path} holds a '{config.model_type}' model; "
            f"supported: {', '.join(MODEL_CLASSES)}"
        )
    model = load_model(directory, "image_hf", MODEL_CLASSES[config.model_type])
    patch = model.config.patch_size
    if size % patch:
        raise ConfigError(
            f"encoder 'image_hf': image size {size} is not a multiple of the model's patch size "
            f"{patch} (its own size is {model.config.image_size})"
        )
    processor = preprocessor_config(directory)
    backbone = HFImageBackbone(
        model,
        size=size,
        mean=processor.get("image_mean", IMAGENET_MEAN),
        std=processor.get("image_std", IMAGENET_STD),
        name="image_hf",
    )
    return PretrainedEncoder(
        backbone, dim=dim, train=train, cache=cache, cache_dir=cache_dir, name="image_hf"
    )
