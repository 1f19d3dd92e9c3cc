"""PyTorch eager inference under torch.inference_mode: the reference every other backend is compared with.

``eager`` is fp32 (the maths policy of bench.measure.numerics: TF32 off). ``eager:bf16`` and ``eager:fp16`` are the same module
under torch.autocast, the way a deployed PyTorch service would run reduced precision without converting weights.
"""
from __future__ import annotations

import contextlib
from typing import Any, Callable, ClassVar

import torch

from bench.backends.base import Backend
from bench.measure.machine import lacks_native


class EagerBackend(Backend):
    name: ClassVar[str] = "eager"

    def autocast(self):
        """No autocast for fp32 (the autocast rows override this)."""
        return contextlib.nullcontext()

    def bind(self, x: torch.Tensor) -> Callable[[], Any]:
        model = self.session.model
        return lambda: model(x)  # the infer phase holds torch.inference_mode around bind and the timed calls

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode(), self.autocast():
            return self.session.model(x).float().cpu()


class _AutocastEager(EagerBackend):
    dtype: ClassVar[torch.dtype]

    def autocast(self):
        return torch.autocast(self.ctx.device.type, dtype=self.dtype)

    def bind(self, x: torch.Tensor) -> Callable[[], Any]:
        model, autocast = self.session.model, self.autocast

        def call():  # entering autocast is part of every call a deployed autocast service makes
            with autocast():
                return model(x)

        return call


class EagerBf16Backend(_AutocastEager):
    precision: ClassVar[str] = "bf16"
    devices: ClassVar[tuple[str, ...]] = ("cpu", "cuda")
    dtype = torch.bfloat16

    @classmethod
    def available(cls, device: torch.device) -> str | None:
        why = super().available(device)
        if why is None and device.type == "cuda":
            # Compute capability, not torch.cuda.is_bf16_supported(): that counts emulation by default (True on T4).
            native = lacks_native(device, "bf16")
            return None if native is None else f"{torch.cuda.get_device_name(device)}: {native}"
        return why


class EagerFp16Backend(_AutocastEager):
    precision: ClassVar[str] = "fp16"
    devices: ClassVar[tuple[str, ...]] = ("cuda",)  # CPU fp16 autocast exists but is an emulation, not a deployment
    dtype = torch.float16
