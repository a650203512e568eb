"""The demo shows fusion working: preset world-demo learns its `synergy` task (pattern XOR
hum: the pattern only in the image, the hum only in the audio, so every single modality is at
chance) on the default seed and two others, its auxiliary `pattern` and `hum` tasks teaching
the encoders the two features, the Perceiver's balanced cross-attention reading the table's
venue for `scene`. Slow: a few minutes per seed on 2 CPU cores
(`pytest -m slow tests/train/test_demo_learns.py`)."""

from __future__ import annotations

import pytest

from omnifuse.config import load_config
from omnifuse.train.run import prepare, train


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_demo_learns_synergy(seed: int):
    # what `omnifuse demo --seed SEED` trains, without the single-modality baselines
    config = load_config("preset:world-demo", [f"data.dataset.seed={seed}", f"train.seed={seed}"])
    trained = train(prepare(config, progress=False), progress=False)
    assert trained.metrics["synergy"]["accuracy"] >= 0.9
    assert trained.metrics["scene"]["accuracy"] >= 0.8
    assert min(trained.metrics[t]["accuracy"] for t in ("pattern", "hum")) >= 0.9
