"""pytest-benchmark suite: every zoo model x {one training step, eager inference, ONNX Runtime inference}.

Run with ``pytest --benchmark-only`` (``tests/benchmarks --bench-device cuda`` for a GPU). The inference targets are
the infer phase's own backends (bench.backends): the timed function is the backend's bound call followed by its
``sync()``, so a round is the real time of the work, not of queuing it. ONNX Runtime appears twice on a GPU and the
two are different measurements, named apart: ``test_onnxruntime_cpu_infer`` (CPU provider, fed a host array) and
``test_onnxruntime_cuda_iobinding_infer`` (CUDA provider, input and output bound on the device). The number of
rounds comes from a probe call made after the device is warm (CUDA context, cuBLAS/cuDNN handles, cudnn.benchmark's
search), so lazy initialisation never shrinks the round count. ``extra_info`` carries samples_per_s (batch size /
median round), batch_size, device, backend, provider and threads for the JSON report.
"""
from __future__ import annotations

import os
import time

import pytest
import torch

import zoo
from bench.backends import BACKENDS
from bench.context import BenchContext, ModelSession, example_batch, prepare_model
from bench.measure.numerics import apply_policy
from bench.model.export import CACHE_KEY
from zoo.engine import StepOptions, build_optimizer, synchronize, train_step

MODELS = zoo.list_models()
INFER_BATCH = 1  # the latency case; throughput at large batches is the harness's infer phase
WARM_CALLS = 3  # calls before the probe: CUDA lazy init and autotuning happen here, not in the probe


def _rounds(target, budget_s: float, lo: int, hi: int) -> int:
    """Rounds that fit ``budget_s``, from one probe call of an already warm ``target``."""
    for _ in range(WARM_CALLS):
        target()
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
    # A backend's own thread count (ORT's intra-op threads) wins over torch's.
    benchmark.extra_info.update({"batch_size": batch_size, "device": str(device), "backend": backend,
                                 "threads": torch.get_num_threads(), **extra})
    stats = getattr(benchmark, "stats", None)  # None under --benchmark-disable
    if stats:
        benchmark.extra_info["samples_per_s"] = batch_size / stats.stats.median


def _context(device: torch.device, out_dir: str = "") -> BenchContext:
    apply_policy(device)  # the maths policy of a bench run: cudnn.benchmark on, TF32 off
    return BenchContext(device=device, checkpoints=None, threads=torch.get_num_threads(), out_dir=out_dir)


def _session(name: str, ctx: BenchContext) -> ModelSession:
    return prepare_model(name, ctx)  # random init, seeded


def _infer(benchmark, selector: str, name: str, device: torch.device, group: str, onnx_files=None,
           **extra) -> None:
    """Benchmark one backend's bound call + sync at INFER_BATCH; skipped with the backend's own reason."""
    cls = BACKENDS[selector]
    why = cls.available(device)
    if why:
        pytest.skip(why)
    ctx = _context(device, os.fspath(onnx_files.folder) if onnx_files else "")
    session = _session(name, ctx)
    if onnx_files is not None:  # the suite's one export per model, as onnx_for would have cached it
        session.cache[CACHE_KEY] = onnx_files.info(name)
    backend = cls(session, ctx)
    backend.prepare()
    try:
        with torch.inference_mode():  # thread-local and pedantic runs in this thread: entered once, not per call
            call = backend.bind(example_batch(name, INFER_BATCH, device))

            def target():
                call()
                backend.sync()  # inside the timed function: the round ends when the device is done

            benchmark.group = group
            _run(benchmark, target, device=device, backend=selector, batch_size=INFER_BATCH, budget_s=1.0,
                 lo=10, hi=300, phase="infer", precision=cls.precision, **backend.fields, **extra)
    finally:
        backend.close()


@pytest.mark.parametrize("name", MODELS)
def test_train_step(benchmark, name, bench_device):
    spec = zoo.get_spec(name)
    bs = spec.recipe.batch_size
    model = _session(name, _context(bench_device)).model.train()
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
    _infer(benchmark, "eager", name, bench_device, "eager_infer")


@pytest.mark.parametrize("name", MODELS)
def test_onnxruntime_cpu_infer(benchmark, name, bench_device, onnx_files):
    """ORT's CPU provider fed a host numpy array, whatever --bench-device is: what a CPU service pays."""
    _infer(benchmark, "onnxruntime", name, bench_device, "onnxruntime_cpu_infer", onnx_files,
           io="host numpy array")


@pytest.mark.parametrize("name", MODELS)
def test_onnxruntime_cuda_iobinding_infer(benchmark, name, bench_device, onnx_files):
    """ORT's CUDA provider with the input and output bound on the GPU: no host copy in a round."""
    if bench_device.type != "cuda":
        pytest.skip("onnxruntime-cuda io_binding needs --bench-device cuda")
    _infer(benchmark, "onnxruntime-cuda", name, bench_device, "onnxruntime_cuda_iobinding_infer", onnx_files,
           io="io_binding on the device")
