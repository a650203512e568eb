"""The robustness protocol: perturbations on collated batches, and the two scores on curves
computed by hand."""

from __future__ import annotations

import pytest
import torch

from omnifuse.eval.robustness import (
    LEVELS,
    effective_robustness,
    perturbations,
    relative_robustness,
)
from omnifuse.interfaces import Batch
from omnifuse.modalities.audio import AudioConfig
from omnifuse.modalities.image import ImageConfig
from omnifuse.modalities.perturbations import frame_dropout, gaussian_noise, missing, occlusion
from omnifuse.modalities.text import TextConfig
from omnifuse.registry import create_modality


def make_batch() -> Batch:
    """4 samples: image (3, 20, 20), audio log-mel (8, 50) with lengths 50/30/50/0 (absent in
    the last), a tabular vector; the image is absent in sample 2."""
    g = torch.Generator().manual_seed(0)
    audio = torch.randn(4, 8, 50, generator=g)
    audio[1, :, 30:] = 0
    audio[3] = 0
    image = torch.randn(4, 3, 20, 20, generator=g)
    image[2] = 0
    return Batch(
        ids=["a", "b", "c", "d"],
        inputs={"audio": audio, "image": image, "tabular": torch.randn(4, 3, generator=g)},
        lengths={
            "audio": torch.tensor([50, 30, 50, 0]),
            "image": torch.tensor([20, 20, 0, 20]),
            "tabular": torch.tensor([3, 3, 3, 3]),
        },
        present={
            "audio": torch.tensor([True, True, True, False]),
            "image": torch.tensor([True, True, False, True]),
            "tabular": torch.tensor([True, True, True, True]),
        },
        targets={},
        labelled={},
    )


CASES = [
    ("image", gaussian_noise),
    ("image", occlusion),
    ("audio", gaussian_noise),
    ("audio", frame_dropout),
    ("audio", missing),
    ("image", missing),
]


@pytest.mark.parametrize(("modality", "perturb"), CASES)
def test_level_zero_is_the_identity(modality, perturb):
    batch = make_batch()
    out = perturb(batch, modality, 0.0, torch.Generator().manual_seed(1))
    for name in batch.inputs:
        assert torch.equal(out.inputs[name], batch.inputs[name])
        assert torch.equal(out.present[name], batch.present[name])
        assert torch.equal(out.lengths[name], batch.lengths[name])


@pytest.mark.parametrize(("modality", "perturb"), CASES)
def test_only_the_named_modality_changes(modality, perturb):
    batch = make_batch()
    before = {name: x.clone() for name, x in batch.inputs.items()}
    out = perturb(batch, modality, 0.5, torch.Generator().manual_seed(1))
    assert not torch.equal(out.inputs[modality], batch.inputs[modality])
    for name in batch.inputs:
        assert torch.equal(batch.inputs[name], before[name])  # the input batch is untouched
        if name != modality:
            assert torch.equal(out.inputs[name], batch.inputs[name])
            assert torch.equal(out.present[name], batch.present[name])


@pytest.mark.parametrize(("modality", "perturb"), CASES[:4])
def test_padding_and_absent_samples_are_untouched(modality, perturb):
    batch = make_batch()
    out = perturb(batch, modality, 0.9, torch.Generator().manual_seed(2))
    absent = ~batch.present[modality]
    assert torch.equal(out.inputs[modality][absent], batch.inputs[modality][absent])
    if modality == "audio":
        assert torch.equal(out.inputs["audio"][1, :, 30:], torch.zeros(8, 20))


@pytest.mark.parametrize(("modality", "perturb"), CASES)
def test_same_generator_seed_same_result(modality, perturb):
    batch = make_batch()
    first = perturb(batch, modality, 0.3, torch.Generator().manual_seed(7))
    second = perturb(batch, modality, 0.3, torch.Generator().manual_seed(7))
    assert torch.equal(first.inputs[modality], second.inputs[modality])


def test_gaussian_noise_scales_with_the_sample_std():
    batch = make_batch()
    batch.inputs["image"][0] *= 10  # sample 0 has std ~10, sample 1 ~1
    out = gaussian_noise(batch, "image", 0.5, torch.Generator().manual_seed(3))
    added = out.inputs["image"] - batch.inputs["image"]
    for i in (0, 1):
        expected = 0.5 * batch.inputs["image"][i].std()
        assert added[i].std() == pytest.approx(expected.item(), rel=0.1)


@pytest.mark.parametrize("level", [0.1, 0.25, 0.5, 1.0])
def test_occlusion_covers_the_asked_fraction(level):
    batch = make_batch()
    batch.inputs["image"] += 100  # no pixel is 0 before occlusion
    out = occlusion(batch, "image", level, torch.Generator().manual_seed(4))
    zero = (out.inputs["image"] == 0).all(1)  # (B, H, W): every channel zeroed
    for i in (0, 1, 3):
        side = round(level**0.5 * 20)
        assert zero[i].sum().item() == side * side
        assert zero[i].float().mean().item() == pytest.approx(level, abs=0.03)
    assert torch.equal(out.inputs["image"][2], batch.inputs["image"][2])  # absent


def test_frame_dropout_rate_within_tolerance():
    batch = make_batch()
    batch.inputs["audio"] = torch.randn(4, 8, 50).abs() + 1
    batch.lengths["audio"] = torch.tensor([50, 50, 50, 50])
    batch.present["audio"] = torch.ones(4, dtype=torch.bool)
    rates = []
    for seed in range(20):
        out = frame_dropout(batch, "audio", 0.3, torch.Generator().manual_seed(seed))
        dropped = (out.inputs["audio"] == 0).all(1)  # (B, frames): a whole frame zeroed
        assert torch.equal(dropped, (out.inputs["audio"] == 0).any(1))  # never part of one
        rates.append(dropped.float().mean().item())
    assert sum(rates) / len(rates) == pytest.approx(0.3, abs=0.03)


def test_frame_dropout_drops_whole_frames_of_a_waveform():
    batch = make_batch()
    wave = torch.randn(4, 40).abs() + 1
    batch.inputs["audio"] = wave
    out = frame_dropout(batch, "audio", 0.5, torch.Generator().manual_seed(0), frame=10)
    zero = (out.inputs["audio"] == 0).reshape(4, 4, 10)
    assert torch.equal(zero.all(-1), zero.any(-1))


def test_missing_sets_present_false_in_every_sample_but_never_empties_one():
    batch = make_batch()
    batch.present["tabular"] = torch.tensor([True, True, True, False])
    # sample 3: image only (audio absent, tabular absent) -> keeps its image
    out = missing(batch, "image", 1.0, torch.Generator().manual_seed(0))
    assert out.present["image"].tolist() == [False, False, False, True]
    assert out.lengths["image"].tolist() == [0, 0, 0, 20]
    assert (out.inputs["image"][:3] == 0).all()
    anything = torch.stack(list(out.present.values())).any(0)
    assert anything.all()


def test_missing_at_a_level_drops_about_that_fraction():
    big = Batch(
        ids=[str(i) for i in range(2000)],
        inputs={"a": torch.ones(2000, 2), "b": torch.ones(2000, 2)},
        lengths={"a": torch.full((2000,), 2), "b": torch.full((2000,), 2)},
        present={"a": torch.ones(2000, dtype=torch.bool), "b": torch.ones(2000, dtype=torch.bool)},
        targets={},
        labelled={},
    )
    out = missing(big, "a", 0.3, torch.Generator().manual_seed(0))
    assert (~out.present["a"]).float().mean().item() == pytest.approx(0.3, abs=0.03)
    assert out.present["b"].all()


def test_perturbations_by_kind():
    image = create_modality("image", ImageConfig())
    assert set(perturbations(image)) == {"gaussian", "occlusion", "missing"}
    assert set(perturbations(create_modality("a", AudioConfig()))) == {
        "noise",
        "dropout",
        "missing",
    }
    assert set(perturbations(create_modality("t", TextConfig()))) == {"missing"}
    # a modality read as one kind can be perturbed as another (AV-MNIST's spectrogram images)
    assert set(perturbations(image, "audio")) == {"noise", "dropout", "missing"}
    waveform = create_modality("a", AudioConfig(features="waveform", hop=160))
    assert perturbations(waveform)["dropout"].keywords == {"frame": 160}
    assert LEVELS == (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)


def test_relative_robustness_by_hand():
    # 0.5 * (0.9 + 0.8) / 2 + 0.5 * (0.8 + 0.6) / 2 = 0.425 + 0.35
    assert relative_robustness([0, 0.5, 1], [0.9, 0.8, 0.6]) == pytest.approx(0.775)
    # levels are normalised by the largest: the same curve over [0, 0.5]
    assert relative_robustness([0, 0.25, 0.5], [0.9, 0.8, 0.6]) == pytest.approx(0.775)
    # a flat curve's area is its value
    assert relative_robustness([0, *LEVELS], [0.7] * 11) == pytest.approx(0.7)


def test_effective_robustness_by_hand():
    levels = [0, 0.5, 1]
    model, late = [0.9, 0.8, 0.6], [0.8, 0.6, 0.5]
    # late shifted to the model's clean accuracy: [0.9, 0.7, 0.6]; gaps [0, 0.1, 0]
    # area: 0.5 * (0 + 0.1) / 2 + 0.5 * (0.1 + 0) / 2 = 0.05
    assert effective_robustness(levels, model, late) == pytest.approx(0.05)
    # = R(model) - R(late) - (model(0) - late(0)) = 0.775 - 0.625 - 0.1
    assert relative_robustness(levels, late) == pytest.approx(0.625)
    assert effective_robustness(levels, late, late) == 0
    # a model that loses accuracy faster than late fusion: negative
    assert effective_robustness(levels, [0.9, 0.5, 0.3], late) == pytest.approx(-0.175)


def test_scores_reject_mismatched_curves():
    with pytest.raises(ValueError):
        relative_robustness([0, 1], [0.5])
    with pytest.raises(ValueError):
        effective_robustness([0, 1], [0.5, 0.4], [0.5])


def test_sweep_matches_a_plain_evaluation_and_restores_the_encoders(world):
    from omnifuse.config import parse_config
    from omnifuse.eval.evaluate import evaluate
    from omnifuse.eval.robustness import sweep
    from omnifuse.train.run import prepare, train
    from tests.conftest import tiny_config

    data = tiny_config(world, epochs=1)
    data["modalities"] = {k: data["modalities"][k] for k in ("image", "tabular")}
    data["model"]["tasks"] = {"scene": data["model"]["tasks"]["scene"]}
    prepared = prepare(parse_config(data), progress=False)
    model = train(prepared, progress=False).model
    encoders = dict(model.encoders.items())
    samples = prepared.splits["test"]
    curves = sweep(model, samples, prepared.collate, "scene", levels=(0.5, 1.0), batch_size=8)
    assert dict(model.encoders.items()) == encoders
    assert (
        curves["image"]["gaussian"][0]
        == evaluate(model, samples, prepared.collate)["scene"]["accuracy"]
    )
    # the memoised encoders give what a plain forward of the same perturbed batches gives:
    # curve 3 is (tabular, missing), level index 1 is 1.0
    batches = [prepared.collate(samples[i : i + 8]) for i in range(0, len(samples), 8)]
    generator = torch.Generator().manual_seed(3 * 1_009 + 1)
    noisy = [missing(b, "tabular", 1.0, generator) for b in batches]
    predictions = torch.cat([model(b).outputs["scene"] for b in noisy]).argmax(-1)
    targets = torch.cat([b.targets["scene"] for b in noisy])
    expected = (predictions == targets).float().mean().item()
    assert curves["tabular"]["missing"][-1] == pytest.approx(expected)
    # an image-kind modality perturbed as audio (AV-MNIST's spectrograms) gets audio's curves
    as_audio = sweep(
        model, samples, prepared.collate, "scene", levels=(1.0,), perturb_as={"image": "audio"}
    )
    assert sorted(as_audio["image"]) == ["dropout", "missing", "noise"]
    assert as_audio["image"]["noise"][0] == curves["image"]["gaussian"][0]  # the clean value
