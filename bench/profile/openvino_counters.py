"""OpenVINO's per-layer performance counters (the ``PERF_COUNT`` property; ``benchmark_app -pc`` prints the same).

Counters are a compile-time property, so the taker compiles the row's model again for the row's batch (the row's
own CPU configuration plus ``PERF_COUNT``) and runs the row's call on a request of it. The CPU plugin's counters are
the mean per inference since the request's first one (OpenVINO 2026.4, checked here: the values after calls 1, 2,
3 are the running means of those calls), with microsecond resolution. So the taker reads them once after the warm
call and once after the last profiled call, and the native file (``<row>.native.json``) keeps both readings: per
layer, name, type, the kernel that ran it, real and CPU time, status. The normaliser takes each executed layer's
time over the profiled calls as (warm + calls) x the last mean - warm x the first; a layer fused into another
(NOT_RUN, OPTIMIZED_OUT) has no time of its own and is left out.
"""
from __future__ import annotations

import json
from typing import Any, Callable

from bench.profile.record import OpStat

NATIVE_FORMAT = "openvino InferRequest.get_profiling_info(), running means, after the warm call and the last"


def counters_of(request: Any) -> list[dict[str, Any]]:
    """One call's counters as plain JSON values (times in microseconds)."""
    return [{"node_name": p.node_name, "node_type": p.node_type, "exec_type": p.exec_type,
             "real_time_us": p.real_time.total_seconds() * 1e6, "cpu_time_us": p.cpu_time.total_seconds() * 1e6,
             "status": str(p.status).rsplit(".", 1)[-1]} for p in request.get_profiling_info()]


def normalise(native: dict[str, Any]) -> tuple[list[OpStat], list[float]]:
    """(ops over the profiled calls, [] : the running means give no single call's time)."""
    warm, calls = int(native["warm_calls"]), int(native["calls"])
    first = {layer["node_name"]: float(layer["real_time_us"]) for layer in native["after_warm"]}
    ops = []
    for layer in native["after_last"]:
        if layer["status"] != "EXECUTED":
            continue
        total_us = (warm + calls) * float(layer["real_time_us"]) - warm * first.get(layer["node_name"], 0.0)
        ops.append(OpStat(layer["node_name"], f"{layer['node_type']} ({layer['exec_type']})", "cpu", calls,
                          max(total_us, 0.0) / 1e3, 0.0))
    return ops, []


def take(backend: Any, arr: Any, calls: int, native_path: str,
         clock: Callable[[], float]) -> tuple[list[OpStat], list[float], list[float], str]:
    """(ops, per-call profiled ms, wall seconds per profiled call, label) on a PERF_COUNT twin of the row's compiled model."""
    import openvino as ov

    from bench.backends.openvino import cpu_config

    batch = int(arr.shape[0]) if backend.static_shapes else None
    config = {**cpu_config(backend.ctx.threads), "PERF_COUNT": True}
    request = backend.core.compile_model(backend.shaped_model(batch), "CPU", config).create_infer_request()
    if backend.static_shapes:
        request.set_input_tensor(ov.Tensor(arr, shared_memory=True))
        fn = request.infer
    else:
        def fn():
            return request.infer({0: arr}, share_inputs=True)
    fn()  # the warm call
    native = {"format": NATIVE_FORMAT, "warm_calls": 1, "calls": calls, "after_warm": counters_of(request)}
    walls = []
    for _ in range(calls):
        t0 = clock()
        fn()
        walls.append(clock() - t0)
    native["after_last"] = counters_of(request)
    with open(native_path, "w") as fh:
        json.dump(native, fh)
    return *normalise(native), walls, f"openvino {ov.get_version().split('-')[0]} performance counters (PERF_COUNT)"
