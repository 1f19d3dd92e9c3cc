"""Per-call latency sampling that waits for the device, and the statistics every latency row reports.

Each call is timed on its own (no averaging over a block), so percentiles describe single requests. On CUDA a pair of
events brackets the call and the end event is waited on before the next call starts, so queued kernels never leak
into the next sample; on MPS the queue is drained before and after; on the CPU the wall clock is the truth.
"""
from __future__ import annotations

import time
from typing import Any, Callable

import numpy as np
import torch

_clock = time.perf_counter  # module-level so tests can substitute a fake clock

def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def sample_latencies(fn: Callable[[], Any], device: torch.device | str, *, min_samples: int, min_seconds: float,
                     warmup: int, max_seconds: float | None = None) -> list[float]:
    """Seconds per call of ``fn``, one entry per call.

    ``warmup`` untimed calls first; then timed calls until at least ``min_samples`` calls AND ``min_seconds`` of timed
    wall time, unless ``max_seconds`` of timed wall time run out first (always at least one sample).
    """
    if min_samples < 1:
        raise ValueError(f"min_samples must be >= 1, not {min_samples}")
    device = torch.device(device)
    for _ in range(max(warmup, 0)):
        fn()
    _sync(device)

    samples: list[float] = []
    cuda = device.type == "cuda"
    if cuda:
        start_ev = torch.cuda.Event(enable_timing=True)
        end_ev = torch.cuda.Event(enable_timing=True)
    began = _clock()
    while True:
        if cuda:
            start_ev.record()
            fn()
            end_ev.record()
            end_ev.synchronize()
            samples.append(start_ev.elapsed_time(end_ev) / 1e3)  # elapsed_time is in ms
        elif device.type == "mps":
            torch.mps.synchronize()
            t0 = _clock()
            fn()
            torch.mps.synchronize()
            samples.append(_clock() - t0)
        else:
            t0 = _clock()
            fn()
            samples.append(_clock() - t0)
        elapsed_s = _clock() - began
        if max_seconds is not None and elapsed_s >= max_seconds:
            break
        if len(samples) >= min_samples and elapsed_s >= min_seconds:
            break
    return samples


def latency_stats(samples_s: list[float] | np.ndarray, batch_size: int) -> dict[str, float | int]:
    """p50/p90/p99/mean/IQR in milliseconds (numpy's linear percentiles) and throughput from the mean latency."""
    arr = np.asarray(samples_s, dtype=np.float64) * 1e3
    if arr.size == 0:
        raise ValueError("no latency samples")
    if not np.all(np.isfinite(arr)) or np.any(arr < 0):
        raise ValueError("latency samples must be finite and non-negative")
    p25, p50, p75, p90, p99 = np.percentile(arr, [25, 50, 75, 90, 99])
    mean_ms = float(arr.mean())
    return {
        "p50_ms": float(p50),
        "p90_ms": float(p90),
        "p99_ms": float(p99),
        "mean_ms": mean_ms,
        "iqr_ms": float(p75 - p25),
        "samples": int(arr.size),
        "samples_per_s": batch_size / (mean_ms / 1e3) if mean_ms > 0 else float("inf"),
    }
