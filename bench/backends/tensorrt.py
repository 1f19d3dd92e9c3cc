"""TensorRT through Torch-TensorRT's dynamo path (CUDA only): ``torch.export`` with a dynamic batch, then
``torch_tensorrt.dynamo.compile`` into a module whose TensorRT engines run on torch's current CUDA stream.

fp32 means IEEE fp32: Torch-TensorRT 2.14 builds strongly typed engines (precision follows the graph's dtypes, and
the graph is fp32), and TensorRT would still run fp32 layers in TF32 on Ampere and later unless ``disable_tf32`` is
set, so it is set (the same policy as bench.measure.numerics: TF32 off everywhere). ``min_block_size=1`` hands every
convertible op to TensorRT instead of leaving short runs in PyTorch. Each timed batch size gets its own engine whose
one optimisation profile is that batch (TensorRT picks kernels ("tactics") per profile: one engine tuned for batch
512 would serve batch 1 with batch-512 kernels), built in ``bind`` so its seconds are that row's ``compile_s``; the
accuracy pass has one more, for batch 1..EVAL_BATCH_SIZE.
"""
from __future__ import annotations

import importlib.metadata
from typing import Any, Callable, ClassVar

import torch

from bench.backends.base import RunnerBackend
from bench.model.accuracy import EVAL_BATCH_SIZE

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
    builds_per_shape: ClassVar[bool] = True
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

    def top_batch(self) -> int:
        """The largest batch any engine of this model serves: the timed ones and the accuracy pass's."""
        return max(max(self.ctx.infer_batch_sizes(self.session.name)), EVAL_BATCH_SIZE)

    def prepare(self) -> float:
        import torch_tensorrt

        self.engines: dict[tuple[int, int, int], Callable[[torch.Tensor], torch.Tensor]] = {}
        self.build_s = 0.0
        self.fields.update(provider=f"Torch-TensorRT {torch_tensorrt.__version__}",
                           note="fp32 engines, TF32 off, one per timed batch size (its optimisation profile is that "
                                "batch alone) and one for the accuracy pass (1.."
                                f"{EVAL_BATCH_SIZE}); compile_s = export + that batch's engine build; {NO_MEMORY}")
        return 0.0  # the engines are built per batch size, in bind(): their seconds go to that row's compile_s

    def engine(self, lo: int, opt: int, hi: int) -> Callable[[torch.Tensor], torch.Tensor]:
        """The engine whose one optimisation profile is batch lo..hi tuned for opt (built once, then reused): the
        graph exported with a dynamic batch (torch.export, 1..top_batch), compiled for that profile."""
        import torch_tensorrt

        key = (lo, opt, hi)
        if key not in self.engines:
            device, shape = self.ctx.device, tuple(self.session.spec.input_shape)
            x = torch.zeros(EXAMPLE_BATCH, *shape, device=device)
            with torch.no_grad():
                batch = torch.export.Dim("batch", min=1, max=self.top_batch())
                exported = torch.export.export(self.session.model, (x,), dynamic_shapes=({0: batch},))
                spec = torch_tensorrt.Input(min_shape=(lo, *shape), opt_shape=(opt, *shape), max_shape=(hi, *shape),
                                            dtype=torch.float32)
                self.engines[key] = torch_tensorrt.dynamo.compile(exported, arg_inputs=[spec], device=device,
                                                                  disable_tf32=True, min_block_size=1)
        return self.engines[key]

    def bind(self, x: torch.Tensor) -> Callable[[], Any]:
        """The timed call runs the engine built for exactly this batch size: batch-1 kernels for the batch-1 row,
        never kernels tuned for the largest batch."""
        bs = int(x.shape[0])
        runner = self.engine(bs, bs, bs)
        return lambda: runner(x)

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        runner = self.engine(1, EVAL_BATCH_SIZE, max(EVAL_BATCH_SIZE, int(x.shape[0])))
        with torch.inference_mode():
            return runner(x).float().cpu()

    def close(self) -> None:
        self.engines = {}
        self.runner = None

    def memory_device(self) -> torch.device | None:
        return None  # NO_MEMORY: torch's counters would show little more than the eager model
