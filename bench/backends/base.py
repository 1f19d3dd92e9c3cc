"""The inference backend interface. The infer phase treats every backend alike: no special case by name.

Life of a backend for one model: ``available(device)`` (None, or why not, with the install command), then
``prepare()`` once (compile, export, session creation, quantization, graph capture: its seconds go to ``compile_s``),
then per batch size ``bind(x)`` gives the callable that is timed, and ``predict(x)`` gives logits for the accuracy
columns (untimed). The timing loop calls ``sync()`` after every call so queued device work is counted where it was
queued; every backend is timed by the same clock (bench.measure.timing). Adding a backend is one module plus one line in
``bench.backends.BACKENDS``.
"""
from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from typing import Any, Callable, ClassVar

import torch

from bench.context import BenchContext, ModelSession
from bench.measure import timing
from bench.measure.memory import PeakMemory
from zoo.engine import synchronize


class Backend(ABC):
    name: ClassVar[str]
    precision: ClassVar[str] = "fp32"
    devices: ClassVar[tuple[str, ...]] = ("cpu", "cuda", "mps")
    extra: ClassVar[str | None] = None  # the pyproject extra that installs its package: pip install -e ".[extra]"
    package: ClassVar[str | None] = None  # the module that extra installs (import_package imports it)
    # Whether each batch size is a build of its own (a static graph, engine or capture per shape, made in bind): the
    # budget then prices the build into every row, not once per backend.
    builds_per_shape: ClassVar[bool] = False

    def __init__(self, session: ModelSession, ctx: BenchContext):
        self.session, self.ctx = session, ctx
        self.fields: dict[str, Any] = {}  # extra record fields (provider, note, threads ...)

    @classmethod
    def available(cls, device: torch.device) -> str | None:
        """None when this backend can run on ``device`` with this install, else one line saying why (and how)."""
        return cls.device_reason(device) or cls.missing_package()

    @classmethod
    def device_reason(cls, device: torch.device) -> str | None:
        """Why this backend cannot run on ``device``'s type, or None."""
        if device.type not in cls.devices:
            return f"{cls.name} runs on {', '.join(cls.devices)}, not {device.type}"
        return None

    @classmethod  # noqa: B027 - a hook for backends with a package, not abstract
    def import_package(cls) -> None:
        """Import ``package`` (a plain import statement in the subclass, so the import graph stays static)."""

    @classmethod
    def missing_package(cls) -> str | None:
        """Why ``package`` cannot be imported, with the install command, or None (also when there is no package).
        Any exception counts: a package whose native libraries fail to load is as unusable as a missing one."""
        if cls.package is None:
            return None
        try:
            cls.import_package()
        except Exception as exc:
            state = "not installed" if isinstance(exc, ImportError) else "not usable"
            first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
            return f'{cls.package} is {state} ({first}): pip install -e ".[{cls.extra}]"'
        return None

    def prepare(self) -> float:
        """One-off setup before any timing; returns its seconds (reported as compile_s)."""
        return 0.0

    @abstractmethod
    def bind(self, x: torch.Tensor) -> Callable[[], Any]:
        """A callable running one inference on ``x`` (the fixed input of one batch size). Every backend starts from
        the same point: the input already where it reads it (on the run's device, bound, or a host array made here),
        so no copy is inside one backend's timed call and outside another's."""

    @abstractmethod
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for ``x`` as a CPU float tensor (untimed; used for accuracy, agreement and max abs diff)."""

    def compute_device(self) -> torch.device:
        """Where this backend's arithmetic runs: its row's % of peak divides by that device's peak only (a row that
        runs on another device than the run's gets none: the run measured one device's peak)."""
        return self.ctx.device

    def event_stream(self) -> Any:
        """The CUDA stream this backend's kernels run on, for device-time events (None: not a CUDA backend, or one
        whose work runs on a stream of its own that torch's events cannot bracket)."""
        if self.compute_device().type != "cuda":
            return None
        return torch.cuda.current_stream(self.ctx.device)

    def memory_device(self) -> torch.device | None:
        """Where this backend's working memory lives, for the peak-memory columns (None: invisible to the bench, e.g.
        a runtime's own device arena that torch's allocator does not see)."""
        return self.ctx.device

    def sync(self) -> None:
        """Wait for every piece of work this backend queued on the device."""
        synchronize(self.ctx.device)

    def memory_tracker(self):
        """A PeakMemory over memory_device() for the with-block it guards (a no-op where the bench cannot see it)."""
        device = self.memory_device()
        return PeakMemory(device) if device is not None else contextlib.nullcontext()

    def bind_timed(self, x: torch.Tensor) -> tuple[Callable[[], Any], float]:
        """(the bound call, the seconds binding took, the device synchronized after it), on the one clock."""
        t0 = timing.clock()
        fn = self.bind(x)
        self.sync()
        return fn, timing.clock() - t0

    def close(self) -> None:  # noqa: B027 - an optional hook, not abstract
        """Free what prepare() made (sessions, graphs, compiled artifacts)."""


class RunnerBackend(Backend):
    """A backend whose ``prepare`` builds one callable, ``self.runner`` (a compiled module, a loaded package), that
    takes the batch on the device as it is and returns logits: binding and predicting are then the same for all."""

    runner: Callable[[torch.Tensor], torch.Tensor] | None = None

    def bind(self, x: torch.Tensor) -> Callable[[], Any]:
        runner = self.runner
        return lambda: runner(x)

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return self.runner(x).float().cpu()

    def close(self) -> None:
        self.runner = None
