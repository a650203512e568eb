"""Encoding throughput (samples/s) of every from-scratch encoder at its default size.

    python benchmarks/encoder_throughput.py [--batch 64] [--dim 64] [--seconds 3] [--train]
        [--threads 2] [--encoders image_conv,text_transformer]

Each encoder is built by its modality kind's default config (image 64x64, text 128 tokens,
audio 1 s of 64 log-mel bands, 4 numeric + 4 categorical tabular columns, a 4-channel series
of 512 steps, video 8 frames of 64x64, a 384-d vector) and fed synthetic batches. Inference is
timed in eval mode without gradients; with --train, also a training forward and backward.
Each measurement repeats batches for at least --seconds after one warm-up batch. Prints a
Markdown table, then one JSON object.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable

import torch
from pydantic import BaseModel
from torch import Tensor, nn

from omnifuse.modalities.audio import AudioConfig
from omnifuse.modalities.image import ImageConfig
from omnifuse.modalities.tabular import TabularConfig
from omnifuse.modalities.text import TextConfig
from omnifuse.modalities.timeseries import TimeSeriesConfig
from omnifuse.modalities.vector import VectorConfig
from omnifuse.modalities.video import VideoConfig
from omnifuse.registry import ENCODERS, create_modality, list_encoders


def synthetic(kind: str, batch: int) -> tuple[BaseModel, Tensor, Tensor]:
    """A default config of `kind`, a batch of inputs and their lengths."""
    if kind == "image":
        return ImageConfig(), torch.randn(batch, 3, 64, 64), torch.full((batch,), 64)
    if kind == "text":
        ids = torch.randint(1, 257, (batch, 128))
        return TextConfig(), ids, torch.randint(16, 129, (batch,))
    if kind == "audio":
        config = AudioConfig()
        frames = int(config.sample_rate * config.max_seconds) // config.hop + 1
        return config, torch.randn(batch, config.n_mels, frames), torch.full((batch,), frames)
    if kind == "tabular":
        columns = [f"n{i}" for i in range(4)], [f"c{i}" for i in range(4)]
        config = TabularConfig(
            numeric=columns[0],
            categorical=columns[1],
            categories={c: [str(v) for v in range(5)] for c in columns[1]},
        )
        x = torch.cat([torch.randn(batch, 4), torch.randint(0, 7, (batch, 4)).float()], dim=1)
        return config, x, torch.full((batch,), 8)
    if kind == "timeseries":
        x = torch.randn(batch, 4, 512)
        return TimeSeriesConfig(channels=4), x, torch.randint(128, 513, (batch,))
    if kind == "video":
        return VideoConfig(), torch.randn(batch, 3, 8, 64, 64), torch.full((batch,), 64)
    if kind == "vector":
        return VectorConfig(dim=384), torch.randn(batch, 384), torch.full((batch,), 384)
    raise SystemExit(f"no synthetic input for kind '{kind}'")


def rate(step: Callable[[], None], batch: int, seconds: float) -> float:
    """Samples per second of `step`, over at least `seconds` after one warm-up call."""
    step()
    done, start = 0, time.perf_counter()
    while done < 2 or time.perf_counter() - start < seconds:
        step()
        done += 1
    return done * batch / (time.perf_counter() - start)


def measure(name: str, args: argparse.Namespace) -> dict[str, float | int | str]:
    (kind,) = ENCODERS.info(name)["kinds"]
    config, x, lengths = synthetic(kind, args.batch)
    config = type(config).model_validate({**config.model_dump(), "encoder": {"type": name}})
    encoder: nn.Module = create_modality(kind, config).build_encoder(args.dim)  # type: ignore[arg-type]

    def infer() -> None:
        with torch.no_grad():
            encoder(x, lengths)

    def train() -> None:
        out = encoder(x, lengths)
        (out.tokens * out.mask[..., None]).mean().backward()

    encoder.eval()
    tokens = encoder(x[:1], lengths[:1]).tokens.shape[1]
    row: dict[str, float | int | str] = {
        "encoder": name,
        "parameters": sum(p.numel() for p in encoder.parameters()),
        "tokens": tokens,
        "infer_samples_per_s": round(rate(infer, args.batch, args.seconds), 1),
    }
    if args.train:
        encoder.train()
        row["train_samples_per_s"] = round(rate(train, args.batch, args.seconds), 1)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--train", action="store_true")
    parser.add_argument("--encoders", default="", help="comma-separated; default: all")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    scratch = [
        n
        for n in list_encoders()
        if ENCODERS.builder(n).__module__.startswith("omnifuse.modalities")
    ]
    names = args.encoders.split(",") if args.encoders else scratch
    unknown = sorted(set(names) - set(scratch))
    if unknown:
        raise SystemExit(f"not a from-scratch encoder: {', '.join(unknown)}")
    rows = [measure(name, args) for name in names]

    columns = ["encoder", "parameters", "tokens", "infer_samples_per_s"]
    columns += ["train_samples_per_s"] if args.train else []
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for row in rows:
        print("| " + " | ".join(str(row[c]) for c in columns) + " |")
    settings = {k: getattr(args, k) for k in ("batch", "dim", "seconds", "threads", "train")}
    print(json.dumps({"settings": settings, "encoders": rows}, indent=2))


if __name__ == "__main__":
    main()
