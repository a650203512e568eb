"""Sweep every from-scratch encoder: shapes, masks, gradients, no NaN with absent or empty
inputs, padding invariance, and save/reload through OmnifuseModel."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from pydantic import BaseModel

from omnifuse.config import parse_config
from omnifuse.interfaces import Batch, Collate, Sample
from omnifuse.modalities.audio import AudioConfig
from omnifuse.modalities.base import Modality
from omnifuse.modalities.image import ImageConfig
from omnifuse.modalities.tabular import TabularConfig
from omnifuse.modalities.text import TextConfig, encode_bytes
from omnifuse.modalities.timeseries import TimeSeriesConfig
from omnifuse.modalities.vector import VectorConfig
from omnifuse.modalities.video import VideoConfig
from omnifuse.model import OmnifuseModel
from omnifuse.registry import ENCODERS, create_modality, list_encoders, list_kinds

DIM = 16
NAN = float("nan")
SCRATCH = [
    n for n in list_encoders() if ENCODERS.builder(n).__module__.startswith("omnifuse.modalities")
]


def kind_of(encoder: str) -> str:
    """The modality kind an encoder is registered for (each from-scratch encoder reads one)."""
    (kind,) = ENCODERS.info(encoder)["kinds"]
    return str(kind)


SEQUENCES = [n for n in SCRATCH if kind_of(n) in ("text", "audio", "timeseries")]


def test_every_kind_has_a_from_scratch_encoder():
    assert {kind_of(n) for n in SCRATCH} == set(list_kinds())
    assert {"image_patch", "audio_patch", "timeseries_patch", "video_tubelet"} <= set(SCRATCH)


def tiny(encoder: str) -> tuple[BaseModel, list[torch.Tensor]]:
    """A tiny config of the encoder's kind, and three preprocessed inputs of varied size."""
    kind = kind_of(encoder)
    torch.manual_seed(0)
    spec = {"type": encoder}
    if kind == "image":
        return ImageConfig(size=16, encoder=spec), [torch.randn(3, 16, 16) for _ in range(3)]
    if kind == "text":
        texts = ("a red circle here", "hi", "x")
        return TextConfig(max_length=12, encoder=spec), [encode_bytes(t, 12) for t in texts]
    if kind == "audio":
        return AudioConfig(n_mels=8, encoder=spec), [torch.randn(8, n) for n in (20, 9, 3)]
    if kind == "tabular":
        config = TabularConfig(
            numeric=["a", "b"], categorical=["c"], categories={"c": ["x", "y"]}, encoder=spec
        )
        rows = [[0.5, NAN, 2.0], [1.0, 2.0, 0.0], [NAN, NAN, 1.0]]
        return config, [torch.tensor(r) for r in rows]
    if kind == "timeseries":
        series = [torch.randn(2, n) for n in (40, 17, 5)]
        series[0][:, 3:9] = NAN  # a gap inside a patch
        spec = {"type": encoder, "patch": 8} if encoder == "timeseries_patch" else spec
        return TimeSeriesConfig(channels=2, encoder=spec), series
    if kind == "video":
        spec = {"type": encoder, "patch": 8} if encoder == "video_tubelet" else spec
        config = VideoConfig(frames=4, size=16, encoder=spec)
        return config, [torch.randn(3, 4, 16, 16) for _ in range(3)]
    if kind == "vector":
        return VectorConfig(dim=6, encoder=spec), [torch.randn(6) for _ in range(3)]
    raise AssertionError(f"no test inputs for encoder kind '{kind}'")


def modality_for(encoder: str) -> tuple[Modality, list[torch.Tensor | None]]:
    """The modality and four inputs, the third absent."""
    config, values = tiny(encoder)
    return create_modality("m", config), [*values[:2], None, values[2]]  # type: ignore[arg-type]


def batch_of(values: list[torch.Tensor | None], template: torch.Tensor | None = None) -> Batch:
    template = template if template is not None else next(v for v in values if v is not None)
    collate = Collate({"m": template}, {})
    return collate([Sample(str(i), {"m": v}) for i, v in enumerate(values)])


@pytest.mark.parametrize("name", SCRATCH)
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
        assert torch.isfinite(param.grad).all(), f"{name}: {pname} has a non-finite gradient"


@pytest.mark.parametrize("name", SCRATCH)
def test_no_nan_when_every_sample_is_absent_or_empty(name: str):
    modality, values = modality_for(name)
    encoder = modality.build_encoder(DIM)
    template = next(v for v in values if v is not None)
    absent = batch_of([None, None], template)
    assert absent.lengths["m"].tolist() == [0, 0]
    out = encoder(absent.inputs["m"], absent.lengths["m"])
    assert torch.isfinite(out.tokens).all()
    # present samples whose length is 0 after the collate (e.g. an empty series)
    empty = batch_of(values)
    empty.lengths["m"][:] = 0
    out = encoder(empty.inputs["m"], empty.lengths["m"])
    assert torch.isfinite(out.tokens).all()
    out.tokens.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in encoder.parameters() if p.grad is not None)


@pytest.mark.parametrize("name", SEQUENCES)
def test_sequence_encoders_mask_padding(name: str):
    modality, values = modality_for(name)
    encoder = modality.build_encoder(DIM).eval()
    batch = batch_of(values)
    out = encoder(batch.inputs["m"], batch.lengths["m"])
    counts = out.mask.sum(dim=1)
    assert counts[0] > counts[1] > 0  # the longer sample has more valid tokens
    empty = batch_of([values[1]])
    empty.lengths["m"][:] = 0
    assert not encoder(empty.inputs["m"], empty.lengths["m"]).mask.any()


@pytest.mark.parametrize("name", SEQUENCES)
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
    torch.testing.assert_close(a.tokens[0][a.mask[0]], b.tokens[1][b.mask[1]], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("name", SCRATCH)
def test_save_and_reload_give_identical_outputs(name: str, tmp_path: Path):
    config, values = tiny(name)
    run = parse_config(
        {
            "data": {"manifest": "unused.jsonl"},
            "modalities": {"m": config.model_dump(mode="json")},
            "model": {
                "dim": DIM,
                "fusion": {"type": "perceiver", "latents": 2, "depth": 1},
                "tasks": {"y": {"type": "classification", "target": "y", "classes": ["a", "b"]}},
            },
        }
    )
    torch.manual_seed(1)
    model = OmnifuseModel.build(run).eval()
    model.save_pretrained(tmp_path)
    torch.manual_seed(2)  # a different initialisation, fully overwritten by the weights
    loaded = OmnifuseModel.from_pretrained(tmp_path)
    batch = batch_of([*values[:2], None, values[2]])
    before, after = model(batch), loaded(batch)
    torch.testing.assert_close(before.outputs["y"], after.outputs["y"], rtol=0, atol=0)
    torch.testing.assert_close(before.tokens["m"].tokens, after.tokens["m"].tokens, rtol=0, atol=0)
    assert torch.isfinite(before.outputs["y"]).all()
