"""Latency sampling and statistics (bench.timing) and the inference records built on them (bench.infer)."""
from __future__ import annotations

import time

import numpy as np
import pytest
import torch

import bench.timing as timing
from bench.common import BenchContext, prepare_model
from bench.infer import fill_speedups, is_out_of_memory, measure_inference, sampling_plan
from bench.timing import latency_stats, sample_latencies


class FakeClock:
    """Stands in for bench.timing's clock; each fake call advances it by ``step_s``."""

    def __init__(self, step_s: float):
        self.now, self.step_s, self.calls = 100.0, step_s, 0

    def perf_counter(self) -> float:
        return self.now

    def fn(self):
        self.calls += 1
        self.now += self.step_s


@pytest.fixture
def clock(monkeypatch):
    def make(step_s: float) -> FakeClock:
        c = FakeClock(step_s)
        monkeypatch.setattr(timing, "_clock", c.perf_counter)
        return c

    yield make


def test_stats_of_1_to_100_ms():
    s = latency_stats([i / 1000 for i in range(1, 101)], batch_size=4)
    # numpy's linear interpolation: position (n - 1) * q between the sorted values
    assert s["p50_ms"] == pytest.approx(50.5)
    assert s["p90_ms"] == pytest.approx(90.1)
    assert s["p99_ms"] == pytest.approx(99.01)
    assert s["mean_ms"] == pytest.approx(50.5)
    assert s["iqr_ms"] == pytest.approx(75.25 - 25.75)
    assert s["samples"] == 100
    assert s["samples_per_s"] == pytest.approx(4 / 0.0505)


def test_stats_single_sample_and_order_independence():
    one = latency_stats([0.002], batch_size=1)
    assert one["p50_ms"] == one["p99_ms"] == one["mean_ms"] == pytest.approx(2.0)
    assert one["iqr_ms"] == 0.0
    rng = np.random.default_rng(0)
    xs = rng.uniform(0.001, 0.01, 57)
    assert latency_stats(xs, 8) == pytest.approx(latency_stats(rng.permutation(xs), 8))


@pytest.mark.parametrize("bad", [[], [float("nan")], [-0.001, 0.002]])
def test_stats_reject_bad_samples(bad):
    with pytest.raises(ValueError):
        latency_stats(bad, batch_size=1)


def test_warmup_calls_are_not_sampled(clock):
    c = clock(0.01)
    samples = sample_latencies(c.fn, "cpu", min_samples=7, min_seconds=0.0, warmup=3)
    assert len(samples) == 7
    assert c.calls == 10
    assert samples == pytest.approx([0.01] * 7)


def test_min_seconds_extends_sampling(clock):
    c = clock(0.01)
    samples = sample_latencies(c.fn, torch.device("cpu"), min_samples=5, min_seconds=0.5, warmup=0)
    assert len(samples) == 50  # 5 samples would be 0.05 s; the 0.5 s floor wins
    assert sum(samples) == pytest.approx(0.5)


def test_min_samples_extends_sampling(clock):
    c = clock(0.2)
    samples = sample_latencies(c.fn, "cpu", min_samples=12, min_seconds=0.5, warmup=1)
    assert len(samples) == 12


def test_max_seconds_caps_sampling(clock):
    c = clock(0.01)
    samples = sample_latencies(c.fn, "cpu", min_samples=1000, min_seconds=0.0, warmup=0, max_seconds=0.1)
    assert 1 <= len(samples) <= 11
    # a call longer than the cap still yields its one sample
    slow = clock(5.0)
    assert sample_latencies(slow.fn, "cpu", min_samples=10, min_seconds=0.0, warmup=0, max_seconds=1.0) == [5.0]


def test_min_samples_must_be_positive():
    with pytest.raises(ValueError):
        sample_latencies(lambda: None, "cpu", min_samples=0, min_seconds=0.0, warmup=0)


def test_real_clock_never_undercounts_a_sleep():
    samples = sample_latencies(lambda: time.sleep(0.002), "cpu", min_samples=5, min_seconds=0.0, warmup=1)
    assert len(samples) == 5
    assert min(samples) >= 0.002


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_samples_include_the_queued_kernels():
    # torch.cuda._sleep returns at once on the host; only a sync-correct timer sees the GPU time.
    fn = lambda: torch.cuda._sleep(50_000_000)  # noqa: E731
    fn()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn()
    torch.cuda.synchronize()
    wall_s = time.perf_counter() - t0
    samples = sample_latencies(fn, "cuda", min_samples=3, min_seconds=0.0, warmup=1)
    assert np.median(samples) >= 0.5 * wall_s


@pytest.mark.skipif(not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()),
                    reason="needs MPS")
def test_mps_samples_include_the_device_work():
    x = torch.randn(2048, 2048, device="mps")
    samples = sample_latencies(lambda: x @ x, "mps", min_samples=3, min_seconds=0.0, warmup=1)
    assert min(samples) > 0


# -- bench.infer on top of the sampler -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ctx():
    return BenchContext(device=torch.device("cpu"), quick=True, synthetic=True, checkpoints=None)


def test_sampling_plan_meets_the_minimums():
    assert sampling_plan(1, quick=False)["min_samples"] >= 200 and sampling_plan(1, False)["min_seconds"] >= 1.0
    assert sampling_plan(64, quick=False)["min_samples"] >= 30 and sampling_plan(64, False)["min_seconds"] >= 1.0
    assert sampling_plan(1, quick=True)["min_samples"] >= 30 and sampling_plan(64, quick=True)["min_samples"] >= 5


def test_eager_records_follow_the_contract(ctx):
    model, _ = prepare_model("mlp", ctx)
    rows = measure_inference("mlp", model, ctx, batch_sizes=[1, 4], backends=["eager", "cuda_graph"])
    eager = [r for r in rows if r["backend"] == "eager"]
    assert [r["batch_size"] for r in eager] == [1, 4]
    for r in eager:
        assert r["phase"] == "infer" and r["status"] == "ok" and r["precision"] == "fp32"
        assert r["samples"] >= sampling_plan(r["batch_size"], True)["min_samples"]
        assert 0 < r["p50_ms"] <= r["p90_ms"] <= r["p99_ms"]
        assert r["samples_per_s"] == pytest.approx(r["batch_size"] / (r["mean_ms"] / 1e3))
        assert r["speedup_vs_eager"] == 1.0 and r["threads"] == torch.get_num_threads()
        assert r["gflops_per_s"] > 0 and r["peak_mem_mb"] > 0
    graph = [r for r in rows if r["backend"] == "cuda_graph"]
    assert len(graph) == 1 and graph[0]["status"] == "skipped" and graph[0]["batch_size"] == 1


def test_a_broken_backend_is_a_row_and_the_rest_still_runs(ctx, monkeypatch):
    import bench.infer as infer

    def boom(self, x):
        if x.shape[0] == 2:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        raise RuntimeError("kernel exploded\nmore detail")

    monkeypatch.setattr(infer._Eager, "prepare", boom)
    model, _ = prepare_model("mlp", ctx)
    rows = measure_inference("mlp", model, ctx, batch_sizes=[1, 2], backends=["eager", "onnxruntime"])
    by = {(r["backend"], r["batch_size"]): r for r in rows}
    assert by[("eager", 1)]["status"] == "failed" and by[("eager", 1)]["reason"] == "RuntimeError: kernel exploded"
    assert by[("eager", 2)]["status"] == "skipped" and by[("eager", 2)]["reason"] == "out of memory at batch 2"
    assert by[("onnxruntime", 1)]["status"] == "skipped" and "no ONNX file" in by[("onnxruntime", 1)]["reason"]


def test_unknown_backend_is_refused(ctx):
    with pytest.raises(ValueError, match="unknown backend"):
        measure_inference("mlp", torch.nn.Identity(), ctx, batch_sizes=[1], backends=["tensorrt"])


def test_speedups_pair_by_batch_size():
    rows = [{"phase": "infer", "status": "ok", "backend": "eager", "batch_size": 1, "p50_ms": 2.0},
            {"phase": "infer", "status": "ok", "backend": "onnxruntime", "batch_size": 1, "p50_ms": 0.5},
            {"phase": "infer", "status": "ok", "backend": "onnxruntime", "batch_size": 8, "p50_ms": 1.0},
            {"phase": "infer", "status": "failed", "backend": "compile", "batch_size": 1}]
    fill_speedups(rows)
    assert rows[0]["speedup_vs_eager"] == 1.0 and rows[1]["speedup_vs_eager"] == 4.0
    assert rows[2]["speedup_vs_eager"] is None and "speedup_vs_eager" not in rows[3]


def test_out_of_memory_detection():
    assert is_out_of_memory(torch.OutOfMemoryError("CUDA out of memory"))
    assert is_out_of_memory(RuntimeError("[ONNXRuntimeError] : 6 : Failed to allocate memory for requested buffer"))
    assert not is_out_of_memory(RuntimeError("shape mismatch"))
