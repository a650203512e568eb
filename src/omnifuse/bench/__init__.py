"""The fusion benchmark: `omnifuse bench`, over the library API `run_bench`."""

from omnifuse.bench.runner import DATASETS, bench_config, run_bench

__all__ = ["DATASETS", "bench_config", "run_bench"]
