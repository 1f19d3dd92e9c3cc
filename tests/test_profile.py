"""bench.profile: each profiler's normaliser on its saved output (tests/golden/profile_*), the one record's strict
files, the rule that a profile never runs inside a row's timed calls nor changes the row, and skipped / failed
profiles that leave the row as measured.

The torch, ONNX Runtime and OpenVINO goldens are real captures on lenet at batch 1 (bench.profile's takers, one
thread, on the 2-core EPYC). The TensorRT golden is written by hand in trtexec's documented ``--exportProfile``
layout: no GPU was at hand to capture one.
"""
from __future__ import annotations

import contextlib
import json
import os

import pytest
import torch

import bench.phases.infer as infer
import bench.profile.take as take
import zoo
from bench.backends.noop import NoopBackend
from bench.backends.torch_eager import EagerBackend
from bench.context import BenchContext, ModelSession
from bench.phases.infer import InferPhase
from bench.profile import openvino_counters, ort_nodes, tensorrt_layers, torch_ops
from bench.profile.record import (
    OpStat,
    ProfileRecord,
    finish,
    load_profile,
    load_profiles,
    profile_from_dict,
    row_key,
    save_profile,
    summarise,
)
from bench.profile.request import ProfileRequest

pytestmark = pytest.mark.usefixtures("one_torch_thread")
GOLDEN = os.path.join(os.path.dirname(__file__), "golden")
CPU = torch.device("cpu")


def golden(name: str):
    with open(os.path.join(GOLDEN, name)) as fh:
        return json.load(fh)


# -- the normalisers, on saved outputs ----------------------------------------------------------------------------


def test_torch_self_time_is_duration_minus_direct_children():
    # parent 0..100 holds a 10..40 child (which holds 15..25) and a 50..60 child; another thread's op is no child.
    events = [{"ts": 0, "dur": 100, "pid": 1, "tid": 1}, {"ts": 10, "dur": 30, "pid": 1, "tid": 1},
              {"ts": 15, "dur": 10, "pid": 1, "tid": 1}, {"ts": 50, "dur": 10, "pid": 1, "tid": 1},
              {"ts": 20, "dur": 5, "pid": 1, "tid": 2}]
    assert torch_ops.self_times_us(events) == [60.0, 20.0, 10.0, 10.0, 5.0]


def test_torch_normaliser_on_golden_trace():
    ops, per_call = torch_ops.normalise(golden("profile_torch_lenet_b1.trace.json"))
    by = {op.name: op for op in ops}
    assert len(per_call) == 2  # two bench.call spans: two profiled calls
    assert by["aten::mkldnn_convolution"].calls == 4  # two convolutions per call
    assert by["aten::mkldnn_convolution"].input_shapes == "1x1x28x28, 16x1x5x5, 16"
    assert by["aten::addmm"].calls == 4 and by["aten::clamp_min"].calls == 6
    assert all(op.activity == "cpu" for op in ops)
    # Self times add up to what the calls hold (a wrapper op's children are not counted twice).
    assert sum(per_call) == pytest.approx(sum(op.self_ms for op in ops))
    trace = golden("profile_torch_lenet_b1.trace.json")["traceEvents"]
    calls_us = sum(e["dur"] for e in trace if e.get("name") == torch_ops.CALL_MARK)
    assert sum(op.self_ms for op in ops) <= calls_us / 1e3
    # aten::conv2d's one direct child is aten::convolution: its self time is its time outside that child.
    conv2d, convolution = ([e["dur"] for e in trace if e.get("name") == n] for n in ("aten::conv2d", "aten::convolution"))
    assert by["aten::conv2d"].self_ms == pytest.approx((sum(conv2d) - sum(convolution)) / 1e3)
    shares = finish(ops)
    assert sum(op.share for op in shares) == pytest.approx(1.0)
    assert [op.self_ms for op in shares] == sorted((op.self_ms for op in shares), reverse=True)


def test_torch_normaliser_takes_kernels_as_the_cuda_activity():
    trace = {"traceEvents": [
        {"ph": "X", "cat": "user_annotation", "name": torch_ops.CALL_MARK, "ts": 0, "dur": 100, "pid": 1, "tid": 1},
        {"ph": "X", "cat": "cpu_op", "name": "aten::addmm", "ts": 1, "dur": 20, "pid": 1, "tid": 1},
        {"ph": "X", "cat": "kernel", "name": "sgemm_128x64", "ts": 30, "dur": 40, "pid": 0, "tid": 7}]}
    ops, per_call = torch_ops.normalise(trace)
    kernel = [op for op in ops if op.activity == "cuda"]
    assert [(k.name, k.self_ms) for k in kernel] == [("sgemm_128x64", 0.04)]
    assert per_call == [pytest.approx(0.04)]  # a CUDA row's per-call time is its kernels' device time


def test_ort_normaliser_on_golden_profile_keeps_only_the_last_runs():
    events = golden("profile_ort_lenet_b1.json")
    ops, per_call = ort_nodes.normalise(events, last_runs=2)
    by = {op.name: op for op in ops}
    assert len(per_call) == 2 and all(op.calls == 2 for op in ops)  # the warm run is left out
    assert by["/Relu_1_output_0_nchwc"].op_type == "Conv"
    assert by["/Relu_1_output_0_nchwc"].input_shapes == "1x16x14x14, 32x16x5x5, 32"
    assert by["fused /fc1/Gemm"].op_type == "FusedGemm"
    kernel_us = [e["dur"] for e in events if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")]
    assert sum(op.self_ms for op in ops) == pytest.approx(sum(kernel_us[-len(ops) * 2:]) / 1e3)
    every, _ = ort_nodes.normalise(events)
    assert all(op.calls == 3 for op in every)


def test_openvino_normaliser_undoes_the_running_mean():
    native = golden("profile_openvino_lenet_b1.json")
    ops, per_call = openvino_counters.normalise(native)
    by = {op.name: op for op in ops}
    first = {c["node_name"]: c["real_time_us"] for c in native["after_warm"]}
    last = {c["node_name"]: c["real_time_us"] for c in native["after_last"]}
    name = "/conv1/Conv/WithoutBiases"
    n, w = native["calls"], native["warm_calls"]
    assert by[name].self_ms == pytest.approx(((n + w) * last[name] - w * first[name]) / 1e3)
    assert by[name].op_type == "Convolution (brgconv_avx512_f32)"
    assert "/Relu" not in by and "x" not in by  # fused or not run: no time of their own
    assert per_call == []


def test_tensorrt_normaliser_on_trtexec_export_profile():
    ops, per_call = tensorrt_layers.normalise(golden("profile_tensorrt_export.json"))
    assert len(ops) == 4 and all(op.activity == "cuda" and op.calls == 10 for op in ops)
    assert sum(op.self_ms for op in ops) == pytest.approx(1.0)
    layout = tensorrt_layers.export_profile({"a": [0.5, 0.3], "b": [0.2, 0.2]}, 2)
    again, _ = tensorrt_layers.normalise(layout)
    assert layout[0] == {"count": 2} and [(op.name, op.self_ms) for op in again] == [("a", 0.8), ("b", 0.4)]


# -- the record ----------------------------------------------------------------------------------------------------


def a_profile(**kw) -> ProfileRecord:
    rec = ProfileRecord(row=row_key("lenet", "infer", "eager", 1, "fp32"), model="lenet", phase="infer",
                        backend="eager", precision="fp32", batch_size=1, device="cpu", profiler="test",
                        row_p50_ms=1.0)
    for k, v in kw.items():
        setattr(rec, k, v)
    return rec


def test_summarise_uses_the_median_call_and_measures_overhead():
    rec = a_profile()
    ops = [OpStat("conv", "Conv", "cpu", 3, 2.7, 0.0), OpStat("gemm", "Gemm", "cpu", 3, 0.3, 0.0)]
    summarise(rec, ops, [0.5, 0.6, 1.9], [0.0012, 0.0011, 0.0013], [0.0010, 0.0010, 0.0009])
    assert rec.profiled_ms_per_call == pytest.approx(0.6)  # the median call, not the mean 1.0 a slow call makes
    assert rec.coverage == pytest.approx(0.6)
    assert rec.overhead == pytest.approx(0.2)
    assert [op.name for op in rec.top_ops(0.8, at_least=1)] == ["conv"]


def test_profile_files_round_trip_and_load_strictly(tmp_path):
    rec = a_profile(ops=[OpStat("conv", "Conv", "cpu", 2, 0.5, 1.0, "1x1x28x28")], calls=2)
    save_profile(rec, str(tmp_path))
    assert load_profile(str(tmp_path / f"{rec.row}.json")) == rec
    (tmp_path / f"{rec.row}.trace.json").write_text("{}")  # a native trace beside it is not a record
    (tmp_path / f"{rec.row}.trace.ort_2026-12-07_21-00-00.json").write_text("[]")  # nor ORT's file before its rename
    assert list(load_profiles(str(tmp_path))) == [rec.row]
    for bad in ({"surprise": 1}, {"batch_size": "one"}, {"status": "maybe"}):
        with pytest.raises(ValueError):
            profile_from_dict({**rec.to_dict(), **bad})
    data = rec.to_dict()
    data["ops"][0]["activity"] = "tpu"
    with pytest.raises(ValueError, match="ops"):
        profile_from_dict(data)


# -- the hook: after the timed calls, never inside them, never changing the row -----------------------------------


@pytest.fixture
def lenet_session():
    torch.manual_seed(0)
    return ModelSession("lenet", zoo.get_model("lenet").eval())


def measured_rows(session, tmp_path, monkeypatch, backend_cls, profile: ProfileRequest | None):
    """The infer phase's rows for ``backend_cls`` at batch 1, 12 timed calls each; every call of the bound callable
    logged as (inside the timed calls?, profiler on?)."""
    ctx = BenchContext(device=CPU, quick=True, synthetic=True, checkpoints=None, out_dir=str(tmp_path), threads=1,
                       batch_sizes=[1], profile=profile)
    log: list[tuple[bool, bool]] = []
    state = {"timed": False}
    real_bind, real_sample = backend_cls.bind, infer.timing.sample_latencies

    def bind(self, x):
        fn = real_bind(self, x)

        def logged():
            log.append((state["timed"], torch._C._autograd._profiler_enabled()))
            return fn()
        return logged

    def sample(fn, sync, **plan):
        state["timed"] = True
        try:
            return real_sample(fn, sync, **plan)
        finally:
            state["timed"] = False

    with monkeypatch.context() as patch:
        patch.setattr(backend_cls, "bind", bind)
        patch.setattr(infer.timing, "sample_latencies", sample)
        patch.setattr(infer, "row_plan", lambda *a, **k: {"min_calls": 12, "min_seconds": 0.0, "warmup": 2,
                                                        "max_seconds": None})
        rows = InferPhase().backend_rows(backend_cls, session, ctx, None)
    return rows, log, ctx


def test_profile_runs_after_the_timed_calls_and_never_among_them(lenet_session, tmp_path, monkeypatch):
    plain, plain_log, _ = measured_rows(lenet_session, tmp_path / "a", monkeypatch, EagerBackend, None)
    rows, log, ctx = measured_rows(lenet_session, tmp_path / "b", monkeypatch, EagerBackend, ProfileRequest())
    assert rows[0].ok and plain[0].ok
    assert rows[0].n_calls == plain[0].n_calls == len(rows[0].latencies_ms) == 12  # the same timed calls
    assert sum(timed for timed, _ in log) == sum(timed for timed, _ in plain_log) == 12 + 2  # + warm-up
    assert not any(timed and profiling for timed, profiling in log)  # the profiler is off in every timed call
    profiled = [i for i, (timed, on) in enumerate(log) if on]
    last_timed = max(i for i, (timed, _) in enumerate(log) if timed)
    assert profiled and min(profiled) > last_timed  # taken, and only after the row's timed calls
    prof = load_profile(os.path.join(ctx.out_dir, "profiles", "lenet.infer.eager.b1.fp32.json"))
    assert prof.ok and prof.calls == len(profiled) and prof.row_p50_ms == rows[0].p50_ms
    assert os.path.isfile(os.path.join(ctx.out_dir, "profiles", prof.trace))
    assert prof.top_ops() and sum(op.share for op in prof.top_ops()) >= 0.8


def test_a_row_the_request_does_not_name_is_not_profiled(lenet_session, tmp_path, monkeypatch):
    request = ProfileRequest(("lenet.infer.onnxruntime.*",))
    rows, log, ctx = measured_rows(lenet_session, tmp_path, monkeypatch, EagerBackend, request)
    assert rows[0].ok and not any(on for _, on in log)
    assert not os.path.exists(os.path.join(ctx.out_dir, "profiles", "lenet.infer.eager.b1.fp32.json"))


def test_unsupported_profiler_is_a_skipped_profile_and_a_broken_one_a_failed_profile(lenet_session, tmp_path,
                                                                                     monkeypatch):
    rows, _, ctx = measured_rows(lenet_session, tmp_path / "noop", monkeypatch, NoopBackend, ProfileRequest())
    prof = load_profile(os.path.join(ctx.out_dir, "profiles", "lenet.infer.noop.b1.fp32.json"))
    assert rows[0].ok and prof.status == "skipped" and "noop" in prof.reason

    def broken(*a, **k):
        raise RuntimeError("profiler exploded")

    monkeypatch.setattr(take, "run_profiler", broken)
    rows, _, ctx = measured_rows(lenet_session, tmp_path / "eager", monkeypatch, EagerBackend, ProfileRequest())
    prof = load_profile(os.path.join(ctx.out_dir, "profiles", "lenet.infer.eager.b1.fp32.json"))
    assert rows[0].ok and rows[0].n_calls == 12
    assert prof.status == "failed" and "profiler exploded" in prof.reason


def test_a_training_row_profiles_one_steady_window_after_its_timed_ones(tmp_path):
    from bench.phases.train.phase import RowPlan, TimedRow, time_rows

    ctx = BenchContext(device=CPU, quick=True, synthetic=True, checkpoints=None, out_dir=str(tmp_path), threads=1,
                       profile=ProfileRequest())
    w = torch.randn(64, 64, requires_grad=True)
    log: list[bool] = []

    def step() -> int:
        log.append(torch._C._autograd._profiler_enabled())
        (w @ w).sum().backward()
        return 8

    row = TimedRow(RowPlan("compute"), step, contextlib.ExitStack())
    time_rows([row], ctx.sync, quick=True)
    row.steps_per_window, row.rates, timed = 3, [100.0, 80.0, 120.0], len(log)  # a window of 3 steps, to count
    take.profile_train_rows([row], "lenet", ctx)
    assert not any(log[:timed]) and log[timed:] == [False] * 3 + [True] * 3  # off window, then the profiled one
    key = "lenet.train.compute.b32.fp32"
    prof = load_profile(os.path.join(ctx.out_dir, "profiles", f"{key}.json"))
    assert prof.ok and prof.calls == 3 and prof.phase == "train" and prof.backend == "compute"
    assert prof.row_p50_ms == pytest.approx(1e3 * 32 / 100.0)  # the median window's time per step at batch 32
    assert any(op.name == "aten::mm" for op in prof.ops)
