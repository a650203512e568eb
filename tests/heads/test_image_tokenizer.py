"""The FSQ image tokenizer: shapes and code ranges of the round trip, its metrics, and a tiny
one that overfits eight images."""

from __future__ import annotations

import pytest
import torch

from omnifuse.errors import ConfigError
from omnifuse.heads.image_tokenizer import (
    FSQTokenizer,
    code_usage,
    foreground,
    psnr,
    reconstruction_loss,
    ssim,
)
from omnifuse.registry import create_task


def tiny(levels: list[int] | None = None) -> FSQTokenizer:
    return FSQTokenizer(channels=3, size=16, width=8, stages=2, levels=levels or [5, 5, 5])


def test_encode_decode_round_trip_shapes_and_code_range():
    torch.manual_seed(0)
    tokenizer = tiny().eval()
    images = torch.rand(4, 3, 16, 16)
    codes = tokenizer.encode(images)
    assert codes.shape == (4, 4, 4) and codes.dtype == torch.long
    assert codes.min() >= 0 and codes.max() < tokenizer.codebook_size == 125
    decoded = tokenizer.decode(codes)
    assert decoded.shape == images.shape
    assert decoded.min() >= 0 and decoded.max() <= 1
    # decoding the codes gives what the autoencoder's own pass reconstructs
    torch.testing.assert_close(decoded, tokenizer(images).images, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(tokenizer.decode(codes.flatten(1)), decoded)


def test_a_size_the_stages_cannot_halve_is_refused():
    with pytest.raises(ValueError, match="not divisible"):
        FSQTokenizer(channels=1, size=18, width=4, stages=2, levels=[5, 5])


def shapes(count: int, size: int = 16) -> torch.Tensor:
    """Coloured squares at different places on dark backgrounds."""
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(count, 3, 1, 1, generator=generator).expand(-1, -1, size, size) * 0.3
    images = images.clone()
    for i in range(count):
        x, y = (int(v) for v in torch.randint(0, size - 6, (2,), generator=generator))
        colour = torch.rand(3, 1, 1, generator=generator)
        images[i, :, y : y + 6, x : x + 6] = colour
    return images


def test_a_tiny_tokenizer_overfits_eight_images():
    """PSNR rises from about 10 dB to past 20 dB in 250 Adam steps (a few seconds on a CPU)."""
    torch.manual_seed(0)
    tokenizer = tiny([8, 5, 5, 5])
    images = shapes(8)
    before = psnr(tokenizer(images).images, images).mean().item()
    optimizer = torch.optim.Adam(tokenizer.parameters(), lr=3e-3)
    for _ in range(250):
        out = tokenizer(images)
        loss = (out.images - images).pow(2).mean() + (out.images - images).abs().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = psnr(tokenizer.eval()(images).images, images).mean().item()
    assert before < 15 and after > 20, (before, after)


def test_psnr_and_ssim_of_known_images():
    images = torch.rand(2, 3, 16, 16)
    assert psnr(images, images).tolist() == [100.0, 100.0]
    torch.testing.assert_close(ssim(images, images), torch.ones(2))
    noisy = (images + 0.1).clamp(0, 1)
    assert 15 < psnr(noisy, images).mean() < 25
    assert ssim(noisy, images).mean() < 1


def test_ssim_matches_scikit_image():
    metrics = pytest.importorskip("skimage.metrics")
    generator = torch.Generator().manual_seed(1)
    a = torch.rand(1, 1, 16, 16, generator=generator)
    b = (a + 0.2 * torch.rand(1, 1, 16, 16, generator=generator)).clamp(0, 1)
    expected = metrics.structural_similarity(a[0, 0].numpy(), b[0, 0].numpy(), data_range=1.0)
    assert ssim(b, a).item() == pytest.approx(expected, abs=1e-4)


def test_code_usage():
    uniform = code_usage(torch.arange(10).repeat(3), 20)
    assert uniform["perplexity"] == pytest.approx(10) and uniform["codes_used"] == 0.5
    one = code_usage(torch.zeros(7, dtype=torch.long), 4)
    assert one["perplexity"] == pytest.approx(1) and one["codes_used"] == 0.25


def test_foreground_finds_a_small_object_on_a_plain_background():
    images = torch.full((1, 3, 16, 16), 0.2)
    images[0, 0, 4:8, 4:8] = 0.9  # a red square: 1/16 of the pixels
    found = foreground(images)
    assert found.shape == (1, 1, 16, 16)
    assert found[0, 0, 4:8, 4:8].min().item() == pytest.approx(0.7)
    assert found.sum().item() == pytest.approx(0.7 * 16)


def test_the_foreground_weight_makes_errors_on_objects_cost_more():
    target = torch.full((1, 3, 16, 16), 0.2)
    target[0, :, 4:8, 4:8] = 0.9
    on_object, on_background = target.clone(), target.clone()
    on_object[0, :, 4:6, 4:6] -= 0.3
    on_background[0, :, 12:14, 12:14] += 0.3
    plain = reconstruction_loss(on_object, target)
    expected = (on_object - target).pow(2).mean() + (on_object - target).abs().mean()
    torch.testing.assert_close(plain, expected)
    torch.testing.assert_close(plain, reconstruction_loss(on_background, target))
    weighted = reconstruction_loss(on_object, target, foreground_weight=10.0)
    assert weighted > 3 * reconstruction_loss(on_background, target, foreground_weight=10.0)


def test_the_tokenizer_task_takes_a_foreground_weight():
    spec = create_task("image_tokenizer", "tok", modality="image", foreground_weight=5.0)
    assert spec.build(dim=8, modalities=["image"]).foreground_weight == 5.0
    assert create_task("image_tokenizer", "tok", modality="image").foreground_weight == 0.0
    with pytest.raises(ConfigError, match="foreground_weight"):
        create_task("image_tokenizer", "tok", modality="image", foreground_weight=-1.0)
