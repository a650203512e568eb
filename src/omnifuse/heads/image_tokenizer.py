"""An image tokenizer: a small convolutional autoencoder with finite scalar quantisation.

`FSQTokenizer` maps an image (B, C, S, S) with pixels in [0, 1] to a grid of discrete codes
(B, S / 2**stages, S / 2**stages) and back (Mentzer et al. 2023, "Finite Scalar Quantization:
VQ-VAE Made Simple"): `stages` stride-2 convolution stages, a 1x1 projection to one channel
per entry of `levels`, each channel bounded and rounded to `levels[i]` values by
`vector_quantize_pytorch.FSQ` (a straight-through estimator), so the codebook is the product
of the levels, with no codebook to learn and none to collapse. The decoder mirrors the encoder
with nearest-neighbour upsampling and convolutions.

    tokenizer = FSQTokenizer(channels=3, size=32, width=32, stages=2, levels=[8, 5, 5, 5])
    codes = tokenizer.encode(images)            # (B, 8, 8) long in [0, 1000)
    images = tokenizer.decode(codes)            # (B, 3, 32, 32) in [0, 1]
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from vector_quantize_pytorch import FSQ


@dataclass
class Tokenized:
    """An autoencoder pass: the reconstruction (B, C, S, S) in [0, 1] and its codes (B, h, w)."""

    images: Tensor
    codes: Tensor


def _block(channels: int, out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(channels, out, 3, padding=1), nn.GroupNorm(1, out), nn.GELU(),
        nn.Conv2d(out, out, 3, padding=1), nn.GroupNorm(1, out), nn.GELU(),
    )  # fmt: skip


class FSQTokenizer(nn.Module):
    """Images in [0, 1] <-> code grids, through FSQ with `levels` per latent channel."""

    def __init__(
        self, *, channels: int, size: int, width: int, stages: int, levels: Sequence[int]
    ) -> None:
        super().__init__()
        if size % 2**stages:
            raise ValueError(f"image size {size} is not divisible by 2**stages = {2**stages}")
        self.channels, self.size, self.stages = channels, size, stages
        self.grid = size // 2**stages
        self.levels = list(levels)
        self.codebook_size = math.prod(self.levels)
        widths = [width * 2 ** min(s, 2) for s in range(stages + 1)]  # (w, 2w, 4w, 4w, ...)
        down: list[nn.Module] = [nn.Conv2d(channels, widths[0], 3, padding=1)]
        for s in range(stages):
            down += [_block(widths[s], widths[s]), nn.Conv2d(widths[s], widths[s + 1], 4, 2, 1)]
        down += [_block(widths[-1], widths[-1]), nn.Conv2d(widths[-1], len(self.levels), 1)]
        self.encoder = nn.Sequential(*down)
        self.quantizer = FSQ(levels=self.levels)
        up: list[nn.Module] = [
            nn.Conv2d(len(self.levels), widths[-1], 1),
            _block(widths[-1], widths[-1]),
        ]
        for s in reversed(range(stages)):
            up += [nn.Upsample(scale_factor=2.0, mode="nearest")]
            up += [nn.Conv2d(widths[s + 1], widths[s], 3, padding=1), _block(widths[s], widths[s])]
        up += [nn.Conv2d(widths[0], channels, 3, padding=1)]
        self.decoder = nn.Sequential(*up)

    def quantize(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """The quantised latents (B, d, h, w) and their codes (B, h, w)."""
        latent = self.encoder(images * 2 - 1).float()  # (B, d, h, w); FSQ rounds in float32
        b, d, h, w = latent.shape
        quantized, codes = self.quantizer(latent.flatten(2).transpose(1, 2))  # (B, hw, d), (B, hw)
        return quantized.transpose(1, 2).reshape(b, d, h, w), codes.reshape(b, h, w).long()

    def encode(self, images: Tensor) -> Tensor:
        """The codes (B, h, w) of images (B, C, S, S) in [0, 1]."""
        return self.quantize(images)[1]

    def reconstruct(self, quantized: Tensor) -> Tensor:
        return torch.sigmoid(self.decoder(quantized))

    def decode(self, codes: Tensor) -> Tensor:
        """The images (B, C, S, S) in [0, 1] of codes (B, h, w) or (B, h * w)."""
        codes = codes.reshape(len(codes), self.grid * self.grid)
        latent = self.quantizer.indices_to_codes(codes)  # (B, hw, d)
        latent = latent.transpose(1, 2).reshape(len(codes), -1, self.grid, self.grid)
        return self.reconstruct(latent.to(self.decoder[0].weight.dtype))

    def forward(self, images: Tensor) -> Tokenized:
        quantized, codes = self.quantize(images)
        return Tokenized(self.reconstruct(quantized), codes)


def foreground(images: Tensor) -> Tensor:
    """(B, 1, S, S) how far each pixel is from its image's background: the largest absolute
    difference over channels from the image's per-channel median, in [0, 1]. Small objects on
    a plain background are a small share of the pixels; this finds them without labels."""
    median = images.flatten(2).median(-1).values[:, :, None, None]  # (B, C, 1, 1)
    return (images - median).abs().amax(1, keepdim=True)


def reconstruction_loss(
    predicted: Tensor, target: Tensor, *, foreground_weight: float = 0.0
) -> Tensor:
    """Mean squared plus mean absolute pixel error, each pixel weighted by
    1 + foreground_weight * foreground(target), the weights normalised to mean 1 over the
    batch. With foreground_weight 0: plain MSE + L1."""
    error = (predicted - target).pow(2) + (predicted - target).abs()  # (B, C, S, S)
    if not foreground_weight:
        return error.mean()
    weight = 1 + foreground_weight * foreground(target)  # (B, 1, S, S)
    return (weight * error).mean() / weight.mean()


def psnr(predicted: Tensor, target: Tensor) -> Tensor:
    """(B,) peak signal-to-noise ratio in dB of images in [0, 1] (capped at 100 dB)."""
    mse = (predicted - target).pow(2).flatten(1).mean(1)
    return (10 * torch.log10(1 / mse.clamp(min=1e-10))).clamp(max=100.0)


def ssim(predicted: Tensor, target: Tensor, window: int = 7) -> Tensor:
    """(B,) mean structural similarity (Wang et al. 2004) of images in [0, 1], with a uniform
    `window` x `window` window (scikit-image's default), averaged over channels."""
    c1, c2 = 0.01**2, 0.03**2
    pool = nn.AvgPool2d(window, stride=1)
    mu_x, mu_y = pool(predicted), pool(target)
    n = window * window
    cov = n / (n - 1)  # sample covariances, as scikit-image
    var_x = cov * (pool(predicted * predicted) - mu_x**2)
    var_y = cov * (pool(target * target) - mu_y**2)
    cov_xy = cov * (pool(predicted * target) - mu_x * mu_y)
    num = (2 * mu_x * mu_y + c1) * (2 * cov_xy + c2)
    den = (mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2)
    return (num / den).flatten(1).mean(1)


def code_usage(codes: Tensor, codebook_size: int) -> dict[str, float]:
    """Perplexity of the code histogram (exp of its entropy: the number of equally used codes
    it amounts to) and the share of the codebook used at least once."""
    counts = torch.bincount(codes.flatten().long(), minlength=codebook_size).float()
    p = counts / counts.sum().clamp(min=1)
    entropy = -(p[p > 0] * p[p > 0].log()).sum()
    return {
        "perplexity": entropy.exp().item(),
        "codes_used": (counts > 0).float().mean().item(),
    }
