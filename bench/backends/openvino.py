"""OpenVINO on the CPU: the module's ``torch.export`` graph converted with ``ov.convert_model`` and compiled by the
CPU plugin, set up as OpenVINO's own ``benchmark_app`` runs a latency benchmark.

``openvino`` compiles one model per timed batch size, its input shape static (OpenVINO's guidance: a static shape
lets the plugin pick its kernels and memory plan once; a dynamic axis re-plans at every call). The input tensor is
set once on the infer request, sharing the caller's array (no copy), and the timed call is ``request.infer()``, the
call benchmark_app's synchronous loop makes; its outputs are copied out, as infer's default does. ``openvino-dynamic``
is the other way a new user writes it: one model with a dynamic batch axis for every batch size, fed a dict per call.
Each row records its options (InferRecord.options), read back from the compiled model.

fp32 means fp32: on CPUs with AVX512-BF16 or AMX the CPU plugin's default ``INFERENCE_PRECISION_HINT`` is bf16, so an
unpinned "fp32" row would silently run bf16 maths. The hint is set to f32 and read back from the compiled model; a
plugin that does not honour it fails the row instead of mislabelling it.
"""
from __future__ import annotations

import time
from typing import Any, Callable, ClassVar

import torch

from bench.backends.base import Backend

# The CPU plugin's properties by their string names: the same dict configures the harness's compile_model and
# benchmark_app's -load_config (bench.crosscheck), so both run exactly this configuration.
READ_BACK = ("PERFORMANCE_HINT", "INFERENCE_PRECISION_HINT", "INFERENCE_NUM_THREADS", "NUM_STREAMS",
             "ENABLE_CPU_PINNING")


def cpu_config(threads: int) -> dict[str, str]:
    """LATENCY hint (one stream, one request), ``threads`` inference threads, f32 maths pinned."""
    return {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": str(int(threads)),
            "INFERENCE_PRECISION_HINT": "f32"}


def read_back(compiled: Any) -> dict[str, Any]:
    """The compiled model's own values of READ_BACK, as plain strings, ints and bools."""
    out: dict[str, Any] = {}
    for name in READ_BACK:
        value = compiled.get_property(name)
        if hasattr(value, "get_type_name"):  # an ov.Type, e.g. f32
            value = value.get_type_name()
        out[name] = value if isinstance(value, (bool, int)) else str(value)
    return out


class OpenVinoBackend(Backend):
    name: ClassVar[str] = "openvino"
    builds_per_shape: ClassVar[bool] = True
    devices: ClassVar[tuple[str, ...]] = ("cpu",)
    extra: ClassVar[str | None] = "openvino"
    package: ClassVar[str | None] = "openvino"
    static_shapes: ClassVar[bool] = True  # one compiled model per batch size; False: one dynamic-batch model

    @classmethod
    def import_package(cls) -> None:
        import openvino  # noqa: F401

    def prepare(self) -> float:
        import openvino as ov

        start = time.perf_counter()
        self.shape = tuple(self.session.spec.input_shape)
        example = torch.zeros(2, *self.shape)  # batch 2: a batch of 1 would be specialised into the graph
        # From torch.export's graph (OpenVINO's other torch path traces with the deprecated torch.jit).
        with torch.no_grad():
            exported = torch.export.export(self.session.model, (example,),
                                           dynamic_shapes=({0: torch.export.Dim("batch", min=1)},))
            self.model = ov.convert_model(exported)
        self.core = ov.Core()
        self.compiled: dict[int | None, Any] = {}  # batch size (None: dynamic) -> compiled model
        if not self.static_shapes:
            self.compiled_for(None)
        self.request: Any = None
        self.fields.update(provider="openvino CPU", threads=int(self.ctx.threads),
                           note=f"OpenVINO {ov.get_version().split('-')[0]}: "
                                f"{'static shape per batch' if self.static_shapes else 'dynamic batch'}, "
                                "converted from torch.export's graph")
        return time.perf_counter() - start

    def shaped_model(self, batch: int | None) -> Any:
        """The converted model with its batch axis ``batch`` (None: dynamic), every other axis the model's own."""
        import openvino as ov

        model = self.model.clone()
        model.reshape({model.inputs[0]: ov.PartialShape([-1 if batch is None else batch, *self.shape])})
        return model

    def compiled_for(self, batch: int | None) -> Any:
        """The compiled model for ``batch`` (compiled on first use), its f32 precision checked."""
        if batch not in self.compiled:
            compiled = self.core.compile_model(self.shaped_model(batch), "CPU", cpu_config(self.ctx.threads))
            used = read_back(compiled)["INFERENCE_PRECISION_HINT"]
            if used != "f32":
                raise RuntimeError(f"OpenVINO CPU plugin runs {used} although f32 was asked for")
            self.compiled[batch] = compiled
            self.fields["threads"] = int(compiled.get_property("INFERENCE_NUM_THREADS"))
        return self.compiled[batch]

    def options(self, compiled: Any) -> dict[str, Any]:
        """What the row ran: shape, how the call is made, and the plugin's read-back properties."""
        call = ("request.infer() on an input tensor set once (shares the caller's array), outputs copied out"
                if self.static_shapes else "request.infer({0: array}, share_inputs=True) per call, outputs copied out")
        return {"shape": "static" if self.static_shapes else "dynamic batch", "call": call, **read_back(compiled)}

    def bind(self, x: torch.Tensor) -> Callable[[], Any]:
        import openvino as ov

        arr = x.detach().cpu().numpy()  # the CPU tensor's own memory: no copy
        compiled = self.compiled_for(None if not self.static_shapes else int(x.shape[0]))
        request = self.request = compiled.create_infer_request()
        self.fields["options"] = self.options(compiled)
        if not self.static_shapes:
            # share_inputs: OpenVINO reads the caller's array in place, as a deployed caller would hand it over.
            return lambda: request.infer({0: arr}, share_inputs=True)
        self._input = arr  # the shared tensor reads this memory: it must outlive the request
        request.set_input_tensor(ov.Tensor(arr, shared_memory=True))
        return request.infer

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        compiled = self.compiled_for(int(x.shape[0]) if self.static_shapes else None)
        out = compiled(x.detach().cpu().numpy())[0]
        return torch.from_numpy(out.copy()).float()

    def close(self) -> None:
        self.request = self.model = None
        self.compiled = {}


class OpenVinoDynamicBackend(OpenVinoBackend):
    """One compiled model with a dynamic batch axis for every batch size, fed a dict per call (not in a default
    plan: the row that shows what a static shape is worth)."""

    name: ClassVar[str] = "openvino-dynamic"
    builds_per_shape: ClassVar[bool] = False  # one model for every batch size
    static_shapes: ClassVar[bool] = False
