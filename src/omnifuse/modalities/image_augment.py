"""Training-time image augmentation on batched, normalised tensors, shared by image encoders.

Random resized crop and horizontal flip are one affine resampling per image; colour jitter
then shifts brightness, scales contrast around the image mean and saturation around each
pixel's grey value. Images are normalised (about zero mean, unit deviation per channel), so
the brightness shift is additive, in units of a channel's deviation. In eval mode the module is
the identity. Randomness comes from torch's global generator, seeded by the training loop.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class ImageAugment(nn.Module):
    def __init__(
        self,
        *,
        scale: tuple[float, float] = (0.5, 1.0),
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
        flip: float = 0.5,
        brightness: float = 0.2,
        contrast: float = 0.2,
        saturation: float = 0.2,
    ) -> None:
        super().__init__()
        self.scale, self.ratio, self.flip = scale, ratio, flip
        self.brightness, self.contrast, self.saturation = brightness, contrast, saturation

    def forward(self, x: Tensor) -> Tensor:
        if not self.training:
            return x
        return self.jitter(self.crop_and_flip(x))

    def crop_and_flip(self, x: Tensor) -> Tensor:
        """A crop of random area fraction in `scale` and aspect in `ratio`, resized back."""
        batch = x.shape[0]
        area = torch.empty(batch, device=x.device).uniform_(*self.scale)
        log_ratio = torch.empty(batch, device=x.device).uniform_(*map(math.log, self.ratio))
        aspect = log_ratio.exp()
        # width and height as fractions of the image, clipped to fit
        width = (area * aspect).sqrt().clamp(max=1.0)
        height = (area / aspect).sqrt().clamp(max=1.0)
        # centre in [-1 + w, 1 - w] in grid coordinates, where the image spans [-1, 1]
        cx = (torch.rand(batch, device=x.device) * 2 - 1) * (1 - width)
        cy = (torch.rand(batch, device=x.device) * 2 - 1) * (1 - height)
        sign = torch.where(torch.rand(batch, device=x.device) < self.flip, -1.0, 1.0)
        theta = torch.zeros(batch, 2, 3, device=x.device, dtype=x.dtype)
        theta[:, 0, 0] = width * sign
        theta[:, 0, 2] = cx
        theta[:, 1, 1] = height
        theta[:, 1, 2] = cy
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)  # (B, H, W, 2)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)

    def jitter(self, x: Tensor) -> Tensor:
        batch = x.shape[0]

        def factor(strength: float) -> Tensor:  # (B, 1, 1, 1) in [1 - s, 1 + s]
            return 1 + (torch.rand(batch, 1, 1, 1, device=x.device) * 2 - 1) * strength

        x = x + (factor(self.brightness) - 1)
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        x = mean + (x - mean) * factor(self.contrast)
        grey = x.mean(dim=1, keepdim=True)
        return grey + (x - grey) * factor(self.saturation)


class RandomShift(nn.Module):
    """Translate each image by a random whole number of pixels, at most `max_x` across and
    `max_y` down (either way), filling with the edge value: small shifts for digits, a shift in
    time for a spectrogram (`max_y: 0`). The identity in eval mode."""

    def __init__(self, max_x: int, max_y: int) -> None:
        super().__init__()
        self.max_x, self.max_y = max_x, max_y

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or (self.max_x == 0 and self.max_y == 0):
            return x
        batch, _, height, width = x.shape
        px, py = self.max_x, self.max_y
        padded = F.pad(x, (px, px, py, py), mode="replicate")
        dx = torch.randint(0, 2 * px + 1, (batch,), device=x.device)
        dy = torch.randint(0, 2 * py + 1, (batch,), device=x.device)
        rows = (dy[:, None] + torch.arange(height, device=x.device)).view(batch, 1, height, 1)
        cols = (dx[:, None] + torch.arange(width, device=x.device)).view(batch, 1, 1, width)
        index = torch.arange(batch, device=x.device).view(batch, 1, 1, 1)
        channel = torch.arange(x.shape[1], device=x.device).view(1, -1, 1, 1)
        return padded[index, channel, rows, cols]


class SpecMask(nn.Module):
    """SpecAugment-style masking: `masks` bands of rows and `masks` bands of columns per
    image, each up to `width` pixels wide, set to 0 (the mean, images being normalised). For
    spectrograms stored as images (frequency down, time across). The identity in eval mode."""

    def __init__(self, masks: int, width: int) -> None:
        super().__init__()
        self.masks, self.width = masks, width

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.masks == 0 or self.width == 0:
            return x
        batch, _, height, width = x.shape
        keep = torch.ones(batch, 1, height, width, dtype=torch.bool, device=x.device)
        for axis, size in ((2, height), (3, width)):
            positions = torch.arange(size, device=x.device)
            for _ in range(self.masks):
                band = torch.randint(0, self.width + 1, (batch,), device=x.device)
                start = (torch.rand(batch, device=x.device) * (size - band + 1)).long()
                inside = (positions >= start[:, None]) & (positions < (start + band)[:, None])
                shape = (batch, 1, size, 1) if axis == 2 else (batch, 1, 1, size)
                keep &= ~inside.view(shape)
        return x * keep
