"""torch.compile (Inductor, default mode) with one static graph per batch size.

The compilation of a batch size happens in ``bind`` (its first call), so the infer phase reports it as that row's
``compile_s`` and no sample ever contains it. ``dynamic=False``: each batch size gets the graph specialised for it,
the way a latency-minded deployment compiles. A shape that would exceed Dynamo's recompile limit raises instead of
silently running eager code under the ``compile`` label.
"""
from __future__ import annotations

from typing import Any, Callable, ClassVar

import torch

from bench.backends.base import Backend


def _loud_recompile_limit():
    """Dynamo's default on hitting the recompile limit is to fall back to eager without a word; make it raise."""
    return torch._dynamo.config.patch(fail_on_recompile_limit_hit=True)


class CompileBackend(Backend):
    name: ClassVar[str] = "compile"
    mode: ClassVar[str | None] = None  # torch.compile's default mode

    def prepare(self) -> float:
        # Dynamo's cache is keyed by code object, shared by every instance of a model class: a stale cache from an
        # earlier model or phase could count against the recompile limit, so start clean.
        torch._dynamo.reset()
        self.compiled = torch.compile(self.session.model, dynamic=False, mode=self.mode)
        self.fields["note"] = f"torch.compile mode={self.mode or 'default'}, dynamic=False"
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
