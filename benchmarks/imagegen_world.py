"""Caption-to-image generation on the generated world, read back by a scene parser.

    python benchmarks/imagegen_world.py [--n 3000] [--epochs 5] [--guidance 2]
                                        [--size 64] [--stages 2] [--tokenizer-epochs 6]
                                        [--foreground-weight 10]
                                        [--out runs/imagegen-world] [--json FILE]
                                        [--sheet docs/images/imagegen-world.png]

A world of `n` scenes (docs/world.md; no missing cells) is read at `size` (64: as generated).
An FSQ tokenizer (image_tokenizer: `stages` halvings, a grid of size / 2**stages codes a side,
1000 codes, its loss weighted toward pixels away from the background colour by
`foreground_weight`) and an image_generation model conditioned on the caption alone are
trained through omnifuse's prepare/train. A scene parser (`SceneCNN`: one classifier per
attribute, the shape and the colour of the first, second and third object from the left, or
none) is trained on the real training images. On the test split it reads:

- the real test images (its own accuracy: the ceiling);
- the tokenizer's reconstructions of them (what the tokenizer keeps);

- images generated from each test caption (target: >= 0.8 of the ceiling);
- images generated from the test captions shuffled among the test samples (the floor: what
  matching the attribute distribution alone scores),

each against the attributes that the test sample's own caption names (objects the caption
names only; a "none" slot is not counted). Also writes a contact sheet: per row, a real test
image, then four images generated from its caption.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path

import torch
from imagegen_common import SceneCNN, accuracy, classify, fit_classifier, save, train_config

from omnifuse.data.world import COLOURS, SHAPES, generate_world
from omnifuse.eval.imagegen import condition_samples, contact_sheet, generate_images
from omnifuse.model import OmnifuseModel
from omnifuse.train.run import Prepared

OBJECT = re.compile(rf"(?:small|large) ({'|'.join(COLOURS)}) ({'|'.join(SHAPES)})")
SLOTS = 3


def attributes(caption: str) -> list[int]:
    """[shape, colour] per slot (1 + index, 0 for no object): 2 * SLOTS labels."""
    found = OBJECT.findall(caption)
    if "to the right of" in caption:  # "a {right} to the right of a {left}"
        found.reverse()
    labels = []
    for slot in range(SLOTS):
        if slot < len(found):
            colour, shape = found[slot]
            labels += [1 + SHAPES.index(shape), 1 + COLOURS.index(colour)]
        else:
            labels += [0, 0]
    return labels


def real(prepared: Prepared, split: str) -> tuple[torch.Tensor, list[str]]:
    """The split's images in [0, 1] (N, 3, S, S) and captions."""
    samples = prepared.splits[split]
    image = prepared.config.modalities["image"]
    mean = torch.tensor(image.mean).view(1, -1, 1, 1)  # type: ignore[attr-defined]
    std = torch.tensor(image.std).view(1, -1, 1, 1)  # type: ignore[attr-defined]
    images = torch.stack([s.inputs["image"] for s in samples]) * std + mean
    captions = [prepared.manifest.rows[i]["caption"] for i in prepared.rows[split]]
    return images.clamp(0, 1), captions


def scores(parser, images: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    predicted, _ = classify(parser, images)
    shape = [accuracy(predicted[2 * k], labels[:, 2 * k]) for k in range(SLOTS)]
    colour = [accuracy(predicted[2 * k + 1], labels[:, 2 * k + 1]) for k in range(SLOTS)]
    shapes = torch.cat([predicted[2 * k][labels[:, 2 * k] > 0] for k in range(SLOTS)])
    shape_truth = torch.cat([labels[:, 2 * k][labels[:, 2 * k] > 0] for k in range(SLOTS)])
    colours = torch.cat([predicted[2 * k + 1][labels[:, 2 * k + 1] > 0] for k in range(SLOTS)])
    colour_truth = torch.cat([labels[:, 2 * k + 1][labels[:, 2 * k + 1] > 0] for k in range(SLOTS)])
    return {
        "shape_accuracy": accuracy(shapes, shape_truth),
        "colour_accuracy": accuracy(colours, colour_truth),
        "first_object_shape_accuracy": shape[0],
        "first_object_colour_accuracy": colour[0],
    }


def configs(manifest: Path, tokenizer: Path | None, args: argparse.Namespace) -> dict:
    image = {"kind": "image", "size": args.size, "encoder": {"type": "image_conv", "width": 4}}
    epochs, threads = args.epochs, args.threads
    text = {
        "kind": "text",
        "column": "caption",
        "max_length": 96,
        "encoder": {"type": "text_transformer", "depth": 1},
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
                    "width": args.width,
                    "stages": args.stages,
                    "levels": [8, 5, 5, 5],
                    "foreground_weight": args.foreground_weight,
                }
            },
        },
        "train": {
            "epochs": args.tokenizer_epochs,
            "batch_size": 32,
            "lr": 3e-3,
            "seed": 0,
            "threads": threads,
        },
    }
    gen = common | {
        "modalities": {"image": image, "text": text},
        "model": {
            "dim": 96,
            "fusion": {"type": "early", "depth": 1},
            "tasks": {
                "picture": {
                    "type": "image_generation", "modality": "image", "tokenizer": str(tokenizer),
                    "depth": 3, "heads": 4, "steps": 8, "condition_dropout": 0.1,
                }
            },
        },
        "train": {"epochs": epochs, "batch_size": 64, "lr": 2e-3, "seed": 0, "threads": threads},
    }  # fmt: skip
    return {"tokenizer": tok, "generator": gen}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=3000)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--guidance", type=float, default=2.0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--stages", type=int, default=2)
    parser.add_argument("--width", type=int, default=8)
    parser.add_argument("--tokenizer-epochs", type=int, default=6)
    parser.add_argument("--foreground-weight", type=float, default=10.0)
    parser.add_argument("--out", type=Path, default=Path("runs/imagegen-world"))
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--sheet", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    manifest = args.out / "world" / "manifest.parquet"
    if not manifest.exists():
        manifest = generate_world(args.out / "world", n=args.n, seed=0, missing=0.0)
    result: dict = {"n": args.n} | {
        k: getattr(args, k)
        for k in ("size", "stages", "width", "tokenizer_epochs", "foreground_weight", "epochs")
    }

    tok_prepared, tokenizer, seconds = train_config(
        configs(manifest, None, args)["tokenizer"], "tokenizer"
    )
    result["tokenizer"] = tokenizer.metrics["tokenizer"] | {"seconds": seconds}
    tok_dir = save(tokenizer, args.out / "tokenizer")
    train_images, train_captions = real(tok_prepared, "train")
    test_images, test_captions = real(tok_prepared, "test")
    train_labels = torch.tensor([attributes(c) for c in train_captions])
    test_labels = torch.tensor([attributes(c) for c in test_captions])
    t = time.perf_counter()
    scene_parser = fit_classifier(
        train_images, train_labels, [4, 5] * SLOTS, epochs=20, build=SceneCNN, one_cycle=True
    )
    result["parser_seconds"] = time.perf_counter() - t
    result["real"] = scores(scene_parser, test_images, test_labels)
    with torch.no_grad():
        recon = tokenizer.model.task_dict()["tokenizer"].tokenizer(test_images).images
    result["reconstructed"] = scores(scene_parser, recon, test_labels)
    print("real", result["real"], "reconstructed", result["reconstructed"], flush=True)

    gen_config = configs(manifest, tok_dir, args)["generator"]
    _, generator, seconds = train_config(gen_config, "generator")
    result["generator"] = generator.metrics["picture"] | {"seconds": seconds}
    model = OmnifuseModel.from_pretrained(save(generator, args.out / "generator"))
    samples = [s for c in test_captions for s in condition_samples(model, {"caption": c}, 1)]
    t = time.perf_counter()
    images = generate_images(model, samples, guidance=args.guidance, seed=0)
    result["generation_seconds"] = time.perf_counter() - t
    result["generated"] = scores(scene_parser, images, test_labels)
    shuffled = torch.randperm(len(samples), generator=torch.Generator().manual_seed(0))
    floor = generate_images(model, [samples[i] for i in shuffled], guidance=args.guidance, seed=0)
    result["shuffled_captions"] = scores(scene_parser, floor, test_labels)
    result["generated_over_real"] = {
        k: result["generated"][k] / result["real"][k] for k in result["real"]
    }
    result["guidance"], result["seconds"] = args.guidance, time.perf_counter() - start
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    rows = range(6)
    sheet = []
    for k in rows:
        four = generate_images(
            model,
            condition_samples(model, {"caption": test_captions[k]}, 4),
            guidance=args.guidance,
            seed=k,
        )
        sheet += [test_images[k], *four]
    path = args.sheet or args.out / "contact_sheet.png"
    contact_sheet(torch.stack(sheet), path, columns=5, cell=64)
    (path.with_suffix(".txt")).write_text(
        "".join(f"row {k + 1}: {test_captions[k]}\n" for k in rows)
    )


if __name__ == "__main__":
    main()
