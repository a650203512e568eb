"""What a model costs: this machine's matrix-multiply peak, FLOPs and throughput of a
training step (so model FLOPs utilisation), its inference latency, and the process's peak
resident memory.

    peak = matmul_peak()                        # {"flops_per_s": ..., "size": 2048, ...}
    cost = step_cost(model, batches, config.train, peak=peak["flops_per_s"])
    seconds = inference_latency(model, [collate([s]) for s in samples[:16]])
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from omnifuse.config import TrainConfig
from omnifuse.interfaces import Batch
from omnifuse.model import OmnifuseModel
from omnifuse.train.loop import make_optimizer

STATUS = Path("/proc/self/status")
CLEAR_REFS = Path("/proc/self/clear_refs")


def matmul_peak(
    *, size: int = 2048, repeats: int = 5, device: str = "cpu", dtype: torch.dtype = torch.float32
) -> dict[str, Any]:
    """The best of `repeats` timings of one (size x size) @ (size x size) product at torch's
    current thread count, as FLOP/s = 2 size^3 / seconds: the peak that model FLOPs
    utilisation is measured against (what this machine's BLAS reaches, not a datasheet)."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    out = torch.empty(size, size, device=device, dtype=dtype)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    torch.mm(a, b, out=out)  # warm-up: thread pool, caches, kernels
    sync()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b, out=out)
        sync()
        best = min(best, time.perf_counter() - start)
    return {
        "flops_per_s": 2 * size**3 / best,
        "size": size,
        "repeats": repeats,
        "seconds": best,
        "threads": torch.get_num_threads(),
        "device": device,
        "dtype": str(dtype).removeprefix("torch."),
    }


@dataclass
class StepCost:
    """One training step (forward, backward, clipping, AdamW step) on batches of `batch_size`.

    `flops`: the matrix multiplications, convolutions and attention of forward + backward,
    counted by torch's FlopCounterMode (elementwise work is not counted, as usual for MFU);
    `samples_per_s`: timed over `steps` steps after `warmup`; `mfu`: flops x steps/s / peak.
    """

    batch_size: int
    steps: int
    flops: int
    seconds_per_step: float
    samples_per_s: float
    achieved_flops_per_s: float
    mfu: float | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def step_cost(
    model: OmnifuseModel,
    batches: Sequence[Batch],
    config: TrainConfig,
    *,
    peak: float | None,
    steps: int = 10,
    warmup: int = 2,
) -> StepCost:
    """Train `model` (changes its weights: give it a throwaway one) for warmup + steps steps
    cycling over `batches` (pre-collated: no loading or collating is timed)."""
    optimizer = make_optimizer(model, config)
    model.train()

    def step(batch: Batch) -> None:
        losses = model.training_forward(batch)
        optimizer.zero_grad(set_to_none=True)
        losses["loss"].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        model.after_step()

    counter = FlopCounterMode(display=False)
    with counter:
        losses = model.training_forward(batches[0])
        losses["loss"].backward()
    optimizer.zero_grad(set_to_none=True)
    flops = int(counter.get_total_flops())
    for i in range(warmup):
        step(batches[i % len(batches)])
    start = time.perf_counter()
    for i in range(steps):
        step(batches[i % len(batches)])
    seconds = (time.perf_counter() - start) / steps
    size = len(batches[0])
    achieved = flops / seconds
    return StepCost(
        batch_size=size,
        steps=steps,
        flops=flops,
        seconds_per_step=seconds,
        samples_per_s=size / seconds,
        achieved_flops_per_s=achieved,
        mfu=achieved / peak if peak else None,
    )


@torch.no_grad()
def inference_latency(model: OmnifuseModel, batches: Sequence[Batch], *, warmup: int = 2) -> float:
    """The fastest of the evaluation-mode forward passes over each of `batches`, in seconds
    (pre-collated: loading and collating are not timed), after `warmup` passes. Given batches
    of one sample, the latency of predicting one request. The fastest, like `matmul_peak`'s
    best timing, because other programs on the machine only ever slow a pass down: the
    fastest is the closest to what the model itself costs."""
    if not batches:
        raise ValueError("inference_latency needs at least one batch")
    model.eval()
    sync = torch.cuda.synchronize if model.device.type == "cuda" else (lambda: None)
    for i in range(warmup):
        model(batches[i % len(batches)])
    sync()
    times = []
    for batch in batches:
        start = time.perf_counter()
        model(batch)
        sync()
        times.append(time.perf_counter() - start)
    return min(times)


def _status_kib(field: str) -> int | None:
    try:
        match = re.search(rf"^{field}:\s+(\d+) kB", STATUS.read_text(), re.MULTILINE)
    except OSError:
        return None
    return int(match.group(1)) if match else None


class PeakMemory:
    """The process's resident-memory high-water mark over a block of work, in MiB.

    Linux keeps one per process (VmHWM) and resets it to the current RSS when "5" is written
    to /proc/self/clear_refs: `start()` resets it, `stop()` reads it. `peak_mib` is the
    absolute peak during the block (the prepared data and everything else the process holds
    included); `added_mib` is that peak minus the RSS at `start()`, the memory the block
    itself needed (an underestimate when freed memory the allocator kept is reused). Both are
    None where /proc is not available or the reset is refused.
    """

    def __init__(self) -> None:
        self.before: int | None = None
        self.peak_mib: float | None = None
        self.added_mib: float | None = None

    def start(self) -> None:
        try:
            CLEAR_REFS.write_text("5")
        except OSError:
            self.before = None
            return
        self.before = _status_kib("VmRSS")

    def stop(self) -> None:
        peak = _status_kib("VmHWM") if self.before is not None else None
        if peak is None or self.before is None:
            return
        self.peak_mib = round(peak / 1024, 1)
        self.added_mib = round(max(peak - self.before, 0) / 1024, 1)
