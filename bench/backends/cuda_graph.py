"""CUDA graphs: the model's forward captured once per batch size and replayed.

Follows "CUDA Graphs" in PyTorch's CUDA semantics notes and the torch.cuda.graph reference: warm up on a side stream
before capture (so lazy initialisation such as cuBLAS handles and cudnn.benchmark's algorithm search is not captured),
capture into static input/output buffers, then replay. The timed call is the replay alone, its input already in the
graph's input buffer: every backend is timed from that same starting point (the input already where the backend
reads it: eager, compile and TensorRT take the device tensor as it is, ORT-CUDA binds it, ORT-CPU gets its host array
made before timing), so no row pays a copy the others do not. ``replay_call`` (copy a fresh input in, then replay)
is what predict uses. Every stream is created on the backend's own device (``torch.cuda.device(device)``) and the capture
stream is passed explicitly: ``torch.cuda.graph``'s own default capture stream is one class-wide stream made on
whichever device was current when it was first used, which is the wrong device for a later ``--device cuda:1``.
"""
from __future__ import annotations

from typing import Any, Callable, ClassVar

import torch

from bench.backends.base import Backend

WARMUP_CALLS = 3  # the docs' example warms up with a few iterations; 3 also lets cudnn.benchmark settle


def capture(model: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, *, warmup: int = WARMUP_CALLS,
            graphs: Any = torch.cuda) -> tuple[Any, torch.Tensor, torch.Tensor]:
    """(graph, static_input, static_output) of ``model`` on ``x``'s device. ``graphs`` is the torch.cuda namespace
    (a fake in CPU tests of the call order)."""
    device = x.device
    with graphs.device(device):
        static_x = x.clone()
        side = graphs.Stream(device=device)
        side.wait_stream(graphs.current_stream(device))  # static_x's copy is queued on the current stream
        with graphs.stream(side):
            for _ in range(warmup):
                model(static_x)
        graphs.current_stream(device).wait_stream(side)
        graph = graphs.CUDAGraph()
        with graphs.graph(graph, stream=side):
            static_out = model(static_x)
        graphs.synchronize(device)
    return graph, static_x, static_out


def replay_call(graph: Any, static_x: torch.Tensor, x: torch.Tensor) -> Callable[[], None]:
    """The timed call: a fresh input copied into the graph's input buffer, then one replay."""

    def call():
        static_x.copy_(x)
        graph.replay()

    return call


class CudaGraphBackend(Backend):
    name: ClassVar[str] = "cuda_graph"
    builds_per_shape: ClassVar[bool] = True
    devices: ClassVar[tuple[str, ...]] = ("cuda",)

    def prepare(self) -> float:
        self.graphs: dict[int, tuple[Any, torch.Tensor, torch.Tensor]] = {}
        self.fields["note"] = ("torch.cuda.CUDAGraph per batch size; a timed call is one replay, the input already in "
                               "the graph's buffer (as every backend's input is where it reads it)")
        return 0.0  # capture happens per batch size, in bind()

    def _graph(self, x: torch.Tensor) -> tuple[Any, torch.Tensor, torch.Tensor]:
        bs = x.shape[0]
        if bs not in self.graphs:
            self.graphs[bs] = capture(self.session.model, x)
        return self.graphs[bs]

    def bind(self, x: torch.Tensor) -> Callable[[], None]:
        graph, static_x, _ = self._graph(x)
        static_x.copy_(x)  # before timing, as every backend gets its input where it reads it
        return graph.replay

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode(), torch.cuda.device(self.ctx.device):
            x = x.to(self.ctx.device)
            graph, static_x, static_out = self._graph(x)
            replay_call(graph, static_x, x)()
            return static_out.float().cpu()  # .cpu() waits for the replay on this device's current stream

    def close(self) -> None:
        self.graphs = {}
