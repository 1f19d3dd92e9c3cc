"""Inference backends, registered in BACKENDS: selector -> Backend class.

The selector is the backend's name for fp32 and ``name:precision`` for any other precision (``eager:bf16``); the
class carries ``name`` and ``precision``, which become the record's ``backend`` and ``precision``. Adding a backend
is one module plus one line here.
"""
from __future__ import annotations

from bench.backends.aot_inductor import AotInductorBackend
from bench.backends.base import Backend
from bench.backends.cuda_graph import CudaGraphBackend
from bench.backends.noop import NoopBackend
from bench.backends.onnxruntime import OrtCpuBackend, OrtCudaBackend
from bench.backends.openvino import OpenVinoBackend, OpenVinoDynamicBackend
from bench.backends.ort_int8 import OrtInt8Backend, OrtInt8DynamicBackend
from bench.backends.tensorrt import TensorRtBackend
from bench.backends.torch_compile import CompileBackend
from bench.backends.torch_eager import EagerBackend, EagerBf16Backend, EagerFp16Backend

BACKENDS: dict[str, type[Backend]] = {
    "eager": EagerBackend,
    "eager:bf16": EagerBf16Backend,
    "eager:fp16": EagerFp16Backend,
    "compile": CompileBackend,
    "cuda_graph": CudaGraphBackend,
    "onnxruntime": OrtCpuBackend,
    "onnxruntime-cuda": OrtCudaBackend,
    "aot_inductor": AotInductorBackend,
    "onnxruntime-int8:int8": OrtInt8Backend,
    "onnxruntime-int8-dynamic:int8": OrtInt8DynamicBackend,
    "openvino": OpenVinoBackend,
    "openvino-dynamic": OpenVinoDynamicBackend,
    "tensorrt": TensorRtBackend,
    "noop": NoopBackend,
}


def selector(cls: type[Backend]) -> str:
    """The BACKENDS key of a backend class: its name, plus ``:precision`` below fp32."""
    return cls.name if cls.precision == "fp32" else f"{cls.name}:{cls.precision}"
