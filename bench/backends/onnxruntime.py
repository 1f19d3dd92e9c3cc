"""ONNX Runtime on the model's exported graph (bench.export.onnx_for): the CPU provider and the CUDA provider.

``onnxruntime`` (CPUExecutionProvider) is fed a host numpy array, as a CPU service is; its intra-op threads are the
run's ``--threads`` and recorded on the row. ``onnxruntime-cuda`` (CUDAExecutionProvider, options from
bench.measure.numerics.ort_cuda_options: the run's GPU, exhaustive cuDNN search, TF32 off) uses io_binding (ONNX Runtime docs,
"I/O Binding"): the input is bound where torch keeps it on the device and the output is allocated on the device, so
no host copy is timed. A session that is not on CUDA, or an io_binding that fails, is a failed row with the reason:
never a silently different measurement under the same name.
"""
from __future__ import annotations

import time
from typing import Any, Callable, ClassVar

import numpy as np
import torch

try:  # the package comes from the cpu or gpu extra (they install the same module), or is not installed at all
    import onnxruntime as ort
except ImportError:
    ort = None

from bench.backends.base import Backend
from bench.export import onnx_for
from bench.measure.numerics import ort_cuda_options

CPU_PROVIDER, CUDA_PROVIDER = "CPUExecutionProvider", "CUDAExecutionProvider"


def ort_session(path: str, *, threads: int, providers: list[Any]) -> ort.InferenceSession:
    """A session with ``threads`` intra-op threads and one inter-op thread (the zoo's graphs are single chains)."""
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.log_severity_level = 3  # warnings about unused initialisers etc. are noise in a benchmark log
    return ort.InferenceSession(path, sess_options=so, providers=providers)


class OrtCpuBackend(Backend):
    name: ClassVar[str] = "onnxruntime"
    extra: ClassVar[str | None] = "cpu"  # pip install -e ".[cpu]" (or ".[gpu]": onnxruntime-gpu has the CPU provider)
    package: ClassVar[str | None] = "onnxruntime"

    @classmethod
    def import_package(cls) -> None:
        import onnxruntime  # noqa: F401

    def prepare(self) -> float:
        path = onnx_for(self.session, self.ctx)  # raises OnnxExportError: the backend's rows are failed
        t0 = time.perf_counter()
        self.sess = ort_session(path, threads=self.ctx.threads, providers=[CPU_PROVIDER])
        seconds = time.perf_counter() - t0
        self.input_name = self.sess.get_inputs()[0].name
        self.fields.update(provider=CPU_PROVIDER, threads=self.ctx.threads)
        if self.ctx.device.type != "cpu":
            self.fields["note"] = f"CPU provider on a {self.ctx.device.type} run; input is a host array"
        return seconds

    def bind(self, x: torch.Tensor) -> Callable[[], Any]:
        sess, feed = self.sess, {self.input_name: host_array(x)}  # the host copy is made once, before timing
        return lambda: sess.run(None, feed)

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
        path = onnx_for(self.session, self.ctx)
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
