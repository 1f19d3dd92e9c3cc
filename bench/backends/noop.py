"""The harness's own floor: a backend whose timed call does no work (it returns a tensor that already exists).

Timed by the same clock, sampling plan and device sync as every other backend, its p50 is what the harness itself
costs per call on this machine (the Python call, the clock reads, the sync): the part of a small row's latency that
no backend can remove. It is never in a default plan (``--backends noop`` asks for it); its accuracy columns mean
nothing, since its logits are a fixed zero tensor.
"""
from __future__ import annotations

from typing import Any, Callable, ClassVar

import torch

from bench.backends.base import Backend


class NoopBackend(Backend):
    name: ClassVar[str] = "noop"

    def bind(self, x: torch.Tensor) -> Callable[[], Any]:
        return lambda: x

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros(x.shape[0], self.session.spec.num_classes)
