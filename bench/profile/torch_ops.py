"""torch.profiler for the backends that run through torch (eager, compile, AOTInductor, CUDA graphs).

The taker profiles the row's bound call with CPU activity (and CUDA on a CUDA backend) and shapes recorded, and
exports the Chrome trace (open it in Perfetto or chrome://tracing). The normaliser reads that trace, not the live
profiler object, so a saved trace and a live one go through the same code: host ops (``cpu_op`` events) get their
self time from the nesting of events on each thread (an op's duration minus its direct children's), device kernels
(``kernel``, ``gpu_memcpy``, ``gpu_memset``) their own duration. The primary activity of a CUDA row is its kernels.
Each profiled call is wrapped in a ``bench.call`` annotation, so the normaliser also gives each call's own total: a
median per call, as the row's p50 is, which one slow call (a busy machine) cannot pull up as it would a mean.
"""
from __future__ import annotations

import bisect
import json
from collections import defaultdict
from typing import Any, Callable

import torch

from bench.profile.record import OpStat

DEVICE_CATS = ("kernel", "gpu_memcpy", "gpu_memset")
CALL_MARK = "bench.call"  # the record_function wrapped around each profiled call


def shapes_text(args: dict[str, Any]) -> str | None:
    dims = [d for d in args.get("Input Dims") or [] if isinstance(d, list) and d]
    return ", ".join("x".join(str(n) for n in d) for d in dims) or None


def self_times_us(events: list[dict[str, Any]]) -> list[float]:
    """Each event's duration minus its direct children's, children found by nesting on the same (pid, tid)."""
    selfs = [float(e.get("dur", 0.0)) for e in events]
    by_thread: dict[tuple, list[int]] = defaultdict(list)
    for i, e in enumerate(events):
        by_thread[(e.get("pid"), e.get("tid"))].append(i)
    for idx in by_thread.values():
        idx.sort(key=lambda i: (float(events[i]["ts"]), -float(events[i].get("dur", 0.0))))
        stack: list[int] = []
        for i in idx:
            ts = float(events[i]["ts"])
            # An op that ended before this one starts is no parent; a rounding of the exported microseconds may
            # leave a child a hair past its parent's end, hence the strict comparison.
            while stack and float(events[stack[-1]]["ts"]) + float(events[stack[-1]].get("dur", 0.0)) <= ts:
                stack.pop()
            if stack:
                selfs[stack[-1]] -= float(events[i].get("dur", 0.0))
            stack.append(i)
    return [max(s, 0.0) for s in selfs]


def per_call_totals(spans: list[tuple[float, float]], timed: list[tuple[float, float]]) -> list[float]:
    """Milliseconds per call: each (ts, self ms) added to the call span (start, end) it starts in."""
    starts = [a for a, _ in spans]
    totals = [0.0] * len(spans)
    for ts, ms in timed:
        i = bisect.bisect_right(starts, ts) - 1
        if i >= 0 and ts <= spans[i][1]:
            totals[i] += ms
    return totals


def normalise(trace: dict[str, Any]) -> tuple[list[OpStat], list[float]]:
    """(the ops of a torch.profiler Chrome trace, the primary activity's ms per ``bench.call`` span); shares are
    filled later (bench.profile.record.finish)."""
    events = [e for e in trace.get("traceEvents", []) if e.get("ph") == "X" and "ts" in e]
    host = [e for e in events if e.get("cat") == "cpu_op"]
    device = [e for e in events if e.get("cat") in DEVICE_CATS]
    ops: dict[tuple[str, str], OpStat] = {}
    timed: dict[str, list[tuple[float, float]]] = {"cpu": [], "cuda": []}
    for e, self_us in zip(host, self_times_us(host)):
        op = ops.setdefault(("cpu", e["name"]), OpStat(e["name"], e["name"], "cpu", 0, 0.0, 0.0,
                                                       shapes_text(e.get("args") or {})))
        op.calls += 1
        op.self_ms += self_us / 1e3
        timed["cpu"].append((float(e["ts"]), self_us / 1e3))
    for e in device:
        op = ops.setdefault(("cuda", e["name"]), OpStat(e["name"], e["cat"], "cuda", 0, 0.0, 0.0))
        op.calls += 1
        op.self_ms += float(e.get("dur", 0.0)) / 1e3
        timed["cuda"].append((float(e["ts"]), float(e.get("dur", 0.0)) / 1e3))
    spans = sorted((float(e["ts"]), float(e["ts"]) + float(e.get("dur", 0.0))) for e in events
                   if e.get("cat") == "user_annotation" and e.get("name") == CALL_MARK)
    return list(ops.values()), per_call_totals(spans, timed["cuda" if device else "cpu"])


def take(fn: Callable[[], Any], sync: Callable[[], None], calls: int, on_cuda: bool, trace_path: str,
         clock: Callable[[], float]) -> tuple[list[OpStat], list[float], list[float], str]:
    """(ops, profiled ms per call, wall seconds per profiled call, profiler label): ``calls`` calls of ``fn`` under
    torch.profiler, each in a ``bench.call`` annotation (inside its wall time: the annotation is profiler cost too)."""
    from torch.profiler import ProfilerActivity, profile, record_function

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if on_cuda else [])
    walls = []
    with profile(activities=activities, record_shapes=True) as prof:
        for _ in range(calls):
            t0 = clock()
            with record_function(CALL_MARK):
                fn()
                sync()
            walls.append(clock() - t0)
    prof.export_chrome_trace(trace_path)
    with open(trace_path) as fh:
        ops, per_call = normalise(json.load(fh))
    label = f"torch.profiler {torch.__version__} ({'CPU+CUDA' if on_cuda else 'CPU'} activities, shapes recorded)"
    return ops, per_call, walls, label
