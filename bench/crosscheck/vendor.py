"""The vendor rows of bench.crosscheck: a backend's inference row timed by the harness (the infer phase's own
``measure``), then by its vendor's own way, in interleaved rounds, with the ratio and what explains it.

- ``openvino`` / ``openvino-dynamic``: OpenVINO's ``benchmark_app`` (bench.crosscheck.benchmark_app) on the row's own IR (its
  static or dynamic shape), input and plugin configuration; after each harness row the same bound call is run again
  reading ``InferRequest.latency`` (the runtime's own timer, the figure benchmark_app reports), so a gap splits into
  the Python call around the runtime and the runtime itself.
- ``onnxruntime``: a minimal hand-written session loop in this process: a default session with the row's threads,
  ``sess.run(None, feed)`` timed per call by ``time.perf_counter`` (ONNX Runtime's wheel ships no perf tool).
"""
from __future__ import annotations

import os
import statistics
import subprocess
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch

from bench.backends.base import Backend
from bench.context import BenchContext, ModelSession, example_batch
from bench.crosscheck import benchmark_app
from bench.model.export import onnx_for
from bench.phases.infer import measure

VENDOR_LIMIT = 1.25  # a harness / vendor ratio above this is explained on the row, never silent
VENDOR_BACKENDS = ("openvino", "openvino-dynamic", "onnxruntime")
RUNTIME_CALLS_S = 1.0  # seconds of calls reading InferRequest.latency after each harness row (at most 1,000 calls)


@dataclass
class VendorRow:
    """One (model, backend, batch) compared over ``rounds``; every list has one entry per round."""

    model: str
    backend: str
    batch_size: int
    vendor: str  # what the vendor side is
    harness_p50_ms: list[float] = field(default_factory=list)
    harness_iqr_ms: list[float] = field(default_factory=list)
    harness_calls: list[int] = field(default_factory=list)
    vendor_median_ms: list[float] = field(default_factory=list)
    vendor_spread: list[str] = field(default_factory=list)  # benchmark_app: min..max; the loop: its IQR
    runtime_ms: list[float] = field(default_factory=list)  # OpenVINO: median InferRequest.latency of the bound call
    python_ms: list[float] = field(default_factory=list)  # and the median of (wall - that latency), the same calls
    floor_us: float | None = None  # the harness's floor per call (bench.runner.env.harness_floor)
    options: dict[str, Any] = field(default_factory=dict)  # the row's InferRecord.options
    config_diff: dict[str, Any] = field(default_factory=dict)  # property -> (row's, vendor's) where they differ

    def harness_ms(self) -> float:
        return statistics.median(self.harness_p50_ms)

    def vendor_ms(self) -> float:
        return statistics.median(self.vendor_median_ms)

    def ratio(self) -> float:
        return self.harness_ms() / self.vendor_ms()

    def runtime_ratio(self) -> float | None:
        """The runtime's own latency in the harness's process over the vendor tool's figure."""
        return statistics.median(self.runtime_ms) / self.vendor_ms() if self.runtime_ms else None

    def drift(self) -> float | None:
        """The row's p50 over the same call measured right after it (runtime + Python side): far from 1 means the
        machine's load changed between the two windows, and the split does not describe the row."""
        if not self.runtime_ms:
            return None
        return self.harness_ms() / (statistics.median(self.runtime_ms) + statistics.median(self.python_ms))

    def passes(self) -> bool:
        """Same configuration, and a ratio within VENDOR_LIMIT or a gap the measurements account for: the runtime's
        own latency agrees with the tool's and the split right after the row reproduces the row (the rest is the
        Python call), or, without a runtime timer, the ratio is within the limit once the harness's floor is out."""
        if self.config_diff:
            return False
        if self.ratio() <= VENDOR_LIMIT:
            return True
        if self.runtime_ms:
            return self.runtime_ratio() <= VENDOR_LIMIT and self.drift() <= VENDOR_LIMIT
        floor_ms = (self.floor_us or 0.0) / 1e3
        return (self.harness_ms() - floor_ms) / self.vendor_ms() <= VENDOR_LIMIT

    def explanation(self) -> str:
        h_us, v_us = self.harness_ms() * 1e3, self.vendor_ms() * 1e3
        floor = f"{self.floor_us:.1f} us" if self.floor_us is not None else "not measured"
        if self.config_diff:
            return f"NOT COMPARABLE: configuration differs from the vendor's: {self.config_diff}"
        if self.ratio() < 1 / VENDOR_LIMIT:  # not a failure: the harness does not overstate the backend's cost
            return (f"the vendor side is {1 / self.ratio():.2f}x slower than the row (gap {h_us - v_us:+.1f} us): "
                    "load in its window, or a call the row makes cheaper (io_binding); harness floor " + floor)
        if self.ratio() <= VENDOR_LIMIT:
            return f"within {VENDOR_LIMIT}x (gap {h_us - v_us:+.1f} us; harness floor {floor})"
        if self.runtime_ms:
            r_us, p_us = statistics.median(self.runtime_ms) * 1e3, statistics.median(self.python_ms) * 1e3
            text = (f"gap {h_us - v_us:+.1f} us. Right after the row, the same bound call: the runtime's own latency "
                    f"{r_us:.1f} us ({self.runtime_ratio():.2f}x benchmark_app's {v_us:.1f} us) + the Python call "
                    f"around it {p_us:.1f} us (wall - InferRequest.latency per call; the harness floor {floor} of "
                    "it, the call's input dispatch and output copy the rest)")
            if self.options.get("shape") == "dynamic batch":
                text += "; dynamic batch shape"
            if self.drift() > VENDOR_LIMIT:
                text += (f"; but the row's p50 is {self.drift():.2f}x that split: the machine's load changed between "
                         "the two windows")
        else:
            bare = (self.harness_ms() - (self.floor_us or 0.0) / 1e3) / self.vendor_ms()
            text = f"gap {h_us - v_us:+.1f} us; the harness floor {floor}; {bare:.2f}x without it"
        return text if self.passes() else f"NOT EXPLAINED by the measured parts: {text}"

    def details(self) -> list[str]:
        rounds = ", ".join(f"{h:.4f} (IQR {q:.4f}, n={n:,}) / {v:.4f} ({s})" for h, q, n, v, s in
                           zip(self.harness_p50_ms, self.harness_iqr_ms, self.harness_calls, self.vendor_median_ms,
                               self.vendor_spread))
        lines = [f"rounds, harness p50 ms / vendor median ms: {rounds}"]
        if self.runtime_ms:
            lines.append("the bound call right after each row, InferRequest.latency / Python side, ms: "
                         + ", ".join(f"{r:.4f} / {p:.4f}" for r, p in zip(self.runtime_ms, self.python_ms)))
        lines.append(self.explanation())
        if self.options:
            lines.append("options: " + ", ".join(f"{k}={v}" for k, v in self.options.items()))
        return lines


def runtime_split_ms(backend: Backend, x: torch.Tensor, est_call_s: float) -> tuple[float, float]:
    """(median ``InferRequest.latency``, median wall time minus it), ms, over the same calls (about RUNTIME_CALLS_S,
    at most 1,000) of the backend's own bound call: the runtime's part of a call and the Python call around it."""
    calls = max(20, min(1000, int(RUNTIME_CALLS_S / max(est_call_s, 1e-6))))
    with torch.inference_mode():
        fn = backend.bind(x)
        request = backend.request
        fn()
        runtime, python = [], []
        for _ in range(calls):
            t0 = time.perf_counter()
            fn()
            wall_ms = (time.perf_counter() - t0) * 1e3
            runtime.append(request.latency)
            python.append(wall_ms - request.latency)
    return statistics.median(runtime), statistics.median(python)


def harness_round(backend: Backend, x: torch.Tensor, row: VendorRow) -> None:
    """The row exactly as the infer phase measures it (full sampling plan), appended to ``row``."""
    fields, _ = measure(backend, x, quick=False)
    row.harness_p50_ms.append(fields["p50_ms"])
    row.harness_iqr_ms.append(fields["iqr_ms"])
    row.harness_calls.append(fields["n_calls"])
    row.options = dict(backend.fields.get("options") or {})
    if hasattr(backend, "request"):
        runtime, python = runtime_split_ms(backend, x, fields["p50_ms"] / 1e3)
        row.runtime_ms.append(runtime)
        row.python_ms.append(python)


def openvino_side(backend: Backend, x: torch.Tensor, ctx: BenchContext, work_dir: str,
                  seconds: float) -> Callable[[VendorRow], None]:
    """One benchmark_app round per call, on the row's IR (saved uncompressed: f32 weights), input and config."""
    import openvino as ov

    from bench.backends.openvino import cpu_config

    batch, static = int(x.shape[0]), backend.static_shapes
    stem = os.path.join(work_dir, f"{backend.session.name}_{backend.name}_b{batch}")
    ov.save_model(backend.shaped_model(batch if static else None), stem + ".xml", compress_to_fp16=False)
    np.save(stem + ".npy", np.ascontiguousarray(x.detach().cpu().numpy()))
    benchmark_app.write_config(stem + ".json", cpu_config(ctx.threads))
    cmd = benchmark_app.command(stem + ".xml", stem + ".npy", stem + ".json", seconds)
    if not static:
        cmd += ["-data_shape", "[" + ",".join(str(d) for d in x.shape) + "]"]

    def run(row: VendorRow) -> None:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 300)
        report = benchmark_app.parse_report(proc.stdout + proc.stderr)
        row.vendor_median_ms.append(report.median_ms)
        row.vendor_spread.append(f"min {report.min_ms:.4f}, max {report.max_ms:.4f}, n={report.iterations}")
        wanted = {k: v for k, v in row.options.items() if k in benchmark_app.COMPARED}
        row.config_diff.update(benchmark_app.config_differences(wanted, report))
        if report.api != "sync":
            row.config_diff["api"] = ("sync", report.api)
    return run


def ort_loop_side(backend: Backend, x: torch.Tensor, ctx: BenchContext, seconds: float) -> Callable[[VendorRow], None]:
    """A minimal session loop: a default session with the row's threads, ``sess.run`` timed per call."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = int(ctx.threads)
    so.log_severity_level = 3
    sess = ort.InferenceSession(onnx_for(backend.session, ctx), sess_options=so, providers=["CPUExecutionProvider"])
    feed = {sess.get_inputs()[0].name: np.ascontiguousarray(x.detach().float().cpu().numpy())}

    def run(row: VendorRow) -> None:
        for _ in range(10):
            sess.run(None, feed)
        times, end = [], time.perf_counter() + seconds
        while time.perf_counter() < end or len(times) < 10:
            t0 = time.perf_counter()
            sess.run(None, feed)
            times.append(time.perf_counter() - t0)
        q25, q50, q75 = np.percentile(np.asarray(times) * 1e3, [25, 50, 75])
        row.vendor_median_ms.append(float(q50))
        row.vendor_spread.append(f"IQR {q75 - q25:.4f}, n={len(times):,}")
    return run


def vendor_rows(cls: type[Backend], session: ModelSession, ctx: BenchContext, sizes: list[int], *, repeats: int,
                seconds: float, floor_us: float | None, work_dir: str) -> list[VendorRow]:
    """Each batch size of backend ``cls`` on ``session``: ``repeats`` rounds of harness row then vendor side."""
    why = cls.available(ctx.device)
    if why:
        raise RuntimeError(why)
    backend = cls(session, ctx)
    backend.prepare()
    rows = []
    try:
        for bs in sizes:
            x = example_batch(session.name, bs, ctx.device, seed=ctx.seed)
            is_ov = cls.name.startswith("openvino")
            row = VendorRow(session.name, cls.name, bs, "benchmark_app -hint latency (sync API)" if is_ov
                            else "hand-written sess.run loop, default session", floor_us=floor_us)
            harness_round(backend, x, row)  # the first round also binds and compiles what the vendor side reads
            side = openvino_side(backend, x, ctx, work_dir, seconds) if is_ov else ort_loop_side(backend, x, ctx,
                                                                                                  seconds)
            side(row)
            for _ in range(repeats - 1):
                harness_round(backend, x, row)
                side(row)
            rows.append(row)
    finally:
        backend.close()
    return rows
