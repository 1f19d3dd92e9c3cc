"""ONNX Runtime int8 on the CPU: the fp32 ONNX graph quantized by ``onnxruntime.quantization``.

``onnxruntime-int8`` is static post-training quantization as the ONNX Runtime docs recommend for CPUs: the graph is
pre-processed (``quant_pre_process``: symbolic shape inference and graph optimisation), then ``quantize_static`` in
QDQ format with per-channel int8 weights and uint8 activations (U8S8), activation ranges calibrated (MinMax) on a
fixed seeded sample of the TRAINING split through the recipe's transforms, so the test split the accuracy columns use
is never seen. ``reduce_range`` (7-bit weights) is on only for x86 CPUs without VNNI, where U8S8 can saturate.

``onnxruntime-int8-dynamic`` is ``quantize_dynamic``: int8 weights, activations quantized per call, applied to
MatMul/Gemm (linear layers); convolutions stay fp32, and ``note`` says how many weighted ops it quantized.
Both start from the run's fp32 export (bench.model.export.onnx_for) and are written next to it, under
``<out_dir>/onnx/`` (NAME.int8.onnx, NAME.int8-dynamic.onnx).
"""
from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections import Counter
from typing import Any, Callable, ClassVar

import numpy as np
import onnx
import torch

try:  # from the cpu or gpu extra; without either, the int8 rows are skipped with the install command
    import onnxruntime as ort
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process
except ImportError:
    ort = None
    CalibrationDataReader = object  # the base of BatchReader, which is then never instantiated

from bench.backends.base import Backend
from bench.context import BenchContext, ModelSession
from bench.measure.machine import cpu_flags
from bench.model.export import onnx_for
from zoo.data import FastLoader, open_split, split_tensors

CALIBRATION_SAMPLES = 512
CALIBRATION_BATCH_SIZE = 32
WEIGHTED_OPS = ("Conv", "Gemm", "MatMul")
DYNAMIC_OPS = ("MatMul", "Gemm")


def cpu_has_vnni() -> bool:
    """Whether the CPU has VNNI (x86 AVX512-VNNI or AVX-VNNI); True where the question does not apply."""
    flags = cpu_flags()
    if "avx2" not in flags:  # not an x86 CPU with the U8S8 saturation issue (or no /proc/cpuinfo to say)
        return True
    return "avx512_vnni" in flags or "avx_vnni" in flags


def calibration_batches(session: ModelSession, ctx: BenchContext, samples: int = CALIBRATION_SAMPLES,
                        batch_size: int = CALIBRATION_BATCH_SIZE) -> list[np.ndarray]:
    """A fixed sample (seeded by ctx.seed) of the training split, with the recipe's transforms, as float32 batches."""
    ds = open_split(session.spec.dataset, True, root=ctx.data_root, synthetic=not ctx.uses_real_data(session.name))
    images, labels = split_tensors(ds)
    g = torch.Generator().manual_seed(ctx.seed)
    pick = torch.randperm(len(labels), generator=g)[:samples]
    loader = FastLoader(images[pick], labels[pick], session.spec.recipe.transforms, torch.device("cpu"), batch_size,
                        shuffle=False, seed=ctx.seed)
    return [x.numpy().astype(np.float32, copy=False) for x, _ in loader.batches(0)]


class BatchReader(CalibrationDataReader):
    """Feeds the calibration batches to quantize_static, one input dict per call, then None."""

    def __init__(self, input_name: str, batches: list[np.ndarray]):
        self.input_name, self.batches = input_name, batches
        self.index = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self.index >= len(self.batches):
            return None
        self.index += 1
        return {self.input_name: self.batches[self.index - 1]}

    def rewind(self) -> None:
        self.index = 0


def op_counts(path: str) -> Counter:
    return Counter(node.op_type for node in onnx.load(path, load_external_data=False).graph.node)


def cpu_session(path: str, threads: int) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.log_severity_level = 3
    return ort.InferenceSession(path, sess_options=so, providers=["CPUExecutionProvider"])


class OrtInt8Backend(Backend):
    name: ClassVar[str] = "onnxruntime-int8"
    precision: ClassVar[str] = "int8"
    devices: ClassVar[tuple[str, ...]] = ("cpu",)
    suffix: ClassVar[str] = "int8"
    extra: ClassVar[str | None] = "cpu"
    package: ClassVar[str | None] = "onnxruntime"

    @classmethod
    def import_package(cls) -> None:
        import onnxruntime.quantization  # noqa: F401

    def quantize(self, src: str, dst: str, work: str) -> str:
        """Static QDQ quantization of ``src`` into ``dst``; returns what the note says about it."""
        pre = os.path.join(work, "pre.onnx")
        quant_pre_process(src, pre)
        batches = calibration_batches(self.session, self.ctx)
        input_name = onnx.load(pre, load_external_data=False).graph.input[0].name
        reduce_range = not cpu_has_vnni()
        quantize_static(pre, dst, BatchReader(input_name, batches), quant_format=QuantFormat.QDQ, per_channel=True,
                        reduce_range=reduce_range, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax)
        samples = sum(len(b) for b in batches)
        return (f"static QDQ, per-channel int8 weights, uint8 activations{', reduce_range' if reduce_range else ''}, "
                f"MinMax calibration on {samples} seeded training samples")

    def prepare(self) -> float:
        src = onnx_for(self.session, self.ctx)  # not timed: the fp32 export is shared with the ONNX rows
        folder = os.path.dirname(src)
        dst = os.path.join(folder, f"{self.session.name}.{self.suffix}.onnx")
        start = time.perf_counter()
        work = tempfile.mkdtemp(prefix=f".{self.session.name}.{self.suffix}.", dir=folder)
        try:
            tmp_dst = os.path.join(work, "quantized.onnx")
            note = self.quantize(src, tmp_dst, work)
            os.replace(tmp_dst, dst)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        self.ort = cpu_session(dst, int(self.ctx.threads))
        self.model_path = dst  # what a profiling twin of the session opens (bench.profile)
        seconds = time.perf_counter() - start
        self.input_name = self.ort.get_inputs()[0].name
        self.fields.update(provider="CPUExecutionProvider", threads=int(self.ctx.threads),
                           note=f"{note}; compile_s = quantization + session creation")
        return seconds

    def bind(self, x: torch.Tensor) -> Callable[[], Any]:
        feed = {self.input_name: x.detach().cpu().numpy()}  # the CPU tensor's own memory: no copy
        run = self.ort.run
        return lambda: run(None, feed)

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        out = self.ort.run(None, {self.input_name: x.detach().cpu().numpy()})[0]
        return torch.from_numpy(np.asarray(out, dtype=np.float32))

    def close(self) -> None:
        self.ort = None


class OrtInt8DynamicBackend(OrtInt8Backend):
    name: ClassVar[str] = "onnxruntime-int8-dynamic"
    suffix: ClassVar[str] = "int8-dynamic"

    def quantize(self, src: str, dst: str, work: str) -> str:
        pre = os.path.join(work, "pre.onnx")
        quant_pre_process(src, pre)
        # MatMul/Gemm only, as the ORT docs advise dynamic quantization for linear-heavy models: a ConvInteger
        # graph measured 3-6x slower than fp32 on the zoo's CNNs at batch 1, so convs stay fp32 (the note says so).
        quantize_dynamic(pre, dst, per_channel=True, weight_type=QuantType.QInt8,
                         op_types_to_quantize=list(DYNAMIC_OPS))
        before, after = op_counts(pre), op_counts(dst)
        weighted = sum(before[op] for op in WEIGHTED_OPS)
        left = {op: after[op] for op in WEIGHTED_OPS if after[op]}
        kept = ", ".join(f"{n} {op}" for op, n in left.items()) or "none"
        return (f"dynamic: int8 weights (per-channel), activations quantized per call; "
                f"{weighted - sum(left.values())} of {weighted} Conv/Gemm/MatMul ops quantized, fp32 left: {kept}")
