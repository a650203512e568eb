"""`omnifuse analyze` where the truth is known: the generated world (`synergy` = pattern XOR
hum, `scene_class` from independent per-modality factors) and AV-MNIST (image and audio
independent given the digit, where late fusion is as good as anything: docs/benchmarks.md).

World: preset world-demo, whose auxiliary tasks `pattern` and `hum` (classification of the
world's latent columns) teach the image encoder to see the pattern and the audio encoder to
hear the hum (without them, `--no-aux`, the encoders learn the two features late and
unreliably). The four unimodal models are trained
once; `synergy` and `scene` are then both profiled from the same embeddings. AV-MNIST:
`bench_config("avmnist")` on the benchmark's subset (6,000 training images, 1,000 test).

    PYTHONPATH=src python benchmarks/analyze_validation.py --threads 1 --out /tmp/analyze
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from omnifuse.analysis.analyze import Analysis, Settings, profile
from omnifuse.analysis.report import write_analysis
from omnifuse.analysis.sources import train_encoders
from omnifuse.bench import bench_config
from omnifuse.config import apply_overrides, parse_config, read_config_file


def show(name: str, analysis: Analysis, seconds: float) -> None:
    result = analysis.as_dict()
    print(f"\n== {name}: target {result['target']['task']}, H = {result['target']['entropy']:.3f}")
    for pair in result["pairs"]:
        first, second = pair["modalities"]
        cells = {
            "R": pair["redundancy"],
            f"U({first})": pair["unique"][first],
            f"U({second})": pair["unique"][second],
            "S": pair["synergy"],
            "I": pair["total"],
        }
        text = "  ".join(
            f"{k} {v['value']:.3f} [{v['low']:.3f}, {v['high']:.3f}]" for k, v in cells.items()
        )
        gap = pair["late_fusion_gap"]
        tested = f"gap {gap['value']:.3f} p={gap['p_value']:.3f}"
        print(f"  {first}+{second} (n={pair['samples']}): {text}  {tested}")
    recommendation = result["recommendation"]
    print(f"  -> {recommendation['family']} {recommendation['fusions']} ({seconds:.1f} s)")
    print(f"  {recommendation['why']}")


def run(name: str, config, targets: list[str], args: argparse.Namespace) -> None:
    start = time.perf_counter()
    embedded = train_encoders(config, progress=False)
    trained = time.perf_counter() - start
    print(f"\n{name}: trained and embedded in {trained:.1f} s")
    for target in targets:
        begin = time.perf_counter()
        settings = Settings(clusters=args.clusters, resamples=args.resamples)
        analysis = profile(embedded, target, settings, progress=False)
        seconds = time.perf_counter() - begin
        write_analysis(analysis.as_dict(), args.out / f"{name}-{target}")
        show(name, analysis, seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--clusters", type=int, default=12)
    parser.add_argument("--resamples", type=int, default=100)
    parser.add_argument("--out", type=Path, default=Path("/tmp/analyze-validation"))
    parser.add_argument("--datasets", default="world,avmnist")
    parser.add_argument(
        "--no-aux", action="store_true", help="The world without pattern/hum tasks."
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    threads = f"train.threads={args.threads}"
    datasets = args.datasets.split(",")
    if "world" in datasets:
        data = apply_overrides(read_config_file("preset:world-demo"), [threads])
        if args.no_aux:
            del data["model"]["tasks"]["pattern"], data["model"]["tasks"]["hum"]
        world = parse_config(data, "world")
        run("world" + ("-plain" if args.no_aux else ""), world, ["synergy", "scene"], args)
    if "avmnist" in datasets:
        sizes = ["data.dataset.train_size=6000", "data.dataset.test_size=1000"]
        run("avmnist", bench_config("avmnist", [threads, *sizes]), ["digit"], args)


if __name__ == "__main__":
    main()
