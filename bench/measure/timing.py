"""The one clock of bench/: per-call latency samples, the statistics a latency row prints, how many calls a row gets,
and the timed window the training and scaling phases share.

Every figure is wall time from ``time.perf_counter`` with the device drained before timing starts and after every
call, inside the timed interval: queued device work is counted in the call that queued it, never in the next one.
The caller passes that drain as ``sync`` (``zoo.engine.synchronize`` bound to the device, or a backend's own
``sync()``), so one clock times eager, compiled, CUDA-graph and ONNX Runtime calls alike. Each call is timed on its own
(torch.utils.benchmark's ``blocked_autorange`` averages blocks instead), so percentiles describe single requests; the
price is the sync overhead (microseconds on CUDA) inside every sample, which the CLOCK text states.

A percentile is printed only when it rests on enough calls (records.PERCENTILE_MIN_CALLS: p90 >= 100, p99 >= 1000),
the way MLPerf LoadGen marks a run without its minimum query count invalid.
"""
from __future__ import annotations

import math
import time
from typing import Any, Callable

import numpy as np

from bench.measure.stats import percentile_or_none
from bench.records import PERCENTILE_MIN_CALLS

CLOCK = ("time.perf_counter wall clock per call; device synchronized before timing starts and after every call, "
         "inside the timed interval")

# Module-level so tests can substitute a fake clock; every timed interval in bench reads it.
clock: Callable[[], float] = time.perf_counter

# A full run's batch-1 row aims at a valid p99; larger batches at a valid p90 (where they fit in the cap).
BATCH1_CALLS = PERCENTILE_MIN_CALLS[99]
BATCH_CALLS = PERCENTILE_MIN_CALLS[90]
MIN_SECONDS = 1.0  # a row never times less than this (full run): short rows would see one scheduler quantum
BATCH1_CAP_S = 60.0  # the most one batch-1 row may time (full run)
BATCH_CAP_S = 30.0  # the most one larger-batch row may time (full run)
WARMUP_CALLS = 10
QUICK = {"min_calls": 20, "min_seconds": 0.05, "warmup": 2, "max_seconds": 2.0}
PROBE_MAX_STEPS = 64  # steps_for_window's largest probe
SIG_FIGS = 4  # raw latencies are stored to 4 significant figures (0.01% of the value: far below any noise)


def sample_latencies(fn: Callable[[], Any], sync: Callable[[], None], *, min_calls: int, min_seconds: float,
                     warmup: int, max_seconds: float | None = None) -> list[float]:
    """Seconds per call of ``fn``, one entry per timed call.

    ``warmup`` untimed calls, then ``sync()``; then timed calls, each followed by ``sync()`` inside its interval, until
    at least ``min_calls`` calls AND ``min_seconds`` of timed wall time, unless ``max_seconds`` run out first (there is
    always at least one sample; fewer than ``min_calls`` means the cap won, and the statistics say so by n_calls).
    """
    if min_calls < 1:
        raise ValueError(f"min_calls must be >= 1, not {min_calls}")
    if min_seconds < 0 or warmup < 0:
        raise ValueError("min_seconds and warmup must be >= 0")
    if max_seconds is not None and not max_seconds > 0:
        raise ValueError(f"max_seconds must be > 0 or None, not {max_seconds}")
    for _ in range(warmup):
        fn()
    sync()
    samples: list[float] = []
    began = clock()
    while True:
        t0 = clock()
        fn()
        sync()
        t1 = clock()
        samples.append(t1 - t0)
        elapsed_s = t1 - began
        if len(samples) >= min_calls and elapsed_s >= min_seconds:
            break
        if max_seconds is not None and elapsed_s >= max_seconds:
            break
    return samples


DEVICE_CLOCK = ("CUDA events recorded on the backend's stream around each call, no host sync between calls: the "
                "device's own time per call, without the launch and sync overhead the wall clock includes")
DEVICE_CALLS = 100  # event-timed calls per CUDA row, and back-to-back calls for its throughput (quick: QUICK_DEVICE)
QUICK_DEVICE_CALLS = 20


def device_times_ms(fn: Callable[[], Any], stream: Any, calls: int, events: Any = None) -> list[float]:
    """Milliseconds of device time per call: a start and an end CUDA event recorded on ``stream`` (the stream the
    backend's kernels run on) around each of ``calls`` calls, issued back to back, one synchronize at the end.
    ``events`` is the torch.cuda namespace (a fake in CPU tests)."""
    if calls < 1:
        raise ValueError(f"calls must be >= 1, not {calls}")
    if events is None:
        import torch

        events = torch.cuda
    cuda = events
    pairs = []
    for _ in range(calls):
        start, end = cuda.Event(enable_timing=True), cuda.Event(enable_timing=True)
        start.record(stream)
        fn()
        end.record(stream)
        pairs.append((start, end))
    pairs[-1][1].synchronize()
    return [float(a.elapsed_time(b)) for a, b in pairs]


def back_to_back_rate(fn: Callable[[], Any], sync: Callable[[], None], calls: int, batch_size: int) -> float:
    """Samples/s of ``calls`` calls issued back to back with one sync at the end (after one before): what a caller
    that does not wait for each answer gets, where asynchronous backends and CUDA graphs show their gain."""
    if calls < 1:
        raise ValueError(f"calls must be >= 1, not {calls}")
    sync()
    t0 = clock()
    for _ in range(calls):
        fn()
    sync()
    seconds = clock() - t0
    return calls * batch_size / seconds if seconds > 0 else float("inf")


def round_sig(values: np.ndarray, figures: int = SIG_FIGS) -> list[float]:
    """Each value rounded to ``figures`` significant figures (zeros stay zero)."""
    out = []
    for v in values.tolist():
        out.append(0.0 if v == 0 else round(v, figures - 1 - math.floor(math.log10(abs(v)))))
    return out


def latency_stats(samples_s: list[float] | np.ndarray, batch_size: int) -> dict[str, Any]:
    """The latency fields of an InferRecord from seconds-per-call samples (numpy's linear percentiles).

    p50 is the median every throughput divides by (samples_per_s = batch / median seconds, never the mean); p90 and
    p99 are None below their minimum call counts; the raw samples travel with the row, in milliseconds.
    """
    arr_ms = np.asarray(samples_s, dtype=np.float64) * 1e3
    if arr_ms.size == 0:
        raise ValueError("no latency samples")
    if not np.all(np.isfinite(arr_ms)) or np.any(arr_ms < 0):
        raise ValueError("latency samples must be finite and non-negative")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, not {batch_size}")
    p25, p50, p75 = np.percentile(arr_ms, [25, 50, 75])
    return {
        "n_calls": int(arr_ms.size),
        "latencies_ms": round_sig(arr_ms),
        "p50_ms": float(p50),
        "p90_ms": percentile_or_none(arr_ms, 90),
        "p99_ms": percentile_or_none(arr_ms, 99),
        "max_ms": float(arr_ms.max()),
        "mean_ms": float(arr_ms.mean()),
        "iqr_ms": float(p75 - p25),
        "samples_per_s": batch_size / (p50 / 1e3) if p50 > 0 else None,
    }


def sampling_plan(batch_size: int, quick: bool, est_call_s: float | None = None) -> dict[str, Any]:
    """Keyword arguments for sample_latencies: how many calls and seconds a latency row gets.

    Full run: batch 1 aims at BATCH1_CALLS calls (a valid p99) within BATCH1_CAP_S, larger batches at BATCH_CALLS
    (a valid p90) within BATCH_CAP_S, each at least MIN_SECONDS. ``est_call_s`` (seconds per call, e.g. from the
    warm-up) lets a slow model aim for what fits: when the target cannot fit in the cap, min_calls drops to what does
    (and plan_note says which percentiles that leaves). Quick: small counts that check the path, nothing more.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, not {batch_size}")
    if quick:
        return dict(QUICK)
    target, cap_s = (BATCH1_CALLS, BATCH1_CAP_S) if batch_size == 1 else (BATCH_CALLS, BATCH_CAP_S)
    if est_call_s is not None and est_call_s > 0:
        target = max(1, min(target, int(cap_s / est_call_s)))
    return {"min_calls": target, "min_seconds": MIN_SECONDS, "warmup": warmup_calls(cap_s, est_call_s),
            "max_seconds": cap_s}


def warmup_calls(cap_s: float, est_call_s: float | None) -> int:
    """Untimed warm-up calls before a row of at most ``cap_s``: WARMUP_CALLS, fewer for a slow call so the warm-up
    stays ~10% of the cap (at least one)."""
    if est_call_s is None or est_call_s <= 0:
        return WARMUP_CALLS
    return max(1, min(WARMUP_CALLS, int(0.1 * cap_s / est_call_s)))


def plan_note(plan: dict[str, Any]) -> str:
    """What a plan promises, e.g. ``>= 1000 calls (p99 valid), >= 1 s, cap 60 s``."""
    calls = plan["min_calls"]
    if calls >= PERCENTILE_MIN_CALLS[99]:
        valid = "p99 valid"
    elif calls >= PERCENTILE_MIN_CALLS[90]:
        valid = "p90 valid, p99 None"
    else:
        valid = "p50 and max only"
    return (f">= {calls} calls ({valid}), >= {plan['min_seconds']:g} s, cap {plan['max_seconds']:g} s, "
            f"{plan['warmup']} warm-up calls")


def steps_for_window(step: Callable[[], int], sync: Callable[[], None], target_s: float, *,
                     agree: Callable[[int], int] | None = None) -> int:
    """How many steps make a timed window of about ``target_s`` seconds.

    One untimed warm-up step, then a timed probe that grows (1, 4, 16, 64 steps) until it lasts at least 5% of the
    target, so a fast step is not sized from one noisy sample. ``agree(k)`` returns rank 0's ``k`` on every rank
    under DDP (e.g. ``zoo.distributed.broadcast_int`` bound to the rank's device). It decides twice over: whether
    the probe stops, on every probe iteration (a rank whose clock saw a slower probe must not stop at 4 steps while
    another goes on to 16: one would issue a broadcast while the other issues DDP all-reduces, and both would wait
    forever), and the final count (ranks that time their own windows differently would time each other's waits).
    """
    if not target_s > 0:
        raise ValueError(f"target_s must be > 0, not {target_s}")
    step()
    sync()
    n = 1
    while True:
        t0 = clock()
        for _ in range(n):
            step()
        sync()
        dt = clock() - t0
        stop = dt >= 0.05 * target_s or n >= PROBE_MAX_STEPS
        if agree is not None:
            stop = n >= PROBE_MAX_STEPS or bool(agree(int(stop)))  # rank 0's decision, the same on every rank
        if stop:
            break
        n *= 4
    # A clock that saw no time at all (a stand-in clock) gets the probe's size rather than a division by zero.
    steps = max(1, round(target_s * n / dt)) if dt > 0 else n
    return int(agree(steps)) if agree is not None else steps


def time_window(step: Callable[[], int], sync: Callable[[], None], steps: int) -> tuple[float, int]:
    """(seconds, samples) of ``steps`` calls of ``step``, which returns the samples it stepped (a short last batch
    counts what it had). The device is drained before the window starts and inside it at the end."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, not {steps}")
    sync()
    t0 = clock()
    samples = 0
    for _ in range(steps):
        n = step()
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
            raise TypeError(f"step() must return the number of samples it stepped (an int), not {n!r}")
        samples += int(n)
    sync()
    return clock() - t0, samples


def window_stats(window_rates: list[float]) -> dict[str, Any]:
    """Throughput fields of a training row from its windows' samples/s: median and IQR over windows."""
    rates = np.asarray(window_rates, dtype=np.float64)
    if rates.size == 0:
        raise ValueError("no timed windows")
    p25, p50, p75 = np.percentile(rates, [25, 50, 75])
    return {"samples_per_s": float(p50), "samples_per_s_iqr": float(p75 - p25), "windows": int(rates.size),
            "window_rates": round_sig(rates)}
