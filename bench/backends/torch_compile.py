"""torch.compile (Inductor) with one static graph per batch size, set up per device as PyTorch advises for inference.

The compilation of a batch size happens in ``bind`` (its first call), so the infer phase reports it as that row's
``compile_s`` and no sample ever contains it. ``dynamic=False``: each batch size gets the graph specialised for it,
the way a latency-minded deployment compiles. A shape that would exceed Dynamo's recompile limit raises instead of
silently running eager code under the ``compile`` label.

The setup per device (``COMPILE_SETUPS``, recorded on every row as ``options``):
- cpu: the default mode with Inductor's ``freezing``: weights become constants, folded and pre-packed for oneDNN.
  PyTorch's CPU inference advice (the AOTInductor docs' CPU note, its CPU inference dashboard runs ``--freezing``).
- cuda: the default mode. ``reduce-overhead`` (CUDA graphs) is left out: CUDAGraph Trees copy an input that is not
  a parameter into the graph's static buffer inside every call, the device-to-device copy that every other backend
  keeps out of its timed call (the ``cuda_graph`` backend shows what replaying a graph saves), and marking the input
  static would recompile for every accuracy batch. ``max-autotune`` is left out for its compile time (minutes per
  shape), which would not fit the GPU smoke run.
- mps: the default mode.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, ClassVar

import torch

from bench.backends.base import Backend


def _loud_recompile_limit():
    """Dynamo's default on hitting the recompile limit is to fall back to eager without a word; make it raise."""
    return torch._dynamo.config.patch(fail_on_recompile_limit_hit=True)


@dataclass(frozen=True)
class CompileSetup:
    """How torch.compile is called on one device type: its mode (None: the default) and Inductor options."""

    mode: str | None = None
    options: tuple[tuple[str, Any], ...] = ()

    def kwargs(self) -> dict[str, Any]:
        """torch.compile's keyword arguments (it takes a mode or options, never both)."""
        return {"options": dict(self.options)} if self.options else {"mode": self.mode}

    def as_record(self) -> dict[str, Any]:
        return {"mode": self.mode or "default", "dynamic": False, **dict(self.options)}


COMPILE_SETUPS = {"cpu": CompileSetup(options=(("freezing", True),)), "cuda": CompileSetup(), "mps": CompileSetup()}


class CompileBackend(Backend):
    name: ClassVar[str] = "compile"
    builds_per_shape: ClassVar[bool] = True

    def prepare(self) -> float:
        # Dynamo's cache is keyed by code object, shared by every instance of a model class: a stale cache from an
        # earlier model or phase could count against the recompile limit, so start clean.
        torch._dynamo.reset()
        setup = COMPILE_SETUPS.get(self.ctx.device.type, CompileSetup())
        self.compiled = torch.compile(self.session.model, dynamic=False, **setup.kwargs())
        self.fields["options"] = setup.as_record()
        self.fields["note"] = " ".join(["torch.compile", *(f"{k}={v}" for k, v in setup.as_record().items())])
        return 0.0  # compiling happens at the first call of each batch size, in bind()

    def bind(self, x: torch.Tensor) -> Callable[[], Any]:
        compiled = self.compiled
        with _loud_recompile_limit():
            compiled(x)  # compile for this shape now, outside every timed call
        self.sync()
        return lambda: compiled(x)

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode(), _loud_recompile_limit():
            return self.compiled(x).float().cpu()

    def close(self) -> None:
        self.compiled = None
        torch._dynamo.reset()
