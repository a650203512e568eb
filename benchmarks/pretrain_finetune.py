"""Self-supervised pre-training on every sample, then fine-tuning on a few labels, against
training from scratch on those same few labels.

    python benchmarks/pretrain_finetune.py [--n 3000] [--fraction 0.05] [--seeds 0,1,2]
        [--pretrain-epochs 15] [--finetune-epochs 40] [--threads 2] [--out DIR]

On the generated world (--n samples), `world-pretrain.yaml` beside this script trains with no
label at all: contrastive alignment of image, caption and audio, and reconstruction of the
image's and the audio's embeddings from the other modalities. Then, for each seed, a scene
classifier (`world-finetune.yaml`: the same modalities and fusion) is trained on `--fraction`
of the training split, drawn with that seed (`data.train_fraction`), three ways: from all the
pre-trained weights (`train.init`), from the pre-trained encoders only (`train.init_parts`,
with a fresh fusion, decoder and head), and from scratch. All are evaluated on the full test
split. Prints one JSON object (also written to --out/results.json): test accuracy and
macro-F1 per seed and their means.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from omnifuse.config import load_config, parse_config
from omnifuse.train.run import prepare, run, train

HERE = Path(__file__).parent


def finetune(
    base: dict[str, Any],
    *,
    init: Path | None,
    parts: list[str] | None,
    fraction: float,
    seed: int,
    epochs: int,
) -> dict[str, float]:
    config = json.loads(json.dumps(base))
    config["data"]["train_fraction"] = fraction
    config["train"] |= {
        "seed": seed,
        "epochs": epochs,
        "init": None if init is None else str(init),
        "init_parts": parts,
    }
    prepared = prepare(parse_config(config), progress=False)
    trained = train(prepared, progress=False)
    scene = trained.metrics["scene"]
    return {
        "train_samples": len(prepared.splits["train"]),
        "accuracy": round(scene["accuracy"], 4),
        "macro_f1": round(scene["macro_f1"], 4),
        "train_seconds": round(trained.train_seconds, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=3000)
    parser.add_argument("--fraction", type=float, default=0.05)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--pretrain-epochs", type=int, default=15)
    parser.add_argument("--finetune-epochs", type=int, default=40)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    out = args.out or Path(tempfile.mkdtemp(prefix="pretrain-finetune-"))

    pretrain = load_config(HERE / "world-pretrain.yaml").model_dump(mode="json")
    pretrain["data"]["dataset"]["n"] = args.n
    pretrain["train"]["epochs"] = args.pretrain_epochs
    start = time.perf_counter()
    metrics = run(parse_config(pretrain), out / "pretrained", progress=True)
    pretrain_seconds = time.perf_counter() - start

    base = load_config(HERE / "world-finetune.yaml").model_dump(mode="json")
    base["data"]["dataset"]["n"] = args.n
    settings: dict[str, tuple[Path | None, list[str] | None]] = {
        "pretrained": (out / "pretrained", None),
        "pretrained_encoders": (out / "pretrained", ["encoders"]),
        "scratch": (None, None),
    }
    runs: dict[str, dict[str, Any]] = {name: {} for name in settings}
    for seed in (int(s) for s in args.seeds.split(",")):
        for name, (init, parts) in settings.items():
            runs[name][str(seed)] = finetune(
                base,
                init=init,
                parts=parts,
                fraction=args.fraction,
                seed=seed,
                epochs=args.finetune_epochs,
            )
            print(name, seed, runs[name][str(seed)], flush=True)
    results = {
        "fraction": args.fraction,
        "pretrain": {
            "epochs": args.pretrain_epochs,
            "seconds": round(pretrain_seconds, 1),
            "test": metrics["tasks"],
        },
        "finetune_epochs": args.finetune_epochs,
        "runs": runs,
        "mean": {
            name: {
                key: round(statistics.mean(r[key] for r in seeds.values()), 4)
                for key in ("accuracy", "macro_f1")
            }
            for name, seeds in runs.items()
        },
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
