"""TensorRT through Torch-TensorRT's dynamo path (CUDA only): ``torch.export`` with a dynamic batch, then
``torch_tensorrt.dynamo.compile`` into a module whose TensorRT engines run on torch's current CUDA stream.

fp32 means IEEE fp32: Torch-TensorRT 2.14 builds strongly typed engines (precision follows the graph's dtypes, and
the graph is fp32), and TensorRT would still run fp32 layers in TF32 on Ampere and later unless ``disable_tf32`` is
set, so it is set (the same policy as bench.measure.numerics: TF32 off everywhere). ``min_block_size=1`` hands every
convertible op to TensorRT instead of leaving short runs in PyTorch. One engine serves batch 1..max, its
optimisation profile tuned for the largest timed batch (``note`` says which).
"""
from __future__ import annotations

import importlib.metadata
import time
from typing import ClassVar

import torch

from bench.accuracy import EVAL_BATCH_SIZE
from bench.backends.base import RunnerBackend

EXAMPLE_BATCH = 2  # export traces with batch 2: a batch of 1 would be specialised into the graph
DIST = "torch-tensorrt"
# Torch-TensorRT creates each engine's execution context with TensorRT's kSTATIC allocation strategy (unless dynamic
# resources are enabled): the engine's weights and activations live in memory TensorRT allocates itself, which the
# caching allocator's counters never see.
NO_MEMORY = "peak memory not measured: TensorRT allocates the engine's memory outside torch's caching allocator"


def major_minor(version: str) -> str:
    """``2.14`` of ``2.14.1+cu128`` (a local build tag or a pre-release suffix does not change the pair)."""
    parts = version.split("+")[0].split(".")
    return ".".join(parts[:2])


def install_command(torch_version: str) -> str:
    return f'pip install "{DIST}=={major_minor(torch_version)}.*"'


def pair_mismatch(trt_version: str | None, torch_version: str) -> str | None:
    """Why this torch-tensorrt cannot run with this torch, with the command that installs the one that can, or None.

    Every torch-tensorrt X.Y release is built against torch X.Y and requires exactly it (its wheel metadata pins
    torch to >=X.Y,<X.Y+1); another pair fails to load its C++ ops or makes pip swap torch. None also when
    torch-tensorrt is not installed (missing_package says so)."""
    if trt_version is None or major_minor(trt_version) == major_minor(torch_version):
        return None
    return (f"{DIST} {trt_version} is built for torch {major_minor(trt_version)}, this torch is {torch_version}: "
            f"{install_command(torch_version)}")


def installed_version(dist: str = DIST) -> str | None:
    """The installed distribution's version, read from its metadata without importing it (None: not installed)."""
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


class TensorRtBackend(RunnerBackend):
    name: ClassVar[str] = "tensorrt"
    devices: ClassVar[tuple[str, ...]] = ("cuda",)
    extra: ClassVar[str | None] = "tensorrt"
    package: ClassVar[str | None] = "torch_tensorrt"

    @classmethod
    def import_package(cls) -> None:
        import torch_tensorrt  # noqa: F401

    @classmethod
    def available(cls, device: torch.device) -> str | None:
        why = cls.device_reason(device)
        if why is None and not torch.cuda.is_available():
            why = "TensorRT needs a CUDA device; torch.cuda.is_available() is False"
        return why or pair_mismatch(installed_version(), torch.__version__) or cls.missing_package()

    def profile(self) -> tuple[int, int]:
        """(opt, max) batch of the engine's optimisation profile: tuned for the largest timed batch, large enough for
        the accuracy pass's batches too."""
        timed = self.ctx.infer_batch_sizes(self.session.name)
        return max(timed), max(max(timed), EVAL_BATCH_SIZE)

    def prepare(self) -> float:
        import torch_tensorrt

        device = self.ctx.device
        shape = tuple(self.session.spec.input_shape)
        opt, top = self.profile()
        x = torch.zeros(EXAMPLE_BATCH, *shape, device=device)
        start = time.perf_counter()
        with torch.no_grad():
            batch = torch.export.Dim("batch", min=1, max=top)
            exported = torch.export.export(self.session.model, (x,), dynamic_shapes=({0: batch},))
            spec = torch_tensorrt.Input(min_shape=(1, *shape), opt_shape=(opt, *shape), max_shape=(top, *shape),
                                        dtype=torch.float32)
            self.runner = torch_tensorrt.dynamo.compile(exported, arg_inputs=[spec], device=device,
                                                        disable_tf32=True, min_block_size=1)
        seconds = time.perf_counter() - start
        self.fields.update(provider=f"Torch-TensorRT {torch_tensorrt.__version__}",
                           note=f"fp32 engine, TF32 off, dynamic batch 1..{top} tuned for batch {opt}; "
                                f"compile_s = export + engine build; {NO_MEMORY}")
        return seconds

    def memory_device(self) -> torch.device | None:
        return None  # NO_MEMORY: torch's counters would show little more than the eager model
