"""AOT Inductor: the model exported with ``torch.export`` (dynamic batch), compiled ahead of time into a ``.pt2``
package, and loaded back with ``torch._inductor.aoti_load_package`` as a deployed service would load the artifact.

``compile_s`` is export + compile + load. Inductor keeps an on-disk cache of compiled code, so a repeated run may
compile faster than a first one; ``note`` says so. The package goes to ``<out_dir>/aoti/NAME.pt2``.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import time
from typing import ClassVar

import torch

from bench.backends.base import RunnerBackend

EXAMPLE_BATCH = 2  # export traces with batch 2: a batch of 1 would be specialised into the graph


def cxx_compiler() -> str | None:
    """The C++ compiler Inductor will use on Linux/macOS (``$CXX``, else g++), if it is on PATH."""
    return shutil.which(os.environ.get("CXX", "g++"))


# The compiled model's constants and its work buffers are allocated by the AOTInductor runtime, not through the
# caching allocator torch's memory counters read: a figure from them would be little more than the eager model's.
NO_CUDA_MEMORY = "peak memory not measured on CUDA: AOTInductor allocates outside torch's caching allocator"


class AotInductorBackend(RunnerBackend):
    name: ClassVar[str] = "aot_inductor"
    devices: ClassVar[tuple[str, ...]] = ("cpu", "cuda")

    @classmethod
    def available(cls, device: torch.device) -> str | None:
        why = super().available(device)
        if why is not None:
            return why
        if cxx_compiler() is None:
            return (f"AOT Inductor needs a C++ compiler ({os.environ.get('CXX', 'g++')} is not on PATH): "
                    "install g++ (e.g. apt-get install g++) or set CXX")
        return None

    def package_path(self) -> str:
        return os.path.abspath(os.path.join(self.ctx.out_dir, "aoti", f"{self.session.name}.pt2"))

    def prepare(self) -> float:
        device = self.ctx.device
        model = self.session.model
        x = torch.zeros(EXAMPLE_BATCH, *self.session.spec.input_shape, device=device)
        path = self.package_path()
        os.makedirs(os.path.dirname(path), exist_ok=True)
        start = time.perf_counter()
        with torch.no_grad():
            exported = torch.export.export(model, (x,), dynamic_shapes=({0: torch.export.Dim("batch", min=1)},))
            # Write next to the target, then rename: a killed compile never leaves a half-written package in place.
            with tempfile.TemporaryDirectory(dir=os.path.dirname(path)) as tmp:
                tmp_path = torch._inductor.aoti_compile_and_package(
                    exported, package_path=os.path.join(tmp, "model.pt2"))
                os.replace(tmp_path, path)
        # device_index -1 loads onto the current CUDA device; an explicit --device cuda:N must load onto N.
        index = device.index if device.type == "cuda" and device.index is not None else -1
        self.runner = torch._inductor.aoti_load_package(path, device_index=index)
        seconds = time.perf_counter() - start
        self.fields.update(
            threads=int(self.ctx.threads) if device.type == "cpu" else None,
            note="torch.export (dynamic batch) + AOT Inductor .pt2 package, loaded with aoti_load_package; "
                 "compile_s = export + compile + load, and may be warm from Inductor's on-disk cache"
                 + (f"; {NO_CUDA_MEMORY}" if device.type == "cuda" else ""),
        )
        return seconds

    def memory_device(self) -> torch.device | None:
        return None if self.ctx.device.type == "cuda" else self.ctx.device
