"""TensorRT's layer profiler (``nvinfer1::IProfiler``; ``trtexec --exportProfile`` writes the same table), CUDA only.

Written against the TensorRT and Torch-TensorRT docs, not yet run on a GPU here. The taker attaches an IProfiler to
the execution context of each TensorRT engine in the row's compiled module (Torch-TensorRT's Python runtime keeps it
as ``context``); TensorRT then reports every layer's time after each enqueue. The layer times are written as
trtexec's ``--exportProfile`` JSON (a ``{"count": N}`` entry, then per layer ``name``, ``timeMs``, ``averageMs``,
``medianMs``, ``percentage``), so one normaliser reads both this taker's file and a trtexec profile. Torch-TensorRT's
C++ runtime keeps its context out of Python's reach: such a row's profile is skipped with that reason.
"""
from __future__ import annotations

import contextlib
import json
import statistics
from typing import Any, Callable

from bench.profile.record import OpStat, Unsupported


def normalise(profile: list[dict[str, Any]]) -> tuple[list[OpStat], list[float]]:
    """(the layers of a trtexec ``--exportProfile`` JSON, times in ms over ``count`` inferences; [] : the file has
    totals, no single call's time)."""
    count = next((int(e["count"]) for e in profile if "count" in e), 1)
    return [OpStat(e["name"], e.get("layerType", ""), "cuda", count, float(e["timeMs"]), 0.0)
            for e in profile if "name" in e], []


def export_profile(times: dict[str, list[float]], calls: int) -> list[dict[str, Any]]:
    """Layer times (ms per report) in trtexec's --exportProfile layout."""
    total = sum(sum(t) for t in times.values()) or 1.0
    return [{"count": calls}] + [{"name": name, "timeMs": sum(t), "averageMs": sum(t) / len(t),
                                  "medianMs": statistics.median(t), "percentage": 100 * sum(t) / total}
                                 for name, t in times.items()]


def contexts(module: Any) -> list[Any]:
    found = [m.context for m in module.modules() if getattr(m, "context", None) is not None]
    if not found:
        raise Unsupported("no TensorRT execution context reachable from Python (Torch-TensorRT's C++ runtime); "
                          "compile with use_python_runtime=True to profile its layers")
    return found


def take(module: Any, fn: Callable[[], Any], sync: Callable[[], None], calls: int, native_path: str,
         clock: Callable[[], float]) -> tuple[list[OpStat], list[float], list[float], str]:
    """(layers, [] per call, wall seconds per profiled call, label) with an IProfiler on every engine's context."""
    import tensorrt as trt

    class LayerTimes(trt.IProfiler):
        def __init__(self):
            trt.IProfiler.__init__(self)
            self.times: dict[str, list[float]] = {}

        def report_layer_time(self, layer_name: str, ms: float) -> None:
            self.times.setdefault(layer_name, []).append(ms)

    profiler, attached = LayerTimes(), contexts(module)
    for context in attached:
        context.profiler = profiler
    walls = []
    try:
        for _ in range(calls):
            t0 = clock()
            fn()
            sync()
            walls.append(clock() - t0)
    finally:
        for context in attached:
            with contextlib.suppress(TypeError):  # detach: later enqueues of this engine report to no one
                context.profiler = None
    profile = export_profile(profiler.times, calls)
    with open(native_path, "w") as fh:
        json.dump(profile, fh)
    return *normalise(profile), walls, f"TensorRT {trt.__version__} IProfiler (per layer, per enqueue)"
