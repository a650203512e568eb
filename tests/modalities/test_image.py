"""Images: normalisation, the patch encoder's size check, training-only augmentation, LeNet."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from PIL import Image

from omnifuse.errors import ConfigError, DataError
from omnifuse.manifest import Manifest
from omnifuse.modalities.image import ImageConfig
from omnifuse.modalities.image_augment import ImageAugment, RandomShift, SpecMask
from omnifuse.registry import create_encoder, create_modality


def test_image_imagenet_normalisation_needs_no_fitting(tmp_path: Path):
    Image.new("RGB", (8, 8), (255, 0, 0)).save(tmp_path / "red.png")
    modality = create_modality("image", ImageConfig(size=8, normalize="imagenet"))
    manifest = Manifest(tmp_path / "m.jsonl", [{"image": "red.png"}])
    assert modality.fit(manifest, [0]).mean is None
    pixel = modality.load({"image": "red.png"}, tmp_path)[:, 0, 0]
    expected = [(1 - 0.485) / 0.229, (0 - 0.456) / 0.224, (0 - 0.406) / 0.225]
    torch.testing.assert_close(pixel, torch.tensor(expected))


def test_greyscale_images_read_one_channel_fit_one_statistic_and_train(tmp_path: Path):
    Image.new("L", (8, 8), 200).save(tmp_path / "light.png")
    Image.new("RGB", (8, 8), (0, 0, 255)).save(tmp_path / "blue.png")  # converted to grey
    rows = [{"image": "light.png"}, {"image": "blue.png"}]
    modality = create_modality("image", ImageConfig(size=8, channels=1))
    fitted = modality.fit(Manifest(tmp_path / "m.jsonl", rows), [0, 1])
    grey_blue = round(0.114 * 255) / 255  # Pillow's ITU-R 601-2 luma of pure blue
    assert fitted.mean == pytest.approx([(200 / 255 + grey_blue) / 2], abs=1e-3)
    assert len(fitted.std or []) == 1
    loaded = create_modality("image", fitted).load(rows[0], tmp_path)
    assert loaded.shape == (1, 8, 8)
    torch.testing.assert_close(
        loaded, torch.full((1, 8, 8), (200 / 255 - fitted.mean[0]) / fitted.std[0])
    )
    assert modality.template().shape == (1, 8, 8)
    for encoder in ("image_conv", "image_patch"):
        config = ImageConfig(size=8, channels=1, encoder={"type": encoder})
        module = create_modality("image", config).build_encoder(16)
        tokens = module(torch.randn(2, 1, 8, 8), torch.zeros(2)).tokens
        tokens.sum().backward()
        assert tokens.shape[0] == 2 and tokens.shape[-1] == 16


def test_channels_must_fit_the_statistics_and_the_normalisation():
    with pytest.raises(ValueError, match="normalize: imagenet needs channels: 3"):
        ImageConfig(channels=1, normalize="imagenet")
    with pytest.raises(ValueError, match="mean has 3 values for 1 channels"):
        ImageConfig(channels=1, mean=[0.5, 0.5, 0.5], std=[0.2])
    with pytest.raises(ValueError, match="channels"):
        ImageConfig(channels=2)


def test_bad_image_files_are_clear_errors(tmp_path: Path):
    (tmp_path / "bad.png").write_text("not an image")
    modality = create_modality("photo", ImageConfig(size=8))
    with pytest.raises(DataError, match=r"column 'photo': file not found: gone.png"):
        modality.load({"photo": "gone.png"}, tmp_path)
    with pytest.raises(DataError, match=r"column 'photo': cannot read image bad.png"):
        modality.load({"photo": "bad.png"}, tmp_path)


def test_patch_encoder_counts_tokens_and_checks_the_patch_size():
    encoder = create_encoder("image_patch", dim=16, size=32, patch=8, depth=1)
    out = encoder(torch.randn(2, 3, 32, 32), torch.zeros(2))
    assert out.tokens.shape == (2, 16, 16) and out.mask.all()
    with pytest.raises(
        ConfigError, match=r"image_patch: image size 30 is not a multiple of patch 8"
    ):
        create_encoder("image_patch", dim=16, size=30)
    conv = create_encoder("image_conv", dim=16, size=30, stages=2)  # any size: ceil(30 / 4)**2
    assert conv(torch.randn(1, 3, 30, 30), torch.zeros(1)).tokens.shape == (1, 64, 16)


def test_augmentation_changes_images_only_in_training():
    torch.manual_seed(0)
    augment = ImageAugment()
    x = torch.randn(8, 3, 16, 16)
    augmented = augment.train()(x)
    assert augmented.shape == x.shape and torch.isfinite(augmented).all()
    assert not torch.allclose(augmented, x)
    assert torch.equal(augment.eval()(x), x)


def test_augmentation_parts_do_what_they_say():
    torch.manual_seed(0)
    x = torch.randn(4, 3, 8, 8)
    flip = ImageAugment(scale=(1.0, 1.0), ratio=(1.0, 1.0), flip=1.0).train()
    torch.testing.assert_close(flip.crop_and_flip(x), x.flip(-1), atol=1e-5, rtol=0)
    keep = ImageAugment(scale=(1.0, 1.0), ratio=(1.0, 1.0), flip=0.0).train()
    torch.testing.assert_close(keep.crop_and_flip(x), x, atol=1e-5, rtol=0)
    grey = torch.randn(4, 1, 8, 8).expand(4, 3, 8, 8)
    shifted = ImageAugment(brightness=0.5, contrast=0.0, saturation=0.0).jitter(grey)
    offset = shifted - grey  # one additive shift per image
    assert torch.allclose(offset, offset[:, :1, :1, :1].expand_as(offset), atol=1e-6)
    assert offset[:, 0, 0, 0].abs().max() <= 0.5


@pytest.mark.parametrize("name", ["image_conv", "image_patch"])
def test_image_encoders_augment_only_when_asked_and_training(name: str):
    x = torch.randn(2, 3, 16, 16)
    plain = create_encoder(name, dim=16, size=16).train()
    augmented = create_encoder(name, dim=16, size=16, augment=True)
    augmented.load_state_dict(plain.state_dict())  # augmentation adds no weights
    lengths = torch.zeros(2)
    torch.manual_seed(0)
    assert torch.equal(plain(x, lengths).tokens, plain(x, lengths).tokens)
    assert not torch.allclose(augmented.train()(x, lengths).tokens, plain(x, lengths).tokens)
    augmented.eval()
    plain.eval()
    assert torch.equal(augmented(x, lengths).tokens, plain(x, lengths).tokens)


def test_random_shift_moves_whole_pixels_within_its_bounds_only_when_training():
    x = torch.zeros(64, 1, 12, 12)
    x[:, :, 6, 6] = 1.0  # one bright pixel, far from the edges
    torch.manual_seed(0)
    shift = RandomShift(3, 0).train()
    shifted = shift(x)
    rows, cols = (shifted[:, 0] == 1).nonzero()[:, 1:].T
    assert len(rows) == 64  # exactly one bright pixel in each image: moved, never blurred
    assert (rows == 6).all() and (cols - 6).abs().max() <= 3 and len(cols.unique()) > 1
    assert torch.equal(shift.eval()(x), x)


def test_spec_mask_zeroes_bands_of_rows_and_columns_only_when_training():
    x = torch.ones(16, 1, 20, 30)
    torch.manual_seed(0)
    masked = SpecMask(1, 5).train()(x)
    zero = masked == 0
    assert set(masked.unique().tolist()) <= {0.0, 1.0} and zero.any()
    # a zeroed cell is in a fully zeroed row or column band, each at most 5 wide
    full_rows = zero.all(dim=3).sum(dim=2)
    full_cols = zero.all(dim=2).sum(dim=2)
    assert full_rows.max() <= 5 and full_cols.max() <= 5
    assert torch.equal(SpecMask(1, 5).eval()(x), x)


def test_lenet_encoder_tokens_and_training_only_augmentation():
    encoder = create_encoder(
        "image_lenet", dim=16, size=28, channels=1, shift=[2, 2], masks=1, mask_width=4
    )
    x = torch.randn(3, 1, 28, 28)
    lengths = torch.zeros(3)
    out = encoder.eval()(x, lengths)
    assert out.tokens.shape == (3, 9, 16) and out.mask.all()  # 28 // 8 = 3: 3 x 3 cells
    assert torch.equal(encoder(x, lengths).tokens, out.tokens)
    # channels-last is only a layout: the same weights laid out plainly give the same tokens
    plain = copy.deepcopy(encoder.stem).to(memory_format=torch.contiguous_format)
    expected = plain(x).flatten(2).transpose(1, 2) + encoder.position
    assert torch.allclose(out.tokens, expected, atol=1e-5)
    torch.manual_seed(0)
    assert not torch.allclose(encoder.train()(x, lengths).tokens, out.tokens)
    with pytest.raises(ConfigError, match="image_lenet: shift"):
        create_encoder("image_lenet", dim=16, size=28, shift=[-1, 0])
    with pytest.raises(ConfigError, match="at least 2\\*\\*stages"):
        create_encoder("image_lenet", dim=16, size=4, stages=3)
