"""ONNX Runtime session profiling (SessionOptions.enable_profiling) for the onnxruntime backends.

Profiling is a session option, so the taker opens a second session on the row's model file with the row's session
options plus profiling, runs the row's call on it (the input bound as the row binds it), and keeps ORT's JSON (a
Chrome trace: open it in Perfetto). The normaliser reads that JSON: every ``Node`` event named ``<node>_kernel_time``
is one node's run (its op type and input shapes in ``args``); only the last ``calls`` ``model_run`` calls count
(session start-up, the binding's shape probe and the warm call are left out).
"""
from __future__ import annotations

import json
import os
import shutil
from typing import Any, Callable

from bench.profile.record import OpStat
from bench.profile.torch_ops import per_call_totals

KERNEL_SUFFIX = "_kernel_time"


def shapes_text(entries: list[Any]) -> str | None:
    dims = [next(iter(e.values())) for e in entries or [] if isinstance(e, dict) and e]
    return ", ".join("x".join(str(n) for n in d) for d in dims if d) or None


def normalise(events: list[dict[str, Any]], last_runs: int | None = None) -> tuple[list[OpStat], list[float]]:
    """(the nodes of an ORT profile over its last ``last_runs`` model_run calls (None: every call), the nodes' ms
    per model_run)."""
    runs = sorted((float(e["ts"]), float(e["ts"]) + float(e.get("dur", 0.0))) for e in events
                  if e.get("cat") == "Session" and e.get("name") == "model_run")
    keep = len(runs) if last_runs is None else min(last_runs, len(runs))
    runs = runs[len(runs) - keep:]
    start = runs[0][0] if runs else float("inf")
    activity_of = {"CUDAExecutionProvider": "cuda"}
    ops: dict[str, OpStat] = {}
    timed = []
    for e in events:
        name = e.get("name", "")
        if e.get("cat") != "Node" or not name.endswith(KERNEL_SUFFIX) or float(e.get("ts", 0)) < start:
            continue
        args = e.get("args") or {}
        node = name[: -len(KERNEL_SUFFIX)]
        op = ops.setdefault(node, OpStat(node, args.get("op_name", ""), activity_of.get(args.get("provider"), "cpu"),
                                         0, 0.0, 0.0, shapes_text(args.get("input_type_shape"))))
        op.calls += 1
        op.self_ms += float(e.get("dur", 0.0)) / 1e3
        timed.append((float(e["ts"]), float(e.get("dur", 0.0)) / 1e3))
    return list(ops.values()), per_call_totals(runs, timed)


def take(sess: Any, model_path: str, bind: Callable[[Any], Callable[[], Any]], sync: Callable[[], None], calls: int,
         trace_path: str, clock: Callable[[], float]) -> tuple[list[OpStat], list[float], list[float], str]:
    """(ops, profiled ms per call, wall seconds per profiled call, label): a profiling twin of ``sess``, bound by ``bind(session)``."""
    import onnxruntime as ort

    options = sess.get_session_options()
    options.enable_profiling = True
    options.profile_file_prefix = os.path.splitext(trace_path)[0] + ".ort"
    providers, provider_options = sess.get_providers(), sess.get_provider_options()
    # The row's provider options too (the CUDA provider's device, cuDNN search, TF32 off), not only their names.
    twin = ort.InferenceSession(model_path, sess_options=options, providers=providers,
                                provider_options=[provider_options.get(p, {}) for p in providers])
    fn = bind(twin)
    fn()  # the warm call: first-run allocations are not the row's steady state
    sync()
    walls = []
    for _ in range(calls):
        t0 = clock()
        fn()
        sync()
        walls.append(clock() - t0)
    shutil.move(twin.end_profiling(), trace_path)
    with open(trace_path) as fh:
        ops, per_call = normalise(json.load(fh), last_runs=calls)
    return ops, per_call, walls, f"onnxruntime {ort.__version__} session profiling ({', '.join(sess.get_providers()[:1])})"
