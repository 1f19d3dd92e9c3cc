"""OpenVINO on the CPU: the module's ``torch.export`` graph converted with ``ov.convert_model`` and compiled by the
CPU plugin.

fp32 means fp32: on CPUs with AVX512-BF16 or AMX the CPU plugin's default ``INFERENCE_PRECISION_HINT`` is bf16, so an
unpinned "fp32" row would silently run bf16 maths. The hint is set to f32 and read back from the compiled model; a
plugin that does not honour it fails the row instead of mislabelling it.
"""
from __future__ import annotations

import time
from typing import Any, Callable, ClassVar

import torch

from bench.backends.base import Backend


class OpenVinoBackend(Backend):
    name: ClassVar[str] = "openvino"
    devices: ClassVar[tuple[str, ...]] = ("cpu",)
    extra: ClassVar[str | None] = "openvino"
    package: ClassVar[str | None] = "openvino"

    @classmethod
    def import_package(cls) -> None:
        import openvino  # noqa: F401

    def prepare(self) -> float:
        import openvino as ov
        import openvino.properties as props
        import openvino.properties.hint as hints

        start = time.perf_counter()
        shape = tuple(self.session.spec.input_shape)
        example = torch.zeros(2, *shape)  # batch 2: a batch of 1 would be specialised into the graph
        # From torch.export's graph (OpenVINO's other torch path traces with the deprecated torch.jit). The batch
        # axis stays dynamic, the rest is pinned to the model's input shape: one compiled model serves every batch.
        with torch.no_grad():
            exported = torch.export.export(self.session.model, (example,),
                                           dynamic_shapes=({0: torch.export.Dim("batch", min=1)},))
            model = ov.convert_model(exported)
        model.reshape({model.inputs[0]: ov.PartialShape([-1, *shape])})
        config = {
            hints.performance_mode: hints.PerformanceMode.LATENCY,
            props.inference_num_threads: int(self.ctx.threads),
            hints.inference_precision: ov.Type.f32,
        }
        self.compiled = ov.Core().compile_model(model, "CPU", config)
        seconds = time.perf_counter() - start
        used = self.compiled.get_property(hints.inference_precision)
        if used != ov.Type.f32:
            raise RuntimeError(f"OpenVINO CPU plugin runs {used} although f32 was asked for")
        self.request = self.compiled.create_infer_request()
        self.fields.update(
            provider="openvino CPU",
            threads=int(self.compiled.get_property(props.inference_num_threads)),
            note=f"OpenVINO {ov.get_version().split('-')[0]}: inference precision f32 (pinned), LATENCY hint, "
                 "dynamic batch, converted from torch.export's graph",
        )
        return seconds

    def bind(self, x: torch.Tensor) -> Callable[[], Any]:
        arr = x.detach().cpu().numpy()  # the CPU tensor's own memory: no copy
        request = self.request
        # share_inputs: OpenVINO reads the caller's array in place, as a deployed caller would hand it over;
        # outputs are copied out (the default), the caller owns its result.
        return lambda: request.infer({0: arr}, share_inputs=True)

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        out = self.compiled(x.detach().cpu().numpy())[0]
        return torch.from_numpy(out.copy()).float()

    def close(self) -> None:
        self.request = self.compiled = None
