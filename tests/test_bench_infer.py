"""The infer phase (bench.phases.infer) and the backends it runs (bench.backends), on the CPU.

CUDA-only paths have their own file (test_cuda_paths.py); here every piece of their logic that runs without a GPU is
checked with fakes: the ORT CUDA fallback becoming a failed row, the io_binding checks, the CUDA graph call order.
"""
from __future__ import annotations

import math
import types

import numpy as np
import pytest
import torch

import bench.backends.onnxruntime as ort_backend
import bench.model.export as export
import bench.phases.infer as infer
import zoo
from bench.backends import BACKENDS, selector
from bench.backends.cuda_graph import capture, replay_call
from bench.backends.onnxruntime import OrtCudaBackend, check_on_cuda, device_binding
from bench.backends.torch_eager import EagerBackend
from bench.context import BenchContext, ModelSession, example_batch
from bench.measure import numerics, timing
from bench.phases.infer import InferPhase, fill_speedups
from bench.records import InferRecord

CPU = torch.device("cpu")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def ctx(tmp_path):
    return BenchContext(device=CPU, quick=True, synthetic=True, checkpoints=None, out_dir=str(tmp_path),
                        threads=1, batch_sizes=[1, 4])


@pytest.fixture(scope="module")
def mlp_session():
    torch.manual_seed(0)
    return ModelSession("mlp", zoo.get_model("mlp").eval())


def fresh_session(session: ModelSession) -> ModelSession:
    """The same model with an empty cache (no ONNX export or accuracy reference carried between tests)."""
    return ModelSession(session.name, session.model)


# -- the registry ----------------------------------------------------------------------------------------------


def test_selectors_name_backend_and_precision():
    for key, cls in BACKENDS.items():
        assert selector(cls) == key
    assert (BACKENDS["eager:bf16"].name, BACKENDS["eager:bf16"].precision) == ("eager", "bf16")
    assert BACKENDS["eager:fp16"].available(CPU) is not None  # fp16 autocast rows are a GPU thing


# -- predict matches eager -------------------------------------------------------------------------------------


@pytest.mark.parametrize("sel, atol", [("eager", 0.0), ("compile", 1e-4), ("onnxruntime", 1e-4),
                                       ("eager:bf16", 5e-2)])
def test_predict_matches_eager(sel, atol, mlp_session, ctx):
    session = fresh_session(mlp_session)
    x = example_batch("mlp", 5, CPU, seed=3)
    with torch.inference_mode():
        ref = session.model(x)
    backend = BACKENDS[sel](session, ctx)
    try:
        backend.prepare()
        out = backend.predict(x)
    finally:
        backend.close()
    assert out.device.type == "cpu" and out.dtype == torch.float32 and out.shape == ref.shape
    torch.testing.assert_close(out, ref, atol=atol, rtol=0)


def test_bound_call_runs_the_model_on_the_bound_input(mlp_session, ctx):
    backend = BACKENDS["onnxruntime"](fresh_session(mlp_session), ctx)
    backend.prepare()
    x = example_batch("mlp", 2, CPU, seed=1)
    backend.bind(x)()  # io_binding: the call writes into the bound output, it returns nothing
    out = backend.binding.get_outputs()[0].numpy()
    with torch.inference_mode():
        np.testing.assert_allclose(out, mlp_session.model(x).numpy(), atol=1e-4, rtol=0)
    assert backend.fields["provider"] == "CPUExecutionProvider" and backend.fields["threads"] == ctx.threads


# -- the phase -------------------------------------------------------------------------------------------------


class BrokenPrepare(EagerBackend):
    name = "broken"

    def prepare(self) -> float:
        raise RuntimeError("no such runtime\nsecond line")


class Absent(EagerBackend):
    name = "absent"

    @classmethod
    def available(cls, device):
        return "absent needs its package: pip install absent"


class OomAtFour(EagerBackend):
    name = "oom4"

    def bind(self, x):
        if x.shape[0] == 4:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return super().bind(x)


@pytest.fixture
def fakes(monkeypatch):
    for cls in (BrokenPrepare, Absent, OomAtFour):
        monkeypatch.setitem(infer.BACKENDS, cls.name, cls)


def rows_of(rows, backend):
    return {r.batch_size: r for r in rows if r.backend == backend}


@pytest.mark.slow  # an ONNX export and an accuracy pass per backend: ~7 s on two shared cores
def test_rows_for_every_backend_and_batch(mlp_session, ctx, fakes):
    ctx.backends = ["eager", "absent", "broken", "oom4", "onnxruntime", "cuda_graph"]
    phase = InferPhase()
    rows = phase.run(fresh_session(mlp_session), ctx)
    assert len(rows) == phase.planned_rows("mlp", ctx) == 12
    assert all(isinstance(r, InferRecord) and r.model == "mlp" and r.device == "cpu" for r in rows)

    absent = rows_of(rows, "absent")
    assert {r.status for r in absent.values()} == {"skipped"}
    assert absent[1].reason == "absent needs its package: pip install absent"
    assert rows_of(rows, "cuda_graph")[4].status == "skipped" and "cuda" in rows_of(rows, "cuda_graph")[4].reason

    broken = rows_of(rows, "broken")
    assert {r.status for r in broken.values()} == {"failed"}
    assert broken[1].reason == "RuntimeError: no such runtime"

    oom = rows_of(rows, "oom4")
    assert oom[1].status == "ok"
    assert oom[4].status == "skipped" and oom[4].reason == "out of memory at batch 4" and oom[4].p50_ms is None

    for backend in ("eager", "onnxruntime"):  # a broken neighbour does not stop the others
        for bs, r in rows_of(rows, backend).items():
            assert r.status == "ok", r.reason
            assert r.clock == timing.CLOCK and r.threads == 1
            assert r.n_calls == len(r.latencies_ms) >= 1
            # A percentile is printed exactly when enough calls were timed (a fast backend gets 1,000 even in quick)
            assert (r.p99_ms is None) == (r.n_calls < 1000) and (r.p90_ms is None) == (r.n_calls < 100)
            assert r.samples_per_s == pytest.approx(bs / (r.p50_ms / 1e3))
            assert r.compile_s is not None and r.compile_s >= 0
            assert r.accuracy is not None and r.agreement_samples > 0 and r.accuracy_ok is True
    eager = rows_of(rows, "eager")
    assert eager[1].speedup_vs_eager == 1.0 and eager[1].argmax_agreement == 1.0
    assert eager[1].peak_mem_mb is not None and eager[1].gflops_per_s > 0
    ort = rows_of(rows, "onnxruntime")
    assert ort[4].speedup_vs_eager == pytest.approx(eager[4].p50_ms / ort[4].p50_ms)
    assert ort[1].provider == "CPUExecutionProvider"


def test_failed_phase_names_every_planned_row(mlp_session, ctx):
    ctx.backends = ["eager", "onnxruntime"]
    rows = InferPhase().failed(mlp_session, ctx, ValueError("boom"))
    assert sorted((r.backend, r.batch_size) for r in rows) == [("eager", 1), ("eager", 4), ("onnxruntime", 1),
                                                               ("onnxruntime", 4)]
    assert {r.status for r in rows} == {"failed"} and rows[0].reason == "ValueError: boom"


def test_a_backend_field_outside_the_record_is_a_bug(mlp_session, ctx):
    backend = EagerBackend(mlp_session, ctx)
    backend.fields["compile_mode"] = "default"
    with pytest.raises(ValueError, match="compile_mode"):
        infer.backend_fields(backend)


def test_speedups_divide_eager_fp32_medians_at_the_same_batch():
    rows = [InferRecord(backend="eager", batch_size=1, p50_ms=2.0),
            InferRecord(backend="eager", batch_size=1, precision="bf16", p50_ms=1.0),
            InferRecord(backend="compile", batch_size=1, p50_ms=0.5),
            InferRecord(backend="compile", batch_size=8, p50_ms=0.5),
            InferRecord(backend="compile", batch_size=1, status="failed")]
    fill_speedups(rows)
    assert [r.speedup_vs_eager for r in rows] == [1.0, 2.0, 4.0, None, None]


def test_out_of_memory_is_recognised_from_torch_and_ort():
    assert infer.is_out_of_memory(torch.OutOfMemoryError("x"))
    assert infer.is_out_of_memory(RuntimeError("[ONNXRuntimeError] : 6 : Failed to allocate memory for requested"))
    assert not infer.is_out_of_memory(RuntimeError("shape mismatch"))


# -- ONNX export shared by the phases ------------------------------------------------------------------------


def test_onnx_for_exports_once_and_caches_a_failure(mlp_session, ctx, monkeypatch):
    calls = []

    def fake_export(name, model, path, **kw):
        calls.append(path)
        if len(calls) == 1:
            raise export.OnnxExportError("ONNX export of mlp failed (dynamo: no)")
        return {"onnx_path": path}

    monkeypatch.setattr(export, "export_onnx", fake_export)
    failing, working = fresh_session(mlp_session), fresh_session(mlp_session)
    for _ in range(2):
        with pytest.raises(export.OnnxExportError, match="dynamo: no"):
            export.onnx_for(failing, ctx)
    assert export.onnx_for(working, ctx) == export.onnx_for(working, ctx) == export.onnx_path_for(ctx.out_dir, "mlp")
    assert len(calls) == 2  # one attempt per session, whatever the number of users


# -- ORT CUDA logic without a GPU ------------------------------------------------------------------------------


class FakeSession:
    def __init__(self, providers, binding=None):
        self.providers, self.binding = providers, binding

    def get_providers(self):
        return self.providers

    def get_inputs(self):
        return [types.SimpleNamespace(name="input")]

    def get_outputs(self):
        return [types.SimpleNamespace(name="logits")]

    def io_binding(self):
        return self.binding


def test_a_session_that_fell_back_to_the_cpu_is_refused():
    check_on_cuda(FakeSession(["CUDAExecutionProvider", "CPUExecutionProvider"]))
    with pytest.raises(RuntimeError, match="not CUDAExecutionProvider"):
        check_on_cuda(FakeSession(["CPUExecutionProvider"]))


def test_ort_cuda_fallback_gives_failed_rows(mlp_session, ctx, monkeypatch):
    ctx.device = torch.device("cuda:0")  # only a name here: nothing below touches a GPU before prepare fails
    seen = {}

    def fake_session(path, *, threads, providers):
        seen.update(path=path, threads=threads, providers=providers)
        return FakeSession(["CPUExecutionProvider"])

    monkeypatch.setattr(ort_backend, "onnx_for", lambda session, ctx: "/x/mlp.onnx")
    monkeypatch.setattr(ort_backend, "ort_session", fake_session)
    monkeypatch.setattr(OrtCudaBackend, "available", classmethod(lambda cls, device: None))
    rows = InferPhase().backend_rows(OrtCudaBackend, fresh_session(mlp_session), ctx, None)
    assert [r.status for r in rows] == ["failed", "failed"]
    assert "CPUExecutionProvider, not CUDAExecutionProvider" in rows[0].reason
    assert seen["providers"] == [("CUDAExecutionProvider", numerics.ort_cuda_options(ctx.device))]
    assert seen["threads"] == ctx.threads


def test_io_binding_refuses_an_input_on_another_device():
    class Binding:
        def bind_input(self, **kw):
            raise AssertionError("must not bind")

    with pytest.raises(RuntimeError, match="input is on cpu"):
        device_binding(FakeSession(["CUDAExecutionProvider"], Binding()), "input", "logits", torch.zeros(2, 3), 0)


def test_ort_cuda_says_how_to_install_the_provider(monkeypatch):
    monkeypatch.setattr(ort_backend.ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    why = OrtCudaBackend.available(torch.device("cuda:0"))
    assert "CUDAExecutionProvider" in why and 'pip install -e ".[gpu]"' in why and "pip uninstall -y onnxruntime" in why
    assert "runs on cuda" in OrtCudaBackend.available(CPU)


# -- the maths policy ------------------------------------------------------------------------------------------


def test_maths_policy_turns_tf32_off_and_says_so():
    torch.backends.cudnn.allow_tf32 = True
    policy = numerics.apply_policy(CPU)
    assert torch.backends.cudnn.benchmark is True
    assert torch.backends.cudnn.allow_tf32 is False and torch.backends.cuda.matmul.allow_tf32 is False
    assert torch.get_float32_matmul_precision() == "highest"
    assert policy["cudnn_allow_tf32"] is False and policy["ort_cuda_use_tf32"] == 0
    assert policy["ort_cuda_cudnn_conv_algo_search"] == "EXHAUSTIVE"


def test_ort_cuda_options_follow_the_device_and_the_policy():
    opts = numerics.ort_cuda_options(torch.device("cuda:1"))
    assert opts == {"device_id": 1, "cudnn_conv_algo_search": "EXHAUSTIVE", "use_tf32": 0}
    stream = types.SimpleNamespace(cuda_stream=1234)
    assert numerics.ort_cuda_options("cuda:0", stream)["user_compute_stream"] == "1234"
    with pytest.raises(ValueError):
        numerics.ort_cuda_options(CPU)


def test_strict_fp32_restores_the_previous_state():
    torch.backends.cuda.matmul.allow_tf32 = True
    with numerics.strict_fp32():
        assert torch.backends.cuda.matmul.allow_tf32 is False
    assert torch.backends.cuda.matmul.allow_tf32 is True
    numerics.apply_policy(CPU)


# -- CUDA graph call order with a fake torch.cuda --------------------------------------------------------------


class FakeCuda:
    """Records the order of the calls capture() makes, on CPU tensors."""

    def __init__(self):
        self.log = []
        fake = self

        class Stream:
            def __init__(self, device=None):
                fake.log.append(("Stream", str(device)))
                self.name = "side"

            def wait_stream(self, other):
                fake.log.append(("wait", self.name, other.name))

        class Ctx:
            def __init__(self, what):
                self.what = what

            def __enter__(self):
                fake.log.append(("enter",) + self.what)

            def __exit__(self, *exc):
                fake.log.append(("exit",) + self.what)

        class Graph:
            def replay(self):
                fake.log.append(("replay",))

        self.Stream, self.Ctx, self.CUDAGraph = Stream, Ctx, Graph
        self.current = types.SimpleNamespace(name="current", wait_stream=lambda s: fake.log.append(
            ("wait", "current", s.name)))

    def device(self, device):
        return self.Ctx(("device", str(device)))

    def current_stream(self, device):
        return self.current

    def stream(self, s):
        return self.Ctx(("stream", s.name))

    def graph(self, g, stream):
        return self.Ctx(("capture", stream.name))

    def synchronize(self, device):
        self.log.append(("synchronize", str(device)))


def test_cuda_graph_capture_follows_the_documented_order():
    fake = FakeCuda()
    model = lambda t: fake.log.append(("forward",)) or t * 2  # noqa: E731
    x = torch.ones(2, 3)
    graph, static_x, static_out = capture(model, x, warmup=2, graphs=fake)
    assert fake.log == [("enter", "device", "cpu"), ("Stream", "cpu"), ("wait", "side", "current"),
                        ("enter", "stream", "side"), ("forward",), ("forward",), ("exit", "stream", "side"),
                        ("wait", "current", "side"), ("enter", "capture", "side"), ("forward",),
                        ("exit", "capture", "side"), ("synchronize", "cpu"), ("exit", "device", "cpu")]
    assert static_x is not x and torch.equal(static_x, x) and torch.equal(static_out, x * 2)


def test_cuda_graph_call_copies_the_fresh_input_then_replays():
    fake = FakeCuda()
    static_x, fresh = torch.zeros(2), torch.tensor([3.0, 4.0])
    call = replay_call(fake.CUDAGraph(), static_x, fresh)
    assert fake.log == [] and torch.equal(static_x, torch.zeros(2))
    call()
    assert torch.equal(static_x, fresh) and fake.log == [("replay",)]


def test_latency_fields_are_finite_numbers(mlp_session, ctx):
    backend = EagerBackend(mlp_session, ctx)
    fields, bind_s = infer.measure(backend, example_batch("mlp", 1, CPU), quick=True)
    assert bind_s >= 0 and all(math.isfinite(v) for v in fields["latencies_ms"])


# -- budget and the cross-check against torch.utils.benchmark ------------------------------------------------


def test_a_budget_only_lowers_the_cap():
    plan = infer.row_plan(1, False, 1e-3, None)
    assert plan == timing.sampling_plan(1, False, 1e-3)
    tight = infer.row_plan(1, False, 1e-3, 0.5)
    assert tight["max_seconds"] == 0.5 and tight["min_seconds"] <= 0.5
    assert tight["min_calls"] == plan["min_calls"]  # the call target stays: n_calls shows what the row got
    assert infer.row_plan(1, False, 1e-3, 1e6)["max_seconds"] == plan["max_seconds"]
    slow = infer.row_plan(512, False, 0.5, 5.0)  # a budget-capped slow row: its warm-up is ~10% of its own cap,
    assert slow["max_seconds"] == pytest.approx(1.2 * infer.MIN_CALLS * 0.5) and slow["warmup"] == 1  # and it
    assert slow["max_seconds"] > 5.0  # keeps room for the sample rule's MIN_CALLS calls (the plan priced them)
    assert timing.sampling_plan(512, False, 0.5)["warmup"] > 1
    spent = infer.row_plan(64, False, 1e-3, 0.0)  # a spent budget caps the row: it never lifts the cap
    assert spent["max_seconds"] == infer.MIN_BUDGET_ROW_S and spent["min_seconds"] <= spent["max_seconds"]


def test_crosscheck_produces_both_numbers(mlp_session, ctx):
    from bench.crosscheck.check import crosscheck

    result = crosscheck("mlp", ctx, repeats=1, min_run_time_s=0.01, session=fresh_session(mlp_session))
    assert result["harness_p50_ms"] > 0 and result["timer_median_ms"] > 0
    assert result["ratio"] == pytest.approx(result["harness_p50_ms"] / result["timer_median_ms"])
    assert result["clock"] == timing.CLOCK and len(result["harness_runs_ms"]) == 1
