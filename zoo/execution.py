"""The execution choices of one training step, as plain data, and how to build a step from one.

A ``Candidate`` is one way to run the very same step (memory format, optimizer kernel, torch.compile mode); a ``TuneChoice`` is the candidate zoo.tune picked with what it measured (plain types only: it is
stored in checkpoints and metrics and loads with ``weights_only=True``). ``build_tuned`` turns either into the
(net, optimizer, StepOptions) that ``zoo.engine.train_step`` runs.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from zoo.engine import OPTIMIZER_IMPLS, StepOptions, build_optimizer, optimizer_impl
from zoo.registry import Recipe

COMPILE_MODE = "default"
# cudnn.benchmark is not a choice: cuDNN v8's plan cache (aten/src/ATen/native/cudnn/Conv_v8.cpp, benchmark_cache:
# thread-local, keyed on shapes, padding, TF32, memory format and alignment, not on the benchmark flag) keeps the
# plan picked the first time a shape is seen, so toggling the flag between trials compares noise and leaves later
# steps on whichever plans the first trial fixed. It is on for the whole process, every trial and run alike.
CUDNN_BENCHMARK = True
# Fields older choices carried and that are no longer choices (read and dropped: a checkpoint from before still loads).
LEGACY_FIELDS = ("cudnn_benchmark",)


@dataclass(frozen=True)
class Candidate:
    """One way to run the step."""

    channels_last: bool = False
    optimizer_impl: str = "fused"  # one of zoo.engine.OPTIMIZER_IMPLS
    compile: str | None = None  # a torch.compile mode, or None

    @property
    def label(self) -> str:
        parts = ["channels_last" if self.channels_last else "contiguous", self.optimizer_impl]
        if self.compile:
            parts.append("compile" if self.compile == COMPILE_MODE else f"compile={self.compile}")
        return "/".join(parts)


@dataclass(frozen=True)
class TuneChoice:
    """The tuner's answer, with what it measured. Plain types only: it goes into checkpoints and metrics lines."""

    channels_last: bool = False
    optimizer_impl: str = "fused"
    compile: str | None = None
    gain: float = 1.0  # measured samples/s of the choice / the default configuration's (1.0: not measured)
    measured: dict[str, float] = field(default_factory=dict, hash=False)  # candidate label -> median samples/s
    compile_s: float | None = None  # the compile probe's one-off seconds, when compile was probed
    reason: str | None = field(default=None, compare=False)  # why nothing was measured, when nothing was

    @property
    def candidate(self) -> Candidate:
        return Candidate(self.channels_last, self.optimizer_impl, self.compile)

    @property
    def label(self) -> str:
        return self.candidate.label

    def to_dict(self) -> dict[str, Any]:
        return {f.name: (dict(v) if isinstance(v := getattr(self, f.name), dict) else v)
                for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TuneChoice:
        """The choice a ``to_dict()`` made; ValueError naming the problem for anything else."""
        if not isinstance(d, dict):
            raise ValueError(f"a tune choice must be a dict, not {type(d).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        d = {k: v for k, v in d.items() if k not in LEGACY_FIELDS}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"tune choice has unknown field(s): {', '.join(unknown)}")
        if d.get("optimizer_impl", "fused") not in OPTIMIZER_IMPLS:
            raise ValueError(f"tune choice has optimizer_impl {d['optimizer_impl']!r}; expected one of "
                             f"{', '.join(OPTIMIZER_IMPLS)}")
        kwargs = dict(d)
        if "measured" in kwargs:
            kwargs["measured"] = {str(k): float(v) for k, v in kwargs["measured"].items()}
        return cls(**kwargs)

    @classmethod
    def of(cls, cand: Candidate, **fields: Any) -> TuneChoice:
        return cls(cand.channels_last, cand.optimizer_impl, cand.compile, **fields)


# ---------------------------------------------------------------------------------------------------------------
# Building a configuration


def build_tuned(choice: TuneChoice | Candidate, model: nn.Module, recipe: Recipe, device: torch.device | str, *,
                lr: float | None = None, precision: str = "fp32") -> tuple[nn.Module, torch.optim.Optimizer,
                                                                            StepOptions]:
    """Apply ``choice`` to ``model`` (in place: device, memory format) and build what ``zoo.engine.train_step``
    takes: (net, optimizer, opts). ``net`` is the compiled model when the choice compiles, else ``model``.

    On CUDA this turns the process-wide ``torch.backends.cudnn.benchmark`` on (CUDNN_BENCHMARK) and it stays on.
    """
    device = torch.device(device)
    model.to(device)
    if choice.channels_last:
        model.to(memory_format=torch.channels_last)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = CUDNN_BENCHMARK
    optimizer = build_optimizer(recipe, model, lr, impl=choice.optimizer_impl)
    opts = StepOptions(device, precision, choice.channels_last)
    return apply_compile(model, choice.compile), optimizer, opts


def apply_compile(net: nn.Module, mode: str | None) -> nn.Module:
    """``torch.compile(net)`` in ``mode`` ("default" is PyTorch's default mode), or ``net`` itself for None."""
    if not mode:
        return net
    return torch.compile(net, mode=None if mode == COMPILE_MODE else mode)


def default_candidate(model: nn.Module, recipe: Recipe, device: torch.device | str) -> Candidate:
    """The untuned configuration: contiguous, ``build_optimizer``'s default kernel (fused where the device has
    one), no compile."""
    device = torch.device(device)
    return Candidate(optimizer_impl=optimizer_impl(build_optimizer(recipe, model), device))


def untuned(model: nn.Module, recipe: Recipe, device: torch.device | str) -> TuneChoice:
    """The choice ``--tune off`` stands for: the default configuration, nothing measured."""
    return TuneChoice.of(default_candidate(model, recipe, device))


def has_conv2d(model: nn.Module) -> bool:
    return any(isinstance(m, nn.Conv2d) for m in model.modules())


def eager_candidates(model: nn.Module, recipe: Recipe, x: torch.Tensor, device: torch.device | str) -> list[Candidate]:
    """Every uncompiled configuration this device offers for this model, the default first."""
    device = torch.device(device)
    conv = has_conv2d(model) and x.dim() == 4
    formats = (False, True) if conv else (False,)
    impls = []
    for impl in OPTIMIZER_IMPLS:
        try:
            build_optimizer(recipe, model, impl=impl)
            impls.append(impl)
        except ValueError:  # this device has no such kernel
            continue
    default = default_candidate(model, recipe, device)
    cands = [Candidate(cl, impl, None) for cl in formats for impl in impls]
    # Most likely first, for a budget that cannot hold them all: one change from the default before two, and among
    # equals the settings that move a step most (IMPACT_ORDER) before the optimizer kernel (a few % at most).
    return [default] + sorted((c for c in cands if c != default), key=lambda c: probe_order(c, default))


# The settings by how much they have moved a zoo training step (results/cpu: channels_last 1.0-1.5x for conv models,
# the optimizer kernel within 2%): a tuner with room for only a few candidates probes the big levers first.
IMPACT_ORDER = ("channels_last", "compile", "optimizer_impl")


def probe_order(cand: Candidate, ref: Candidate) -> tuple[int, ...]:
    """Sort key: fewer changes from ``ref`` first, then changes to the higher-impact settings (IMPACT_ORDER)."""
    changed = [getattr(cand, name) != getattr(ref, name) for name in IMPACT_ORDER]
    return (changes(cand, ref), *(not c for c in changed))


def changes(cand: Candidate, ref: Candidate) -> int:
    """How many settings ``cand`` changes from ``ref``."""
    return sum(getattr(cand, f.name) != getattr(ref, f.name) for f in dataclasses.fields(Candidate))
