"""The new kinds end to end: a manifest of series, videos, vectors and BPE text, prepared,
trained for one epoch, saved and reloaded."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from omnifuse.config import parse_config
from omnifuse.model import OmnifuseModel
from omnifuse.train.run import prepare, train


def write_manifest(folder: Path, n: int = 16) -> Path:
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        np.save(folder / f"clip{i}.npy", rng.integers(0, 255, (3 + i % 3, 8, 8, 3), np.uint8))
        series = rng.normal(size=(5 + 3 * i, 2))
        series[1, 0] = np.nan  # a gap
        rows.append(
            {
                "id": f"{i:02d}",
                "series": series.tolist() if i % 5 else None,  # every fifth is absent
                "clip": f"clip{i}.npy",
                "emb": rng.normal(size=4).tolist(),
                "text": ["a red thing", "a blue thing", ""][i % 3],
                "y": "ab"[i % 2],
                "split": "val" if i >= 12 else "train",
            }
        )
    manifest = folder / "m.jsonl"
    manifest.write_text("".join(json.dumps(r).replace("NaN", "null") + "\n" for r in rows))
    return manifest


def test_new_kinds_prepare_train_save_and_reload(tmp_path: Path):
    config = parse_config(
        {
            "data": {"manifest": str(write_manifest(tmp_path))},
            "modalities": {
                "series": {
                    "kind": "timeseries",
                    "max_length": 32,
                    "encoder": {"type": "timeseries_patch", "patch": 4, "depth": 1},
                },
                "clip": {
                    "kind": "video",
                    "frames": 2,
                    "size": 8,
                    "encoder": {"type": "video_tubelet", "patch": 4, "depth": 1},
                },
                "emb": {
                    "kind": "vector",
                    "dim": 4,
                    "encoder": {"type": "vector_projection", "tokens": 2},
                },
                "text": {
                    "kind": "text",
                    "tokenizer": "bpe",
                    "vocab_size": 270,
                    "max_length": 8,
                    "encoder": {"type": "text_transformer", "depth": 1},
                },
            },
            "model": {
                "dim": 8,
                "fusion": {"type": "perceiver", "latents": 2, "depth": 1},
                "tasks": {"y": {"type": "classification", "target": "y"}},
            },
            "train": {"epochs": 1, "batch_size": 4},
        }
    )
    prepared = prepare(config, progress=False)
    fitted = prepared.config.modalities
    assert fitted["series"].channels == 2 and len(fitted["series"].mean) == 2
    assert fitted["text"].merges and len(fitted["clip"].std) == 3
    assert prepared.notes["series"] == {
        "series": 12,
        "truncated": 4,
        "message": "series: 4 of 12 series truncated to 32 steps",
    }
    trained = train(prepared, progress=False)
    assert all(np.isfinite(v) for m in trained.metrics.values() for v in m.values())
    trained.model.save_pretrained(tmp_path / "model")
    loaded = OmnifuseModel.from_pretrained(tmp_path / "model")
    batch = prepared.collate(prepared.splits["val"])
    assert batch.inputs["clip"].shape == (4, 3, 2, 8, 8)
    expected = trained.model.eval()(batch).outputs["y"]
    torch.testing.assert_close(loaded(batch).outputs["y"], expected, rtol=0, atol=0)
