"""pytest-benchmark suite: every zoo model x {one training step, eager inference, ONNX Runtime inference}.

Run with ``pytest --benchmark-only`` (``tests/benchmarks --bench-device cuda`` for a GPU). Every timed call ends
with a device synchronisation, so a round is the real time of the work, not of queuing it. The number of rounds
comes from one probe call, so AlexNet's ~10 s training step gets a few rounds and the MLP's sub-millisecond
inference gets hundreds; ``extra_info`` carries samples_per_s (batch size / median round), batch_size, device and
backend for the JSON report.
"""
from __future__ import annotations

import time

import onnxruntime as ort
import pytest
import torch

import zoo
from bench.common import BenchContext, example_batch, prepare_model
from bench.export import ort_session
from zoo.engine import StepOptions, build_optimizer, synchronize, train_step

MODELS = zoo.list_models()
INFER_BATCH = 1  # the latency case; throughput at large batches is the harness's infer phase


def _rounds(target, budget_s: float, lo: int, hi: int) -> int:
    """Rounds that fit ``budget_s``, from one probe call (it also warms caches and the allocator)."""
    t0 = time.perf_counter()
    target()
    dt = time.perf_counter() - t0
    return max(lo, min(hi, int(budget_s / max(dt, 1e-6))))


def _run(benchmark, target, *, device: torch.device, backend: str, batch_size: int, budget_s: float, lo: int,
         hi: int, **extra) -> None:
    def setup():  # nothing queued from the previous round may spill into the next one
        synchronize(device)

    rounds = _rounds(target, budget_s, lo, hi)
    benchmark.pedantic(target, setup=setup, rounds=rounds, warmup_rounds=1, iterations=1)
    benchmark.extra_info.update(batch_size=batch_size, device=device.type, backend=backend,
                                threads=torch.get_num_threads(), **extra)
    stats = getattr(benchmark, "stats", None)  # None under --benchmark-disable
    if stats:
        benchmark.extra_info["samples_per_s"] = batch_size / stats.stats.median


def _model(name: str, device: torch.device) -> torch.nn.Module:
    model, _ = prepare_model(name, BenchContext(device=device, checkpoints=None))  # random init, seeded
    return model


@pytest.mark.parametrize("name", MODELS)
def test_train_step(benchmark, name, bench_device):
    spec = zoo.get_spec(name)
    bs = spec.recipe.batch_size
    model = _model(name, bench_device).train()
    optimizer = build_optimizer(spec.recipe, model)
    opts = StepOptions(bench_device)
    x = example_batch(name, bs, bench_device)
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, spec.num_classes, (bs,), generator=g).to(bench_device)

    def target():
        train_step(model, optimizer, x, y, opts)
        synchronize(bench_device)

    benchmark.group = "train_step"
    _run(benchmark, target, device=bench_device, backend="eager", batch_size=bs, budget_s=3.0, lo=3, hi=30,
         phase="train", optimizer=spec.recipe.optimizer)


@pytest.mark.parametrize("name", MODELS)
def test_eager_infer(benchmark, name, bench_device):
    model = _model(name, bench_device).eval()
    x = example_batch(name, INFER_BATCH, bench_device)

    def target():
        model(x)
        synchronize(bench_device)

    benchmark.group = "eager_infer"
    with torch.inference_mode():  # thread-local and pedantic runs in this thread: entered once, not per call
        _run(benchmark, target, device=bench_device, backend="eager", batch_size=INFER_BATCH, budget_s=1.0,
             lo=10, hi=300, phase="infer")


@pytest.mark.parametrize("name", MODELS)
def test_onnxruntime_infer(benchmark, name, bench_device, onnx_files):
    cuda = bench_device.type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers()
    sess = ort_session(onnx_files.get(name), cuda=cuda)
    feed = {sess.get_inputs()[0].name: example_batch(name, INFER_BATCH, torch.device("cpu")).numpy()}

    def target():  # ORT returns once its work is done (it syncs its own CUDA stream): nothing left to wait for
        sess.run(None, feed)

    benchmark.group = "onnxruntime_infer"
    extra = {"provider": sess.get_providers()[0]}
    if cuda:
        extra["note"] = "host input and output copies included"
    _run(benchmark, target, device=torch.device("cuda" if cuda else "cpu"),
         backend="onnxruntime-cuda" if cuda else "onnxruntime", batch_size=INFER_BATCH, budget_s=1.0, lo=10,
         hi=300, phase="infer", **extra)
