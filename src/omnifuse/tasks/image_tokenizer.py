"""An image tokenizer as a task: an FSQ autoencoder trained on an image modality's inputs.

The task reads the inputs of its image modality (undoing the modality's normalisation, so it
works on pixels in [0, 1]) and trains `heads.image_tokenizer.FSQTokenizer` to reconstruct
them from a grid of discrete codes. It reads no fused tokens: the model around it only carries
its data, preprocessing and checkpoints, so a tokenizer is trained, saved and loaded like any
model, and an `image_generation` task names the saved folder as its `tokenizer`.

Its prediction packs, per sample, the codes (h * w, as floats) and then the reconstruction
(C * S * S pixels); zeros where the sample has no image. Metrics: reconstruction PSNR (dB) and
SSIM, and codebook usage (the perplexity of the codes and the share of the codebook used).

    modalities:
      image: {kind: image, size: 32, encoder: {type: image_conv, width: 4}}
    model:
      tasks:
        tokenizer: {type: image_tokenizer, modality: image, levels: [8, 5, 5, 5]}
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from omnifuse.errors import ConfigError
from omnifuse.heads.image_tokenizer import (
    FSQTokenizer,
    code_usage,
    psnr,
    reconstruction_loss,
    ssim,
)
from omnifuse.interfaces import Batch
from omnifuse.modalities.base import Modality
from omnifuse.modalities.image import ImageModality
from omnifuse.registry import register_task
from omnifuse.tasks.base import Task, TaskSpec, TaskView, no_loss


def pixel_statistics(
    modalities: Mapping[str, Modality], modality: str, where: str
) -> tuple[ImageModality, Tensor, Tensor]:
    """The image modality and its normalisation's mean and std, each (C, 1, 1)."""
    found = modalities[modality]
    if not isinstance(found, ImageModality):
        raise ConfigError(f"{where}.modality: '{modality}' is {found.config.kind}, not an image")
    mean, std = found.statistics()
    return found, torch.tensor(mean).view(-1, 1, 1), torch.tensor(std).view(-1, 1, 1)


class ImageTokenizer(Task):
    tokenizer: FSQTokenizer
    mean: Tensor  # (C, 1, 1) the image modality's normalisation
    std: Tensor

    def __init__(
        self,
        *,
        name: str,
        modality: str,
        width: int,
        stages: int,
        levels: Sequence[int],
        foreground_weight: float,
        weight: float,
    ) -> None:
        super().__init__(name=name, weight=weight)
        self.modality, self.width, self.stages, self.levels = modality, width, stages, levels
        self.foreground_weight = foreground_weight

    def read_preprocessing(self, modalities: Mapping[str, Modality]) -> None:
        """The autoencoder is built here, sized by the image modality's size and channels."""
        where = f"model.tasks.{self.name}"
        image, mean, std = pixel_statistics(modalities, self.modality, where)
        size, channels = image.config.size, image.config.channels
        if size % 2**self.stages:
            raise ConfigError(
                f"{where}.stages: the image size {size} must be divisible by 2**stages "
                f"({2**self.stages})"
            )
        self.register_buffer("mean", mean, persistent=False)
        self.register_buffer("std", std, persistent=False)
        self.tokenizer = FSQTokenizer(
            channels=channels, size=size, width=self.width, stages=self.stages, levels=self.levels
        )

    def labelled(self, batch: Batch) -> Tensor:
        """Samples that have the image."""
        return batch.present[self.modality]

    def pixels(self, batch: Batch) -> Tensor:
        """(B, C, S, S) the batch's images in [0, 1], zeros where absent."""
        x = batch.inputs[self.modality].to(self.mean.device)
        here = batch.present[self.modality].to(x.device)[:, None, None, None]
        return ((x * self.std + self.mean).clamp(0, 1) * here).float()

    def evaluation_target(self, batch: Batch) -> Tensor:
        return self.pixels(batch).flatten(1)

    def forward(self, view: TaskView) -> Tensor:
        """(B, h*w + C*S*S): the codes, then the reconstruction (see the module docstring)."""
        pixels = self.pixels(view.batch)
        out = self.tokenizer(pixels)
        packed = torch.cat([out.codes.flatten(1).float(), out.images.float().flatten(1)], 1)
        return packed * view.batch.present[self.modality].to(packed.device)[:, None]

    def split(self, prediction: Tensor) -> tuple[Tensor, Tensor]:
        """The codes (B, h, w) and reconstructions (B, C, S, S) packed in `prediction`."""
        t = self.tokenizer
        n = t.grid * t.grid
        codes = prediction[:, :n].round().long().reshape(-1, t.grid, t.grid)
        return codes, prediction[:, n:].reshape(-1, t.channels, t.size, t.size)

    def loss(self, prediction: Tensor, batch: Batch) -> Tensor:
        """`heads.image_tokenizer.reconstruction_loss` (MSE + L1, optionally weighted toward
        the foreground), over samples that have the image."""
        keep = self.labelled(batch).to(prediction.device)
        if not keep.any():
            return no_loss(prediction)
        _, images = self.split(prediction[keep])
        target = self.pixels(batch)[keep]
        return reconstruction_loss(
            images,
            target,
            foreground_weight=self.foreground_weight,
        )

    def describe(self, prediction: Tensor) -> dict[str, Any]:
        """The image's code grid."""
        codes, _ = self.split(prediction[None])
        return {"codes": codes[0].tolist()}

    def metrics(self, prediction: Tensor, target: Tensor) -> dict[str, float]:
        """Reconstruction PSNR (dB) and SSIM, means over images; code perplexity and the
        share of the codebook's codes used."""
        if len(prediction) == 0:
            return {"psnr": float("nan")}
        codes, images = self.split(prediction)
        target = target.reshape(images.shape)
        return {
            "psnr": psnr(images, target).mean().item(),
            "ssim": ssim(images, target).mean().item(),
        } | code_usage(codes, self.tokenizer.codebook_size)


@register_task("image_tokenizer")
class ImageTokenizerSpec(TaskSpec):
    """Train an FSQ image tokenizer on the image modality `modality`: `stages` stride-2 stages
    (a grid of size / 2**stages codes a side) of `width` channels (doubling twice), and one
    latent channel per entry of `levels`, each rounded to that many values (codebook size:
    their product; FSQ's paper recommends [8, 5, 5, 5] for 1000 codes, [8, 8, 8, 5, 5, 5] for
    64000). The loss is MSE + L1 per pixel; `foreground_weight` weights each pixel by
    1 + foreground_weight * its distance from the image's median colour (so small objects on a
    plain background, a small share of the pixels, are not traded away for the background;
    0: uniform). `weight` scales the loss."""

    def __init__(
        self,
        name: str,
        *,
        modality: str,
        width: int = 32,
        stages: int = 2,
        levels: list[int] | None = None,
        foreground_weight: float = 0.0,
        weight: float = 1.0,
    ) -> None:
        super().__init__(name, weight=weight)
        where = f"model.tasks.{name}"
        self.levels = [8, 5, 5, 5] if levels is None else levels
        if width < 1 or stages < 1:
            raise ConfigError(f"{where}: width ({width}) and stages ({stages}) must be >= 1")
        if not self.levels or any(level < 2 for level in self.levels):
            raise ConfigError(f"{where}.levels: each level must be at least 2, got {self.levels}")
        if foreground_weight < 0:
            raise ConfigError(f"{where}.foreground_weight: must be >= 0, got {foreground_weight}")
        self.modality, self.width, self.stages = modality, width, stages
        self.foreground_weight = foreground_weight

    def reads(self) -> dict[str, list[str]]:
        return {"modality": [self.modality]}

    def build(self, *, dim: int, modalities: Sequence[str]) -> ImageTokenizer:
        return ImageTokenizer(
            name=self.name,
            modality=self.modality,
            width=self.width,
            stages=self.stages,
            levels=self.levels,
            foreground_weight=self.foreground_weight,
            weight=self.weight,
        )
