"""ONNX Runtime on the model's exported graph (bench.model.export.onnx_for): the CPU provider and the CUDA provider.

``onnxruntime`` (CPUExecutionProvider) is set up as ONNX Runtime's "Thread management" guide sets a latency
service: its intra-op threads are the run's ``--threads``, one inter-op thread, sequential execution (the zoo's graphs
are single chains), ORT_ENABLE_ALL graph optimizations and spinning intra-op threads, the memory arena and memory
pattern on (OrtSessionOptions, recorded on every row as InferRecord.options). Its call uses io_binding on the CPU
("I/O Binding"): the host input is bound once, the output into one preallocated OrtValue, so no output array is
allocated per call.
``onnxruntime-cuda`` (CUDAExecutionProvider, options from
bench.measure.numerics.ort_cuda_options: the run's GPU, exhaustive cuDNN search, TF32 off) uses io_binding (ONNX Runtime docs,
"I/O Binding"): the input is bound where torch keeps it on the device and the output is allocated on the device, so
no host copy is timed. A session that is not on CUDA, or an io_binding that fails, is a failed row with the reason:
never a silently different measurement under the same name.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Any, Callable, ClassVar

import numpy as np
import torch

try:  # the package comes from the cpu or gpu extra (they install the same module), or is not installed at all
    import onnxruntime as ort
except ImportError:
    ort = None

from bench.backends.base import Backend
from bench.measure.numerics import ort_cuda_options
from bench.model.export import onnx_for

CPU_PROVIDER, CUDA_PROVIDER = "CPUExecutionProvider", "CUDAExecutionProvider"


@dataclass(frozen=True)
class OrtSessionOptions:
    """The session options of an ONNX Runtime row, by ONNX Runtime's names; ``as_record`` is what the row shows."""

    intra_op_num_threads: int
    inter_op_num_threads: int = 1  # the zoo's graphs are single chains: nothing for an inter-op pool to overlap
    execution_mode: str = "ORT_SEQUENTIAL"
    graph_optimization_level: str = "ORT_ENABLE_ALL"
    allow_spinning: bool = True  # session.intra_op.allow_spinning: workers spin between ops, not sleep
    enable_cpu_mem_arena: bool = True
    enable_mem_pattern: bool = True

    def session_options(self) -> ort.SessionOptions:
        so = ort.SessionOptions()
        so.intra_op_num_threads = self.intra_op_num_threads
        so.inter_op_num_threads = self.inter_op_num_threads
        so.execution_mode = getattr(ort.ExecutionMode, self.execution_mode)
        so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, self.graph_optimization_level)
        so.add_session_config_entry("session.intra_op.allow_spinning", "1" if self.allow_spinning else "0")
        so.enable_cpu_mem_arena = self.enable_cpu_mem_arena
        so.enable_mem_pattern = self.enable_mem_pattern
        so.log_severity_level = 3  # warnings about unused initialisers etc. are noise in a benchmark log
        return so

    def as_record(self, **extra: Any) -> dict[str, Any]:
        return {**dataclasses.asdict(self), **extra}


def ort_session(path: str, *, threads: int, providers: list[Any],
                options: OrtSessionOptions | None = None) -> ort.InferenceSession:
    """A session with ``options`` (default: OrtSessionOptions with ``threads`` intra-op threads)."""
    options = options or OrtSessionOptions(intra_op_num_threads=threads)
    return ort.InferenceSession(path, sess_options=options.session_options(), providers=providers)


def cpu_binding(sess: Any, input_name: str, output_name: str, arr: np.ndarray) -> Any:
    """An io_binding with the host array ``arr`` as the input and one preallocated host OrtValue as the output (its
    shape from one run): run_with_iobinding then writes into the same memory every call."""
    out_shape = sess.run([output_name], {input_name: arr})[0].shape
    binding = sess.io_binding()
    binding.bind_cpu_input(input_name, arr)
    binding.bind_ortvalue_output(output_name, ort.OrtValue.ortvalue_from_shape_and_type(out_shape, np.float32, "cpu"))
    return binding


class OrtCpuBackend(Backend):
    name: ClassVar[str] = "onnxruntime"
    extra: ClassVar[str | None] = "cpu"  # pip install -e ".[cpu]" (or ".[gpu]": onnxruntime-gpu has the CPU provider)
    package: ClassVar[str | None] = "onnxruntime"

    @classmethod
    def import_package(cls) -> None:
        import onnxruntime  # noqa: F401

    def prepare(self) -> float:
        path = onnx_for(self.session, self.ctx)  # raises OnnxExportError: the backend's rows are failed
        self.model_path = path  # what a profiling twin of the session opens (bench.profile)
        self.options = OrtSessionOptions(intra_op_num_threads=self.ctx.threads)
        t0 = time.perf_counter()
        self.sess = ort_session(path, threads=self.ctx.threads, providers=[CPU_PROVIDER], options=self.options)
        seconds = time.perf_counter() - t0
        self.input_name, self.output_name = self.sess.get_inputs()[0].name, self.sess.get_outputs()[0].name
        self.fields.update(provider=CPU_PROVIDER, threads=self.ctx.threads,
                           options=self.options.as_record(io_binding="input bound once, output preallocated"))
        if self.ctx.device.type != "cpu":
            self.fields["note"] = f"CPU provider on a {self.ctx.device.type} run; input is a host array"
        return seconds

    def bind(self, x: torch.Tensor) -> Callable[[], Any]:
        self._input = host_array(x)  # the host copy is made once, before timing; the binding reads this memory
        binding = self.binding = cpu_binding(self.sess, self.input_name, self.output_name, self._input)
        sess = self.sess
        return lambda: sess.run_with_iobinding(binding)

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.sess.run(None, {self.input_name: host_array(x)})[0]).float()

    def compute_device(self) -> torch.device:
        return torch.device("cpu")  # the CPU provider computes on the host, whatever the run's device

    def memory_device(self) -> torch.device | None:
        return torch.device("cpu")  # the CPU provider's memory is host memory, whatever the run's device

    def sync(self) -> None:
        """Nothing to wait for: run() returns with the outputs on the host."""

    def close(self) -> None:
        self.sess = None


def host_array(x: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(x.detach().float().cpu().numpy())


def check_on_cuda(sess: Any) -> None:
    """Raise when the session's first provider is not CUDA (ORT falls back to the CPU without an error)."""
    providers = list(sess.get_providers())
    if not providers or providers[0] != CUDA_PROVIDER:
        raise RuntimeError(f"onnxruntime session is on {', '.join(providers) or 'no provider'}, not {CUDA_PROVIDER} "
                           "(a CUDA provider that failed to load falls back to the CPU)")


def device_binding(sess: Any, input_name: str, output_name: str, x: torch.Tensor, device_id: int) -> Any:
    """An io_binding with ``x``'s device memory as the input and the output allocated on the same GPU."""
    if x.device.type != "cuda" or x.device.index != device_id:
        raise RuntimeError(f"input is on {x.device}, the ORT session on cuda:{device_id}")
    if x.dtype != torch.float32 or not x.is_contiguous():
        raise RuntimeError("io_binding needs a contiguous float32 input")
    binding = sess.io_binding()
    binding.bind_input(name=input_name, device_type="cuda", device_id=device_id, element_type=np.float32,
                       shape=tuple(x.shape), buffer_ptr=x.data_ptr())
    binding.bind_output(output_name, "cuda", device_id)
    return binding


class OrtCudaBackend(Backend):
    name: ClassVar[str] = "onnxruntime-cuda"
    devices: ClassVar[tuple[str, ...]] = ("cuda",)
    extra: ClassVar[str | None] = "gpu"
    package: ClassVar[str | None] = "onnxruntime"

    @classmethod
    def import_package(cls) -> None:
        import onnxruntime  # noqa: F401

    @classmethod
    def available(cls, device: torch.device) -> str | None:
        why = super().available(device)
        if why is None and CUDA_PROVIDER not in ort.get_available_providers():
            return (f"this onnxruntime {ort.__version__} has no {CUDA_PROVIDER} (the CPU build is installed: "
                    'pip uninstall -y onnxruntime onnxruntime-gpu && pip install -e ".[gpu]")')
        return why

    def prepare(self) -> float:
        path = self.model_path = onnx_for(self.session, self.ctx)
        self.options = ort_cuda_options(self.ctx.device)
        t0 = time.perf_counter()
        self.sess = ort_session(path, threads=self.ctx.threads, providers=[(CUDA_PROVIDER, self.options)])
        seconds = time.perf_counter() - t0
        check_on_cuda(self.sess)
        self.input_name, self.output_name = self.sess.get_inputs()[0].name, self.sess.get_outputs()[0].name
        self.fields.update(provider=CUDA_PROVIDER, threads=self.ctx.threads,
                           note="io_binding: input and output on the device")
        return seconds

    def bind(self, x: torch.Tensor) -> Callable[[], Any]:
        self._input = x.contiguous()  # the bound memory must outlive the binding
        binding = device_binding(self.sess, self.input_name, self.output_name, self._input,
                                 self.options["device_id"])
        sess = self.sess
        self.sync()  # ORT's stream does not wait for torch's: the input must be written before ORT reads it
        sess.run_with_iobinding(binding)  # fails here, at bind, rather than inside the timed loop
        return lambda: sess.run_with_iobinding(binding)

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.ctx.device).float().contiguous()
        binding = device_binding(self.sess, self.input_name, self.output_name, x, self.options["device_id"])
        self.sync()  # the copy to the device is queued on torch's stream, which ORT's stream does not wait for
        self.sess.run_with_iobinding(binding)
        return torch.from_numpy(binding.copy_outputs_to_cpu()[0]).float()

    def memory_device(self) -> torch.device | None:
        return None  # ORT's CUDA arena is its own allocator: torch's counters would report ~0 and mislead

    def event_stream(self) -> Any:
        return None  # ORT queues on its own stream: events on torch's would time nothing of it

    def sync(self) -> None:
        """A device-wide synchronize: ORT queues on its own stream, and cudaDeviceSynchronize waits for all of them."""
        torch.cuda.synchronize(self.ctx.device)

    def close(self) -> None:
        self.sess = None
