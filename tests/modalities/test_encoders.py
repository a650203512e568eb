"""Sweep every registered encoder: shapes, masks, gradients, no NaN with absent inputs."""

from __future__ import annotations

import pytest
import torch

from omnifuse.config import AudioConfig, ImageConfig, TabularConfig, TextConfig
from omnifuse.data.batch import Collate
from omnifuse.modalities import create_modality
from omnifuse.modalities.text import encode_bytes
from omnifuse.registry import list_encoders

DIM = 16


def modality_for(encoder: str):
    """A tiny modality of the encoder's kind, and four preprocessed inputs (one absent)."""
    kind = encoder.split("_")[0]
    torch.manual_seed(0)
    if kind == "image":
        config = ImageConfig(size=16, encoder={"type": encoder})
        values = [torch.randn(3, 16, 16) for _ in range(3)]
    elif kind == "text":
        config = TextConfig(max_length=12, encoder={"type": encoder})
        values = [encode_bytes(t, 12) for t in ("a red circle here", "hi", "x")]
    elif kind == "audio":
        config = AudioConfig(n_mels=8, encoder={"type": encoder})
        values = [torch.randn(8, frames) for frames in (20, 9, 3)]
    elif kind == "tabular":
        config = TabularConfig(
            numeric=["a", "b"],
            categorical=["c"],
            categories={"c": ["x", "y"]},
            encoder={"type": encoder},
        )
        values = [
            torch.tensor([0.5, float("nan"), 2.0]),
            torch.tensor([1.0, 2.0, 0.0]),
            torch.tensor([float("nan"), float("nan"), 1.0]),
        ]
    else:
        raise AssertionError(f"no test inputs for encoder kind '{kind}'")
    return create_modality(kind, config), [*values[:2], None, values[2]]


def batch_of(values):
    from omnifuse.data.batch import Sample

    template = next(v for v in values if v is not None)
    collate = Collate({"m": template}, {})
    return collate([Sample(str(i), {"m": v}) for i, v in enumerate(values)])


@pytest.mark.parametrize("name", list_encoders())
def test_encoder_shapes_masks_and_gradients(name: str):
    modality, values = modality_for(name)
    encoder = modality.build_encoder(DIM)
    batch = batch_of(values)
    out = encoder(batch.inputs["m"], batch.lengths["m"])
    assert out.tokens.ndim == 3 and out.tokens.shape[0] == 4 and out.tokens.shape[2] == DIM
    assert out.mask.shape == out.tokens.shape[:2] and out.mask.dtype == torch.bool
    assert torch.isfinite(out.tokens).all()
    assert out.mask[[0, 1, 3]].any(dim=1).all()  # present samples have tokens
    (out.tokens * out.mask[..., None]).sum().backward()
    for pname, param in encoder.named_parameters():
        assert param.grad is not None, f"{name}: {pname} gets no gradient"


@pytest.mark.parametrize(
    "name", [n for n in list_encoders() if n.split("_")[0] in ("text", "audio")]
)
def test_padding_does_not_change_a_sequence_encoding(name: str):
    """A sample's valid tokens are the same whether or not a longer sample pads its batch."""
    modality, values = modality_for(name)
    encoder = modality.build_encoder(DIM).eval()
    short = values[1]
    alone = batch_of([short])
    together = batch_of([values[0], short])
    a = encoder(alone.inputs["m"], alone.lengths["m"])
    b = encoder(together.inputs["m"], together.lengths["m"])
    n = int(a.mask[0].sum())
    assert b.mask[1].sum() == n
    torch.testing.assert_close(a.tokens[0, :n], b.tokens[1, :n], atol=1e-5, rtol=1e-4)


def test_tabular_missing_and_unknown_values_have_their_own_tokens():
    modality = create_modality(
        "tab",
        TabularConfig(
            numeric=["a"], categorical=["c"], stats={"a": (1.0, 2.0)}, categories={"c": ["x", "y"]}
        ),
    )
    row = modality.load({"a": 5, "c": "y"}, root=None)  # type: ignore[arg-type]
    assert row.tolist() == [2.0, 3.0]  # standardised value, code 2 + index 1
    assert modality.load({"a": None, "c": "zebra"}, root=None).tolist()[1] == 1.0  # type: ignore[arg-type]
    assert torch.isnan(modality.load({"a": float("nan"), "c": "x"}, root=None)[0])  # type: ignore[arg-type]
    assert modality.load({"a": None, "c": None}, root=None) is None  # type: ignore[arg-type]


def test_image_imagenet_normalisation_needs_no_fitting(tmp_path):
    from PIL import Image

    from omnifuse.data.manifest import Manifest

    Image.new("RGB", (8, 8), (255, 0, 0)).save(tmp_path / "red.png")
    modality = create_modality("image", ImageConfig(size=8, normalize="imagenet"))
    manifest = Manifest(tmp_path / "m.jsonl", [{"image": "red.png"}])
    assert modality.fit(manifest, [0]).mean is None
    pixel = modality.load({"image": "red.png"}, tmp_path)[:, 0, 0]
    expected = [(1 - 0.485) / 0.229, (0 - 0.456) / 0.224, (0 - 0.406) / 0.225]
    torch.testing.assert_close(pixel, torch.tensor(expected))


def test_audio_waveform_features_resample_and_cut(tmp_path):
    import numpy as np
    import soundfile

    stereo = np.stack([np.full(16000, 0.5), np.full(16000, -0.1)], axis=1).astype(np.float32)
    soundfile.write(tmp_path / "a.wav", stereo, 8000)  # 2 s at 8 kHz
    config = AudioConfig(features="waveform", sample_rate=16000, max_seconds=1.5)
    wave = create_modality("audio", config).load({"audio": "a.wav"}, tmp_path)
    assert wave.shape == (24000,)  # resampled to 16 kHz, cut to 1.5 s
    torch.testing.assert_close(wave[100:-100], torch.full((23800,), 0.2), atol=1e-3, rtol=0)
