"""Every CUDA path of the infer and parity phases, on a real GPU (skipped without CUDA).

Each backend runs on cuda:0 and, with more than one GPU, on cuda:1, both with the chosen GPU current (what the driver
does) and with another GPU current (every piece passes its device explicitly, so the result must not change). The
CPU-side logic of these paths (fallback detection, io_binding checks, the graph call order) is in test_bench_infer.py.
"""
from __future__ import annotations

import pytest
import torch

import bench.backends.onnxruntime as ort_backend
import zoo
from bench.backends import BACKENDS
from bench.backends.cuda_graph import capture, replay_call
from bench.backends.onnxruntime import CPU_PROVIDER, OrtCudaBackend
from bench.context import BenchContext, ModelSession, example_batch
from bench.measure import numerics, timing
from bench.phases.infer import InferPhase
from bench.phases.parity import ParityPhase
from bench.records import PERCENTILE_MIN_CALLS

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA paths need a CUDA device")

GPUS = torch.cuda.device_count() if torch.cuda.is_available() else 0
DEVICES = [torch.device(f"cuda:{i}") for i in range(min(GPUS, 2))] or [torch.device("cuda:0")]
FP32_SELECTORS = ("eager", "compile", "cuda_graph", "onnxruntime", "onnxruntime-cuda")


@pytest.fixture(params=DEVICES, ids=str)
def device(request):
    """The chosen GPU, made current as the driver makes it (restored after)."""
    before = torch.cuda.current_device()
    torch.cuda.set_device(request.param)
    numerics.apply_policy(request.param)
    yield request.param
    torch.cuda.set_device(before)


@pytest.fixture
def other_current(device):
    """Another GPU current while ``device`` is measured (skipped with one GPU)."""
    if GPUS < 2:
        pytest.skip("needs two GPUs")
    torch.cuda.set_device(1 - device.index)
    return device


def context(device, tmp_path, **kw) -> BenchContext:
    return BenchContext(device=device, quick=True, synthetic=True, checkpoints=None, out_dir=str(tmp_path),
                        threads=torch.get_num_threads(), **kw)


def session_on(name: str, device: torch.device) -> ModelSession:
    torch.manual_seed(0)
    return ModelSession(name, zoo.get_model(name).to(device).eval())


def predict_vs_eager(selector: str, name: str, device: torch.device, tmp_path, atol: float) -> None:
    cls = BACKENDS[selector]
    why = cls.available(device)
    if why:
        pytest.skip(why)
    session, ctx = session_on(name, device), context(device, tmp_path)
    x = example_batch(name, 3, device, seed=5)
    with torch.inference_mode(), numerics.strict_fp32():
        ref = session.model(x).float().cpu()
    backend = cls(session, ctx)
    try:
        backend.prepare()
        with torch.inference_mode():
            backend.bind(x)()  # the timed call runs (and is waited for) before predict
        backend.sync()
        out = backend.predict(x)
    finally:
        backend.close()
    torch.testing.assert_close(out, ref, atol=atol, rtol=0)


@pytest.mark.parametrize("selector", FP32_SELECTORS)
@pytest.mark.parametrize("name", ["mlp", "lenet"])
def test_backend_matches_eager_on_the_chosen_gpu(selector, name, device, tmp_path):
    predict_vs_eager(selector, name, device, tmp_path, atol=1e-4)


@pytest.mark.parametrize("selector", FP32_SELECTORS)
def test_backend_uses_its_device_not_the_current_one(selector, other_current, tmp_path):
    predict_vs_eager(selector, "lenet", other_current, tmp_path, atol=1e-4)
    assert torch.cuda.current_device() != other_current.index  # nothing switched the current device behind us


@pytest.mark.parametrize("selector", ["eager:bf16", "eager:fp16"])
def test_autocast_rows_stay_close_to_fp32(selector, device, tmp_path):
    predict_vs_eager(selector, "lenet", device, tmp_path, atol=5e-2)


def test_cuda_graph_call_copies_a_fresh_input_and_replays(device):
    model = session_on("lenet", device).model
    with torch.inference_mode():
        x, fresh = example_batch("lenet", 2, device, seed=1), example_batch("lenet", 2, device, seed=2)
        graph, static_x, static_out = capture(model, x)
        assert static_x.device == static_out.device == device
        torch.testing.assert_close(static_out, model(x), atol=1e-5, rtol=0)
        replay_call(graph, static_x, fresh)()
        torch.cuda.synchronize(device)
        torch.testing.assert_close(static_x, fresh, atol=0, rtol=0)
        torch.testing.assert_close(static_out, model(fresh), atol=1e-5, rtol=0)


def test_cuda_graph_captures_on_a_gpu_that_is_not_current(other_current):
    model = session_on("mlp", other_current).model
    with torch.inference_mode():
        x = example_batch("mlp", 4, other_current, seed=3)
        graph, static_x, static_out = capture(model, x)
        graph.replay()
        torch.cuda.synchronize(other_current)
        assert static_out.device == other_current
        torch.testing.assert_close(static_out, model(x), atol=1e-5, rtol=0)


def test_ort_cuda_session_runs_on_the_chosen_gpu_with_the_policy(device, tmp_path):
    if OrtCudaBackend.available(device):
        pytest.skip(OrtCudaBackend.available(device))
    backend = OrtCudaBackend(session_on("mlp", device), context(device, tmp_path))
    backend.prepare()
    try:
        assert backend.sess.get_providers()[0] == "CUDAExecutionProvider"
        opts = backend.sess.get_provider_options()["CUDAExecutionProvider"]
        assert opts["device_id"] == str(device.index)
        assert opts["use_tf32"] == "0" and opts["cudnn_conv_algo_search"] == "EXHAUSTIVE"
    finally:
        backend.close()


def test_ort_cuda_that_lands_on_the_cpu_is_a_failed_row(device, tmp_path, monkeypatch):
    if OrtCudaBackend.available(device):
        pytest.skip(OrtCudaBackend.available(device))
    real = ort_backend.ort_session
    monkeypatch.setattr(ort_backend, "ort_session", lambda path, *, threads, providers: real(
        path, threads=threads, providers=[CPU_PROVIDER]))
    ctx = context(device, tmp_path, batch_sizes=[1])
    rows = InferPhase().backend_rows(OrtCudaBackend, session_on("mlp", device), ctx, None)
    assert [r.status for r in rows] == ["failed"] and "not CUDAExecutionProvider" in rows[0].reason


def test_maths_policy_keeps_fp32_matmul_ieee(device):
    policy = numerics.apply_policy(device)
    assert policy["cudnn_allow_tf32"] is False and torch.backends.cudnn.benchmark is True
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(512, 512, generator=g), torch.randn(512, 512, generator=g)
    exact = a.double() @ b.double()
    got = (a.to(device) @ b.to(device)).double().cpu()
    # TF32 keeps 10 mantissa bits (relative error ~1e-3); IEEE fp32 over 512 terms stays far below 1e-4.
    assert ((got - exact).abs().max() / exact.abs().max()).item() < 1e-4


def test_infer_phase_rows_on_the_gpu_share_one_clock(device, tmp_path):
    ctx = context(device, tmp_path, batch_sizes=[1, 8],
                  backends=["eager", "eager:fp16", "compile", "cuda_graph", "onnxruntime-cuda", "onnxruntime"])
    rows = InferPhase().run(session_on("lenet", device), ctx)
    assert len(rows) == 12
    for r in rows:
        assert r.device == "cuda"
        if r.backend == "onnxruntime-cuda" and r.status == "skipped":
            continue  # an onnxruntime without the CUDA provider: the reason says how to install it
        assert r.status == "ok", (r.backend, r.reason)
        assert r.clock == timing.CLOCK and r.n_calls >= 1 and r.threads >= 1
        # The rule, not a count: a ~20 us cuda_graph call fits 1,000 calls in a quick window, a slow one does not.
        assert (r.p99_ms is None) == (r.n_calls < PERCENTILE_MIN_CALLS[99])
        assert (r.p90_ms is None) == (r.n_calls < PERCENTILE_MIN_CALLS[90])
        assert r.speedup_vs_eager is not None and r.compile_s is not None
        assert r.accuracy is not None and r.agreement_samples > 0
        if r.precision == "fp32":
            assert r.accuracy_ok is True, (r.backend, r.accuracy_delta_pts, r.max_abs_diff)
    by_backend = {r.backend: r for r in rows if r.batch_size == 8 and r.precision == "fp32"}
    assert by_backend["eager"].peak_mem_mb > 0
    assert by_backend["onnxruntime"].provider == "CPUExecutionProvider"
    # The CPU provider computes on the host: no % of the GPU's peak, and its memory is labelled host memory.
    assert by_backend["onnxruntime"].pct_of_peak is None and by_backend["onnxruntime"].mem_device == "cpu"
    assert by_backend["eager"].mem_device == "cuda" and by_backend["eager"].pct_of_peak is not None
    for name in ("eager", "compile", "cuda_graph"):  # device time from events on torch's stream, beside wall time
        r = by_backend[name]
        assert r.device_p50_ms > 0 and r.device_n_calls >= 1 and r.back_to_back_samples_per_s > 0
    assert by_backend["onnxruntime"].device_p50_ms is None and by_backend["onnxruntime-cuda"].device_p50_ms is None
    if by_backend["onnxruntime-cuda"].ok:
        assert by_backend["onnxruntime-cuda"].peak_mem_mb is None  # ORT's arena: not seen, not guessed


def test_parity_against_eager_on_the_gpu(device, tmp_path):
    (r,) = ParityPhase().run(session_on("lenet", device), context(device, tmp_path))
    assert r.status == "ok" and r.parity_ok is True and r.dynamic_batch_ok is True


def test_tensorrt_rows_have_an_engine_per_batch_and_no_allocator_memory(device, tmp_path):
    from bench.backends.tensorrt import TensorRtBackend

    if TensorRtBackend.available(device):
        pytest.skip(TensorRtBackend.available(device))
    ctx = context(device, tmp_path, batch_sizes=[1, 8])
    session = session_on("lenet", device)
    rows = InferPhase().backend_rows(TensorRtBackend, session, ctx, None)
    assert [r.status for r in rows] == ["ok", "ok"], [r.reason for r in rows]
    assert all(r.peak_mem_mb is None and "outside torch's caching allocator" in r.note for r in rows)
    assert all(r.accuracy_ok is not False for r in rows)
    predict_vs_eager("tensorrt", "lenet", device, tmp_path, atol=1e-4)
