"""Self-supervised pre-training on every sample, then fine-tuning on a few labels, against
training from scratch on those same few labels.

    python benchmarks/pretrain_finetune.py [--n 3000] [--fraction 0.05] [--seeds 0,1,2]
        [--pretrain-epochs 15] [--finetune-epochs 40] [--threads 2] [--out DIR]

On the generated world (--n samples), `world-pretrain.yaml` beside this script trains with no
label at all: contrastive alignment of image, caption and audio, and masked reconstruction of
the image's and the audio's embeddings. Then two classifiers are fine-tuned, each on
`--fraction` of the training split drawn with the seed (`data.train_fraction`):

- `answer` (`world-finetune-qa.yaml`): the one-word answer from the image and the question,
  which the `text` modality reads, so the caption encoder starts it;
- `scene` (`world-finetune.yaml`): the scene class from image, caption, audio and tabular.

Each three ways: from every pre-trained weight that matches (`train.init`), from the
pre-trained encoders only (`train.init_parts: [encoders]`, with a fresh fusion, decoder and
head), and from scratch, all evaluated on the full test split. Prints one JSON object (also
written to --out/results.json): test accuracy and macro-F1 per target, setting and seed, and
their means and standard deviations.
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
TARGETS = {"answer": "world-finetune-qa.yaml", "scene": "world-finetune.yaml"}


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
    (metrics,) = trained.metrics.values()  # the config's one task
    return {
        "train_samples": len(prepared.splits["train"]),
        "accuracy": round(metrics["accuracy"], 4),
        "macro_f1": round(metrics["macro_f1"], 4),
        "train_seconds": round(trained.train_seconds, 1),
    }


def summary(seeds: dict[str, dict[str, float]]) -> dict[str, float]:
    out = {}
    for key in ("accuracy", "macro_f1"):
        values = [r[key] for r in seeds.values()]
        out[key] = round(statistics.mean(values), 4)
        out[f"{key}_std"] = round(statistics.stdev(values), 4) if len(values) > 1 else 0.0
    return out


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
    pretrained = out / "pretrained"

    if not (pretrained / "model.safetensors").is_file():  # reuse an earlier pre-training
        config = load_config(HERE / "world-pretrain.yaml").model_dump(mode="json")
        config["data"]["dataset"]["n"] = args.n
        config["train"]["epochs"] = args.pretrain_epochs
        start = time.perf_counter()
        run(parse_config(config), pretrained, progress=True)
        print(f"pre-trained in {time.perf_counter() - start:.1f} s", flush=True)
    pretrain_metrics = json.loads((pretrained / "metrics.json").read_text())

    settings: dict[str, tuple[Path | None, list[str] | None]] = {
        "pretrained": (pretrained, None),
        "pretrained_encoders": (pretrained, ["encoders"]),
        "scratch": (None, None),
    }
    runs: dict[str, dict[str, dict[str, Any]]] = {}
    for target, file in TARGETS.items():
        base = load_config(HERE / file).model_dump(mode="json")
        base["data"]["dataset"]["n"] = args.n
        runs[target] = {name: {} for name in settings}
        for seed in (int(s) for s in args.seeds.split(",")):
            for name, (init, parts) in settings.items():
                result = finetune(
                    base,
                    init=init,
                    parts=parts,
                    fraction=args.fraction,
                    seed=seed,
                    epochs=args.finetune_epochs,
                )
                runs[target][name][str(seed)] = result
                print(target, name, seed, result, flush=True)
    results = {
        "fraction": args.fraction,
        "pretrain": {"epochs": args.pretrain_epochs, "test": pretrain_metrics["tasks"]},
        "finetune_epochs": args.finetune_epochs,
        "runs": runs,
        "mean": {
            target: {name: summary(seeds) for name, seeds in settings_runs.items()}
            for target, settings_runs in runs.items()
        },
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results["mean"], indent=2))


if __name__ == "__main__":
    main()
