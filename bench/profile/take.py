"""Take a row's profile after its timed calls: the hook the infer phase calls once a row is measured.

Per row: the same bound call as the timed one, warmed, then ``calls`` calls with the profiler off (their wall times
are the overhead's reference), then ``calls`` calls under the backend's own profiler (torch.profiler for backends that
run through torch; a profiling twin of the session or compiled model for ONNX Runtime and OpenVINO, whose profiling is
a build-time option; TensorRT's IProfiler on the engine). Nothing here runs inside the row's timed calls, and the row's
record is never changed: a profiler that is missing or unsupported is a skipped profile with the reason, one that
breaks a failed profile, and the row stays as measured.
"""
from __future__ import annotations

import math
import os
import statistics
from typing import Any, Callable

import torch

from bench.backends.base import Backend
from bench.backends.noop import NoopBackend
from bench.backends.onnxruntime import OrtCpuBackend, OrtCudaBackend, cpu_binding, device_binding, host_array
from bench.backends.openvino import OpenVinoBackend
from bench.backends.ort_int8 import OrtInt8Backend
from bench.backends.tensorrt import TensorRtBackend
from bench.measure import timing
from bench.profile import openvino_counters, ort_nodes, tensorrt_layers, torch_ops
from bench.profile.record import (
    PROFILES_DIR,
    OpStat,
    ProfileRecord,
    Unsupported,
    row_key,
    save_profile,
    summarise,
    train_row_key,
)
from bench.records import InferRecord, reason_of

PROFILE_S, QUICK_PROFILE_S = 0.25, 0.05  # profiled seconds per row (as many again with the profiler off)
MIN_CALLS, MAX_CALLS = 10, 200
Taken = tuple[list[OpStat], list[float], list[float], str]  # ops, ms per call, wall s per call, label


def profile_calls(p50_ms: float | None, quick: bool) -> int:
    """Enough calls for ~PROFILE_S of profiled time, within MIN_CALLS..MAX_CALLS (a third of them under --quick)."""
    seconds = QUICK_PROFILE_S if quick else PROFILE_S
    calls = math.ceil(seconds / (p50_ms / 1e3)) if p50_ms and p50_ms > 0 else MIN_CALLS
    lo = MIN_CALLS // 3 if quick else MIN_CALLS
    return max(lo, min(MAX_CALLS // (3 if quick else 1), calls))


# What a profiled row pays on top of its timed calls, for the budget: the calls off and on (the profiler's own cost
# taken as one call's again), writing the trace, and the twin a profiler needs built (priced as the backend's build).
PROFILER_COST, TRACE_WRITE_S = 1.0, 0.2
TWIN_BUILDS = {"onnxruntime": "ort_session", "onnxruntime-cuda": "ort_session", "onnxruntime-int8": "ort_session",
               "onnxruntime-int8-dynamic": "ort_session", "openvino": "openvino", "openvino-dynamic": "openvino"}


def profile_cost_s(ctx, name: str, backend: str, precision: str, batch_size: int, call_s: float,
                   build_for: Callable[[str, str], float]) -> float:
    """Seconds --profile adds to an inference row (0 when the row is not profiled); ``build_for``: the run's
    prices (bench.schedule.pricing.Prices.build_for)."""
    request = getattr(ctx, "profile", None)
    if request is None or not request.wants(row_key(name, "infer", backend, batch_size, precision)):
        return 0.0
    calls = profile_calls(1e3 * call_s, ctx.quick)
    twin = TWIN_BUILDS.get(backend)
    return (2 + PROFILER_COST) * calls * call_s + TRACE_WRITE_S + (build_for(twin, name) if twin else 0.0)


def wall_times(fn: Callable[[], Any], sync: Callable[[], None], calls: int) -> list[float]:
    out = []
    for _ in range(calls):
        t0 = timing.clock()
        fn()
        sync()
        out.append(timing.clock() - t0)
    return out


def ort_take(backend: Backend, x: torch.Tensor, calls: int, trace: str) -> Taken:
    sess = getattr(backend, "sess", None) or getattr(backend, "ort", None)
    path = getattr(backend, "model_path", None)
    if sess is None or path is None:
        raise Unsupported(f"{backend.name} keeps no ONNX Runtime session and model file to profile")
    if isinstance(backend, OrtCudaBackend):
        device_id = backend.options["device_id"]

        def bind(twin):
            binding = device_binding(twin, backend.input_name, backend.output_name, x, device_id)
            return lambda: twin.run_with_iobinding(binding)
    elif isinstance(backend, OrtCpuBackend):
        arr = host_array(x)

        def bind(twin):
            binding = cpu_binding(twin, backend.input_name, backend.output_name, arr)
            return lambda: twin.run_with_iobinding(binding)
    else:  # the int8 backends' call: run() on a feed of the CPU tensor's memory
        feed = {backend.input_name: x.detach().cpu().numpy()}

        def bind(twin):
            return lambda: twin.run(None, feed)
    return ort_nodes.take(sess, path, bind, backend.sync, calls, trace, timing.clock)


def run_profiler(backend: Backend, x: torch.Tensor, calls: int, folder: str, key: str) -> tuple[Taken, str]:
    """(what the backend's profiler saw, the native file's name)."""
    if isinstance(backend, NoopBackend):
        raise Unsupported("the noop backend runs nothing to profile")
    if isinstance(backend, (OrtCpuBackend, OrtCudaBackend, OrtInt8Backend)):
        name = f"{key}.trace.json"
        return ort_take(backend, x, calls, os.path.join(folder, name)), name
    if isinstance(backend, OpenVinoBackend):
        name = f"{key}.native.json"
        arr = x.detach().cpu().numpy()
        return openvino_counters.take(backend, arr, calls, os.path.join(folder, name), timing.clock), name
    fn = backend.bind(x)
    if isinstance(backend, TensorRtBackend):
        why = TensorRtBackend.missing_package() or tensorrt_missing()
        if why:
            raise Unsupported(why)
        name = f"{key}.native.json"
        module = backend.engine(*(int(x.shape[0]),) * 3)
        return tensorrt_layers.take(module, fn, backend.sync, calls, os.path.join(folder, name), timing.clock), name
    name = f"{key}.trace.json"
    on_cuda = backend.compute_device().type == "cuda"
    return torch_ops.take(fn, backend.sync, calls, on_cuda, os.path.join(folder, name), timing.clock), name


def tensorrt_missing() -> str | None:
    try:
        import tensorrt  # noqa: F401
    except Exception as exc:  # noqa: BLE001 - a TensorRT that fails to load is as absent as a missing one
        return f"tensorrt's Python module is not usable ({reason_of(exc)}): the layer profiler needs it"
    return None


def taken(prof: ProfileRecord, folder: str, ctx, measure: Callable[[], None]) -> None:
    """Run ``measure`` (which fills ``prof``), turning an unsupported profiler into a skipped profile and any other
    error into a failed one, then write ``prof``."""
    try:
        measure()
    except Unsupported as exc:
        prof.status, prof.reason = "skipped", str(exc)
    except Exception as exc:
        if ctx.debug:
            raise
        prof.status, prof.reason = "failed", reason_of(exc)
    save_profile(prof, folder)


def profile_row(backend: Backend, x: torch.Tensor, rec: InferRecord, ctx) -> ProfileRecord | None:
    """The profile of a measured row when the run asks for it (``ctx.profile``), written to OUT/<device>/profiles/;
    None when the row is not profiled. Called after the row's timed calls; never changes ``rec``."""
    request = getattr(ctx, "profile", None)
    if request is None or not rec.ok:
        return None
    key = row_key(rec.model, rec.phase, rec.backend, rec.batch_size, rec.precision)
    if not request.wants(key):
        return None
    folder = os.path.join(ctx.out_dir, PROFILES_DIR)
    os.makedirs(folder, exist_ok=True)
    prof = ProfileRecord(row=key, model=rec.model, phase=rec.phase, backend=rec.backend, precision=rec.precision,
                         batch_size=rec.batch_size, device=rec.device, profiler="", row_p50_ms=rec.p50_ms)
    calls = profile_calls(rec.p50_ms, ctx.quick)

    def measure() -> None:
        with torch.inference_mode():
            fn = backend.bind(x)
            fn()
            backend.sync()
            walls_off = wall_times(fn, backend.sync, calls)
            (ops, per_call, walls_on, prof.profiler), prof.trace = run_profiler(backend, x, calls, folder, key)
        summarise(prof, ops, per_call, walls_on, walls_off)

    taken(prof, folder, ctx, measure)
    return prof


def profile_train_rows(rows: list, name: str, ctx) -> None:
    """--profile on the training phase: one steady window of each timed row (bench.phases.train.phase.TimedRow),
    after all its timed windows, under torch.profiler; a call is one step, the row's p50 the median window's time
    per step. Windows with the profiler off, as many steps, are the overhead's reference."""
    request = getattr(ctx, "profile", None)
    if request is None:
        return
    folder, bs = os.path.join(ctx.out_dir, PROFILES_DIR), ctx.train_batch_size(name)
    for row in rows:
        plan = row.plan
        key = train_row_key(name, plan.row, bs, plan.precision, plan.channels_last, plan.compile)
        if row.error is not None or not row.rates or not request.wants(key):
            continue
        os.makedirs(folder, exist_ok=True)
        prof = ProfileRecord(row=key, model=name, phase="train", backend=plan.row, precision=plan.precision,
                             batch_size=bs, device=ctx.device.type, profiler="",
                             row_p50_ms=1e3 * bs / statistics.median(row.rates))

        def measure(row=row, prof=prof, key=key) -> None:
            steps = max(row.steps_per_window, 1)
            walls_off = wall_times(row.step, ctx.sync, steps)
            trace = f"{key}.trace.json"
            ops, per_call, walls_on, prof.profiler = torch_ops.take(
                row.step, ctx.sync, steps, ctx.device.type == "cuda", os.path.join(folder, trace), timing.clock)
            prof.trace = trace
            summarise(prof, ops, per_call, walls_on, walls_off)

        taken(prof, folder, ctx, measure)
