"""Inference latency per backend and batch size: eager, torch.compile, ONNX Runtime (CPU / CUDA), CUDA graphs.

Every backend runs the same fixed input (``example_batch``) in fp32. One-off costs (compilation, session creation,
graph capture) are kept out of the latency samples and reported as ``compile_s``. A backend that breaks becomes a
failed row and the others still run; running out of memory is a skipped row at that batch size, never a smaller batch.
"""
from __future__ import annotations

import gc
import time
from typing import Any, Callable

import onnxruntime as ort
import torch
from torch import nn

from bench.common import BenchContext, PeakMemory, example_batch, failure, flops_per_sample, record
from bench.export import ort_session
from bench.timing import latency_stats, sample_latencies

BACKENDS = ("eager", "compile", "onnxruntime", "onnxruntime-cuda", "cuda_graph")
CPU = torch.device("cpu")


def default_backends(device: torch.device | str) -> list[str]:
    """The backends that can run on ``device`` with this install."""
    device = torch.device(device)
    names = ["eager", "compile", "onnxruntime"]
    if device.type == "cuda":
        if "CUDAExecutionProvider" in ort.get_available_providers():
            names.append("onnxruntime-cuda")
        names.append("cuda_graph")
    return names


def sampling_plan(batch_size: int, quick: bool) -> dict[str, Any]:
    """How many timed calls: batch 1 is the latency headline and gets the most; the caps bound slow CPU runs."""
    if batch_size == 1:
        if quick:
            return {"min_samples": 30, "min_seconds": 0.2, "warmup": 5, "max_seconds": 10.0}
        return {"min_samples": 200, "min_seconds": 1.0, "warmup": 20, "max_seconds": 60.0}
    if quick:
        return {"min_samples": 5, "min_seconds": 0.2, "warmup": 1, "max_seconds": 10.0}
    return {"min_samples": 30, "min_seconds": 1.0, "warmup": 3, "max_seconds": 120.0}


def is_out_of_memory(exc: BaseException) -> bool:
    if isinstance(exc, (torch.OutOfMemoryError, MemoryError)):
        return True
    text = str(exc).lower()
    return "out of memory" in text or "failed to allocate memory" in text  # the latter: ORT's BFC arena


def _free_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


class _Runner:
    """One backend: ``setup`` once, then ``prepare(x)`` per batch size gives the callable that gets timed."""

    timing_device: torch.device | None = None  # None: the context's device
    mem_device: torch.device | None = None
    threads: int | None = None

    def __init__(self, name: str, model: nn.Module, ctx: BenchContext, onnx_path: str | None):
        self.name, self.model, self.ctx, self.onnx_path = name, model, ctx, onnx_path
        self.fields: dict[str, Any] = {}  # extra fields for every record of this backend

    def unavailable(self, batch_size: int) -> str | None:
        return None

    def setup(self) -> None:
        pass

    def prepare(self, x: torch.Tensor) -> tuple[Callable[[], Any], dict[str, Any]]:
        raise NotImplementedError


class _Eager(_Runner):
    def prepare(self, x):
        model = self.model
        return (lambda: model(x)), {}


class _Compile(_Runner):
    def setup(self):
        # Dynamo's per-code-object cache is shared by every instance of a model class: a stale cache from an
        # earlier run could hit the recompile limit and silently fall back to eager.
        torch._dynamo.reset()
        self.compiled = torch.compile(self.model, dynamic=False)  # one static graph per batch size
        self.fields["compile_mode"] = "default"

    def prepare(self, x):
        compiled = self.compiled
        t0 = time.perf_counter()
        compiled(x)
        _sync(self.ctx.device)
        return (lambda: compiled(x)), {"compile_s": round(time.perf_counter() - t0, 3)}


class _OrtCpu(_Runner):
    timing_device = CPU
    mem_device = CPU

    def unavailable(self, batch_size):
        return None if self.onnx_path else "no ONNX file (export failed or was not run)"

    def setup(self):
        t0 = time.perf_counter()
        self.threads = torch.get_num_threads()
        self.sess = ort_session(self.onnx_path, threads=self.threads)
        self.session_s = round(time.perf_counter() - t0, 3)
        self.input_name = self.sess.get_inputs()[0].name
        self.fields["provider"] = "CPUExecutionProvider"
        if self.ctx.device.type != "cpu":
            self.fields["note"] = "CPU provider; input copied to the host before timing"

    def prepare(self, x):
        sess, feed = self.sess, {self.input_name: x.detach().cpu().numpy()}
        return (lambda: sess.run(None, feed)), {"compile_s": self.session_s}


class _OrtCuda(_Runner):
    timing_device = CPU  # ORT runs on its own stream and returns after syncing it; the wall clock is right
    mem_device = None

    def unavailable(self, batch_size):
        if not self.onnx_path:
            return "no ONNX file (export failed or was not run)"
        if self.ctx.device.type != "cuda":
            return "onnxruntime-cuda needs --device cuda"
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            return "CUDAExecutionProvider not available in this onnxruntime build"
        return None

    def setup(self):
        t0 = time.perf_counter()
        self.threads = torch.get_num_threads()
        self.sess = ort_session(self.onnx_path, cuda=True, threads=self.threads)
        self.session_s = round(time.perf_counter() - t0, 3)
        if self.sess.get_providers()[0] != "CUDAExecutionProvider":
            raise RuntimeError(f"onnxruntime fell back to {self.sess.get_providers()[0]}")
        self.input_name = self.sess.get_inputs()[0].name
        self.output_name = self.sess.get_outputs()[0].name
        self.fields.update(provider="CUDAExecutionProvider",
                           peak_mem_note="ORT's CUDA arena is not seen by torch's allocator")

    def prepare(self, x):
        sess = self.sess
        try:  # IO on the device: the input is bound where torch keeps it, the output stays on the GPU
            x = x.contiguous()
            binding = sess.io_binding()
            binding.bind_input(self.input_name, "cuda", x.device.index or 0, "float32", list(x.shape), x.data_ptr())
            binding.bind_output(self.output_name, "cuda", x.device.index or 0)

            def fn():
                sess.run_with_iobinding(binding)
                binding.synchronize_outputs()

            fn()
            return fn, {"compile_s": self.session_s, "note": "io_binding: input and output on the device"}
        except Exception as exc:  # an ORT without io_binding for CUDA: time the host round trip and say so
            name = self.input_name
            return ((lambda: sess.run(None, {name: x.detach().cpu().numpy()})),
                    {"compile_s": self.session_s,
                     "note": f"host copies included (io_binding failed: {type(exc).__name__})"})


class _CudaGraph(_Runner):
    def unavailable(self, batch_size):
        if self.ctx.device.type != "cuda":
            return "cuda_graph needs --device cuda"
        return None

    def prepare(self, x):
        model = self.model
        t0 = time.perf_counter()
        static_x = x.clone()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm-up off the default stream, as the CUDA graphs docs require
            for _ in range(3):
                model(static_x)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_out = model(static_x)
        torch.cuda.synchronize()
        self._keep = (static_x, static_out, graph)  # the graph replays into these buffers
        return graph.replay, {"compile_s": round(time.perf_counter() - t0, 3),
                              "note": "torch.cuda.CUDAGraph capture, replay of a static input"}


RUNNERS: dict[str, type[_Runner]] = {"eager": _Eager, "compile": _Compile, "onnxruntime": _OrtCpu,
                                     "onnxruntime-cuda": _OrtCuda, "cuda_graph": _CudaGraph}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def _one(name: str, ctx: BenchContext, runner: _Runner, backend: str, bs: int,
         flops: float | None) -> dict[str, Any]:
    x = example_batch(name, bs, ctx.device, seed=ctx.seed)
    mem = PeakMemory(runner.mem_device or ctx.device)
    with torch.inference_mode():
        with mem:
            fn, extra = runner.prepare(x)
            samples = sample_latencies(fn, runner.timing_device or ctx.device, **sampling_plan(bs, ctx.quick))
    stats = latency_stats(samples, bs)
    gflops = flops * stats["samples_per_s"] / 1e9 if flops else None
    peak = None if backend == "onnxruntime-cuda" else (round(mem.peak_mb, 1) if mem.peak_mb is not None else None)
    return record(name, ctx.device, "infer", backend=backend, batch_size=bs, precision="fp32", **stats,
                  threads=runner.threads or torch.get_num_threads(), speedup_vs_eager=None, gflops_per_s=gflops,
                  peak_mem_mb=peak, **runner.fields, **extra)


def measure_inference(name: str, model: nn.Module, ctx: BenchContext, *, batch_sizes: list[int] | tuple[int, ...],
                      backends: list[str] | tuple[str, ...], onnx_path: str | None = None) -> list[dict[str, Any]]:
    """Records of phase "infer", one per (backend, batch size); cuda_graph runs at batch 1 only."""
    unknown = [b for b in backends if b not in RUNNERS]
    if unknown:
        raise ValueError(f"unknown backend(s) {', '.join(unknown)}; choose from: {', '.join(BACKENDS)}")
    model.eval()
    try:
        flops: float | None = flops_per_sample(model, name, ctx.device)
    except Exception:  # FLOP counting is a nicety; latency rows do not depend on it
        flops = None
    rows: list[dict[str, Any]] = []
    for backend in backends:
        runner = RUNNERS[backend](name, model, ctx, onnx_path)
        sizes = list(batch_sizes)
        if backend == "cuda_graph":  # a latency tool: batch 1 only, and only when batch 1 was asked for
            sizes = [1] if 1 in sizes else []
        base = {"backend": backend, "precision": "fp32"}
        why = runner.unavailable(1)
        if why:
            rows += [failure(name, ctx.device, "infer", why, status="skipped", batch_size=bs, **base) for bs in sizes]
            continue
        try:
            runner.setup()
        except Exception as exc:
            status = "skipped" if is_out_of_memory(exc) else "failed"
            reason = f"out of memory at backend setup ({type(exc).__name__})" if status == "skipped" else exc
            rows += [failure(name, ctx.device, "infer", reason, status=status, batch_size=bs, **base) for bs in sizes]
            _free_memory(ctx.device)
            continue
        for bs in sizes:
            try:
                rows.append(_one(name, ctx, runner, backend, bs, flops))
            except Exception as exc:
                if is_out_of_memory(exc):
                    rows.append(failure(name, ctx.device, "infer", f"out of memory at batch {bs}", status="skipped",
                                        batch_size=bs, **base))
                else:
                    rows.append(failure(name, ctx.device, "infer", exc, batch_size=bs, **base))
            finally:
                _free_memory(ctx.device)
        del runner
        _free_memory(ctx.device)
    fill_speedups(rows)
    return rows


def fill_speedups(rows: list[dict[str, Any]]) -> None:
    """speedup_vs_eager = eager p50 / this p50 at the same batch size (None where either is missing)."""
    eager = {r["batch_size"]: r["p50_ms"] for r in rows
             if r.get("phase") == "infer" and r.get("backend") == "eager" and r.get("status") == "ok"}
    for r in rows:
        if r.get("phase") != "infer" or r.get("status") != "ok":
            continue
        ref = eager.get(r["batch_size"])
        r["speedup_vs_eager"] = ref / r["p50_ms"] if ref and r["p50_ms"] > 0 else None
