"""The run context every phase reads: device, threads, what to run, and every decision made once for the run
(real or synthetic data per model, quick-mode sizes, batch sizes), plus the per-model session (model + artifacts).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

import zoo
from bench.records import SERVE_SCENARIOS
from zoo.data import real_data_available
from zoo.engine import synchronize

if TYPE_CHECKING:
    from bench.budget import Budget

QUICK_MAX_BATCH = 32  # --quick: every phase's batch is at most this (a smoke run of every path, recorded as quick)


@dataclass
class BenchContext:
    device: torch.device
    quick: bool = False
    data_root: str = "data"
    synthetic: bool = False  # True: never look for real data
    checkpoints: str | None = "runs"  # folder holding NAME/best.pt (or last.pt) from `python -m zoo.train`
    out_dir: str = "results/cpu"  # OUT/<device>
    threads: int = field(default_factory=torch.get_num_threads)
    seed: int = 0
    # What to run (validated by bench.run before the context is made).
    models: list[str] = field(default_factory=list)
    phases: list[str] = field(default_factory=list)
    backends: list[str] = field(default_factory=list)
    batch_sizes: list[int] | None = None  # None: per model, from its recipe
    precisions: list[str] = field(default_factory=lambda: ["fp32"])
    train_variants: list[dict[str, Any]] = field(default_factory=list)
    max_procs: int | None = None
    budget_s: float | None = None  # the whole run's time budget, spread over models by cost
    budget: Budget | None = None  # the driver's spread of budget_s (None: no budget, phases use their own sizes)
    tta_targets: dict[str, float] = field(default_factory=dict)  # --tta-target MODEL=ACC overrides
    serve_scenarios: list[str] = field(default_factory=lambda: list(SERVE_SCENARIOS))  # --scenarios
    server_latency_ms: float | None = None  # --server-latency-ms (None: per model, from its batch-1 latency)
    peaks: dict[str, Any] = field(default_factory=dict)  # the device's measured limits (RunEnv.peaks) for % of peak
    debug: bool = False

    def __post_init__(self):
        self._real: dict[str, bool] = {}

    def uses_real_data(self, name: str) -> bool:
        """Decided once per model for the whole run: real when the dataset is under data_root, else synthetic."""
        if name not in self._real:
            self._real[name] = not self.synthetic and real_data_available(zoo.get_spec(name).dataset, self.data_root)
        return self._real[name]

    def data_label(self, name: str) -> str:
        return "real" if self.uses_real_data(name) else "synthetic"

    def train_batch_size(self, name: str) -> int:
        bs = zoo.get_spec(name).recipe.batch_size
        return min(bs, QUICK_MAX_BATCH) if self.quick else bs

    def infer_batch_sizes(self, name: str) -> list[int]:
        if self.batch_sizes is not None:
            return list(self.batch_sizes)
        return sorted({1, self.train_batch_size(name)})

    def sync(self) -> None:
        synchronize(self.device)

    def budget_for(self, name: str, phase: str) -> float | None:
        """Seconds this phase may spend on model ``name``: its cost's share of what is left of the run's budget
        (None: no budget). A phase sizes its windows/calls with it and still meets its sample rules; when the two
        disagree, the rules win and the row prints fewer percentiles, never a made-up one."""
        return None if self.budget is None else self.budget.seconds_for(name, phase)


@dataclass
class ModelSession:
    """One model under test: the module in eval mode on the device, where its weights came from, and artifacts that
    several phases share (e.g. the ONNX export), built once on first use and kept in ``cache``."""

    name: str
    model: nn.Module
    weights: str = "random"  # "checkpoint" | "random"
    checkpoint: str | None = None
    checkpoint_acc: float | None = None
    pretrained: bool = False
    cache: dict[str, Any] = field(default_factory=dict)
    flops_per_sample: float | None = None  # forward, torch.utils.flop_counter (the "model" record's figure)
    train_flops_per_sample: float | None = None  # forward + backward

    @functools.cached_property
    def spec(self) -> zoo.ModelSpec:
        return zoo.get_spec(self.name)


def example_batch(name: str, batch_size: int, device: torch.device | str, seed: int = 0) -> torch.Tensor:
    """A fixed, seeded input batch of the model's input shape (what parity and latency run on)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch_size, *zoo.get_spec(name).input_shape, generator=g).to(device)
