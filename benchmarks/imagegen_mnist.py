"""Class-conditional image generation on MNIST, measured where the truth is known.

    python benchmarks/imagegen_mnist.py [--train 6000] [--epochs 10] [--guidance 1,2,3]
                                        [--out runs/imagegen-mnist] [--json FILE]

Plain MNIST digits (from /work/shared/data/mnist, or --mnist) are written as 28x28 PNGs
with a `label` column. Three models, each trained through omnifuse's own prepare/train:
an FSQ tokenizer (image_tokenizer: a 7x7 grid of 125 codes), and an image_generation model
whose only condition is the label (a tabular categorical column), trained on the tokenizer's
codes with masked-token training. Then 100 digits per class are generated from the label
alone, and read by a separate small CNN trained on 20000 real training digits (2 epochs):

- digit accuracy: the share of generated digits that the CNN reads as their label (target
  >= 0.9), beside the CNN's accuracy on real test digits (its ceiling) and on the
  tokenizer's reconstructions of them;
- a Fréchet distance on that CNN's 64-d features (FID-like; *not* Inception features, so it
  is comparable only within this benchmark) of the generated digits against real test
  digits, beside the same distance for real training digits (the floor) and for
  reconstructions.
"""

from __future__ import annotations

import argparse
import gzip
import json
import time
from pathlib import Path

import numpy as np
import torch
from imagegen_common import accuracy, classify, fit_classifier, frechet_distance, save, train_config
from PIL import Image

from omnifuse.eval.imagegen import condition_samples, contact_sheet, generate_images
from omnifuse.model import OmnifuseModel

MNIST = Path("/work/shared/data/mnist")


def idx(path: Path) -> np.ndarray:
    with gzip.open(path) as file:
        data = file.read()
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data, np.uint8, offset=4 + 4 * dims).reshape(shape)


def write_mnist(mnist: Path, out: Path, n_train: int, n_test: int) -> tuple[Path, dict]:
    """PNGs and manifest.jsonl (id, split, image, label); 10% of the training rows are val.
    Also returns the arrays: {split: (images (N, 1, 28, 28) in [0, 1], labels (N,))}."""
    train_x, train_y = (
        idx(mnist / "train-images-idx3-ubyte.gz"),
        idx(mnist / "train-labels-idx1-ubyte.gz"),
    )
    test_x, test_y = (
        idx(mnist / "t10k-images-idx3-ubyte.gz"),
        idx(mnist / "t10k-labels-idx1-ubyte.gz"),
    )
    parts = {
        "train": (train_x[: int(n_train * 0.9)], train_y[: int(n_train * 0.9)]),
        "val": (train_x[int(n_train * 0.9) : n_train], train_y[int(n_train * 0.9) : n_train]),
        "test": (test_x[:n_test], test_y[:n_test]),
    }
    manifest = out / "manifest.jsonl"
    if not manifest.exists():
        (out / "images").mkdir(parents=True, exist_ok=True)
        rows = []
        for split, (xs, ys) in parts.items():
            for i, (x, y) in enumerate(zip(xs, ys, strict=True)):
                name = f"images/{split}-{i:05d}.png"
                Image.fromarray(x).save(out / name)
                rows.append({"id": f"{split}-{i}", "split": split, "image": name, "label": str(y)})
        manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    arrays = {
        s: (torch.from_numpy(x.copy()).float()[:, None] / 255, torch.from_numpy(y.astype(np.int64)))
        for s, (x, y) in parts.items()
    }
    return manifest, arrays


def classifier_digits(mnist: Path, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The first `n` MNIST training digits and labels, for the separate classifier."""
    images = idx(mnist / "train-images-idx3-ubyte.gz")[:n]
    return images, idx(mnist / "train-labels-idx1-ubyte.gz")[:n].astype(np.int64)


def configs(manifest: Path, tokenizer: Path | None, epochs: int, threads: int) -> dict:
    image = {
        "kind": "image",
        "size": 28,
        "channels": 1,
        "encoder": {"type": "image_conv", "width": 4, "stages": 2},
    }
    common = {"data": {"manifest": str(manifest)}}
    tok = common | {
        "modalities": {"image": image},
        "model": {
            "dim": 16,
            "fusion": {"type": "unimodal", "modality": "image"},
            "tasks": {
                "tokenizer": {
                    "type": "image_tokenizer",
                    "modality": "image",
                    "width": 16,
                    "stages": 2,
                    "levels": [5, 5, 5],
                }
            },
        },
        "train": {"epochs": 3, "batch_size": 64, "lr": 3e-3, "seed": 0, "threads": threads},
    }
    gen = common | {
        "modalities": {"image": image, "digit": {"kind": "tabular", "categorical": ["label"]}},
        "model": {
            "dim": 96,
            "fusion": {"type": "early", "depth": 1},
            "tasks": {
                "picture": {
                    "type": "image_generation",
                    "modality": "image",
                    "tokenizer": str(tokenizer),
                    "depth": 3,
                    "heads": 4,
                    "steps": 8,
                    "condition_dropout": 0.1,
                }
            },
        },
        "train": {"epochs": epochs, "batch_size": 64, "lr": 2e-3, "seed": 0, "threads": threads},
    }
    return {"tokenizer": tok, "generator": gen}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mnist", type=Path, default=MNIST)
    parser.add_argument("--train", type=int, default=6000)
    parser.add_argument("--test", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--per-class", type=int, default=100)
    parser.add_argument("--guidance", default="1,2,3")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("runs/imagegen-mnist"))
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    manifest, arrays = write_mnist(args.mnist, args.out / "data", args.train, args.test)
    result: dict = {"train_images": len(arrays["train"][0]), "test_images": len(arrays["test"][0])}

    t = time.perf_counter()
    digits, labels = (torch.from_numpy(a.copy()) for a in classifier_digits(args.mnist, 20000))
    classifier = fit_classifier(
        digits.float()[:, None] / 255, labels.long()[:, None], [10], epochs=2
    )
    result["classifier_seconds"] = time.perf_counter() - t
    (real_pred,), real_features = classify(classifier, arrays["test"][0])
    (_,), train_features = classify(classifier, arrays["train"][0][: args.test])
    result["classifier_accuracy_real_test"] = accuracy(real_pred, arrays["test"][1])
    result["fid_small_cnn_real_train_vs_test"] = frechet_distance(train_features, real_features)

    tok_config = configs(manifest, None, args.epochs, args.threads)["tokenizer"]
    _, tokenizer, seconds = train_config(tok_config, "tokenizer")
    result["tokenizer"] = tokenizer.metrics["tokenizer"] | {"seconds": seconds}
    tok_dir = save(tokenizer, args.out / "tokenizer")
    task = tokenizer.model.task_dict()["tokenizer"]
    with torch.no_grad():
        recon = task.tokenizer(arrays["test"][0]).images
    (recon_pred,), recon_features = classify(classifier, recon)
    result["classifier_accuracy_reconstructed_test"] = accuracy(recon_pred, arrays["test"][1])
    result["fid_small_cnn_reconstructed_vs_test"] = frechet_distance(recon_features, real_features)

    gen_config = configs(manifest, tok_dir, args.epochs, args.threads)["generator"]
    _, generator, seconds = train_config(gen_config, "generator")
    result["generator"] = generator.metrics["picture"] | {"seconds": seconds}
    gen_dir = save(generator, args.out / "generator")
    model = OmnifuseModel.from_pretrained(gen_dir)
    labels = torch.arange(10).repeat_interleave(args.per_class)
    samples = [
        s for d in range(10) for s in condition_samples(model, {"label": str(d)}, args.per_class)
    ]
    result["guidance"] = {}
    for guidance in [float(g) for g in args.guidance.split(",")]:
        t = time.perf_counter()
        images = generate_images(model, samples, guidance=guidance, seed=0)
        seconds = time.perf_counter() - t
        (pred,), features = classify(classifier, images)
        result["guidance"][str(guidance)] = {
            "digit_accuracy": accuracy(pred, labels),
            "fid_small_cnn_vs_real_test": frechet_distance(features, real_features),
            "generation_seconds": seconds,
            "images": len(images),
        }
        print(guidance, result["guidance"][str(guidance)], flush=True)
        sheet = torch.stack([images[d * args.per_class + k] for k in range(8) for d in range(10)])
        contact_sheet(sheet, args.out / f"mnist-guidance-{guidance:g}.png", columns=10, cell=28)
    result["seconds"] = time.perf_counter() - start
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
