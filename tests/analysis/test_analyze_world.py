"""The validation where the truth is known, on the generated world (slow: 3 minutes on one
thread, most of it training): `synergy` (pattern XOR hum) comes out synergistic and calls
for interactions, `scene` (independent per-modality factors) mostly redundant or unique and
late fusion. benchmarks/analyze_validation.py runs the same with the text too, and AV-MNIST."""

from __future__ import annotations

import pytest

from omnifuse.analysis.analyze import Settings, profile
from omnifuse.analysis.sources import train_encoders
from omnifuse.config import apply_overrides, parse_config, read_config_file


@pytest.mark.slow
def test_synergy_is_synergistic_and_scene_is_not():
    data = apply_overrides(read_config_file("preset:world-demo"), ["train.threads=1"])
    # the preset's `pattern` and `hum` tasks teach the encoders to see the pattern, hear the hum
    del data["modalities"]["text"], data["model"]["tasks"]["retrieval"]  # the slowest encoder
    config = parse_config(data)
    embedded = train_encoders(config, progress=False)
    synergy = profile(embedded, "synergy", Settings(resamples=50), progress=False)
    assert synergy.recommendation.family == "interaction"
    audio_image = next(p for p in synergy.pairs if p.modalities == ("audio", "image"))
    parts = audio_image.estimate.parts
    assert parts["synergy"].low > 0.4
    assert max(parts[k].high for k in ("redundancy", "unique1", "unique2")) < 0.05
    assert audio_image.gap.value > 0.3 and audio_image.gap.p_value <= 0.05
    scene = profile(embedded, "scene", Settings(resamples=50), progress=False)
    assert scene.recommendation.family == "late"
    for pair in scene.pairs:
        assert pair.estimate.share["synergy"] < 0.2
        assert pair.gap.value < 0.05 * scene.entropy
