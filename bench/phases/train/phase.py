"""Training throughput: the training ladder, from the tutorial's own loop to the compute bound (TRAIN_LADDER).

Every row trains the same model from one seeded initialisation (copied, never re-drawn), in fp32, at the same batch
(``ctx.train_batch_size``), and returns the samples each step actually stepped:
- ``tutorial_loop``: the tutorial's loop as its code does it (bench.phases.train.tutorial_loop has the per-model table): its
  DataLoader (shuffle / drop_last / pin_memory from ``spec.tutorial_loop``), the optimizer with PyTorch's defaults,
  a blocking ``.to(device)`` per batch, forward, loss, zero_grad / backward / step, then its host reads, progress
  prints (to os.devnull) and TensorBoard ``add_scalar`` (a real SummaryWriter into a temporary folder).
- ``fused_optimizer``: the same loop with the fused optimizer kernel (``build_optimizer(fused=True)``).
- ``no_host_read``: the shared loop's ``train_step`` (device-side running stats, no host read) on the same DataLoader.
- ``fast_untuned``: ``train_step`` on the device-resident FastLoader.
- ``fast``: ``train_step`` on the FastLoader with the exact-step tuner's choice (zoo.tune.autotune on one batch: memory
  format, optimizer kernel, compile when it pays and fits: tune_probes_compile), in ``tuned``.
- ``compute``: ``train_step`` on one batch on the device, under the fast row's choice (its fields say which layout and
  compile; a variant of the same key is that row): every rung's one bound; plus one per precision/variant.

Timing (bench.measure.timing): each row's window is sized to ~0.5 s (0.15 s with --quick), then the windows run
round-robin in a rotating order, so a slow spell on a shared machine hits every row alike; a window of several steps
first runs one untimed step (the switch from another row's model, data and optimizer state is paid there, not in the
window: the tuner's probe does the same). A row's rate is the median over windows of samples stepped / window seconds
(``window_rates``). Then H1 (fast over tutorial_loop) is timed to a precision (bench.phases.train.rounds) in H1_SHARE of
the seconds left. Memory is measured one row at a time while the row is built (``PeakMemory``), its peak reset after
the first (warm) step and read over one steady step, which also sizes a slow row's windows.

The run's budget (``ctx.budget_for(name, "train")``, fitted to the rows' prices: train_cost) sizes the work: dropped
rows are not built, each row's split holds what its seconds can step, the tuner gets TUNE_SHARE (at most
TUNE_BUDGET_S), and the windows share what is left, never fewer than MIN_WINDOWS (3 with --quick, 5 otherwise).
"""
from __future__ import annotations

import contextlib
import copy
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

import zoo
from bench.context import BenchContext, ModelSession
from bench.measure import timing
from bench.measure.memory import PeakMemory
from bench.measure.timing import window_stats
from bench.phases.base import Phase, Priced, kept, profile_train_rows
from bench.phases.train.derive import derive, is_plain, train_flops_per_sample  # noqa: F401 (is_plain: for readers)
from bench.phases.train.rounds import (  # noqa: F401 (the windows' sizes and time_rows: for readers)
    MAX_WINDOWS,
    MEMORY_STEPS,
    MIN_WINDOW_S,
    MIN_WINDOWS,
    WINDOW_S,
    time_all,
    time_rows,
    window_steps,
    window_target_s,
)
from bench.phases.train.tutorial_loop import TutorialStep
from bench.records import TRAIN_LADDER, Record, TrainRecord, not_ok
from bench.schedule.train_cost import price_rows, row_label, split_steps
from zoo.data import DATASETS, batches_forever, make_loaders
from zoo.engine import StepOptions, StepStats, build_optimizer, train_step
from zoo.tune import COMPILE_MIN_S, TuneChoice, autotune, build_tuned

TUNE_BUDGET_S = {True: 2.0, False: 10.0}  # the most the tuner may take per model (quick, full)
# The least: room for the default and one candidate (a model after an overrun still gets its memory-format probe) and,
# in a full run, for the least compile (the tuner probes compile only when its budget holds COMPILE_MIN_S).
TUNE_MIN_S = {True: 0.5, False: max(2.0, COMPILE_MIN_S)}
TUNE_SHARE = 0.2  # of the model's train budget: the tuner serves one row of the ladder
# Compile is probed by the tuner (as zoo.train's would) without a budget or when the model's train budget holds a
# compile: with an empty inductor cache a zoo model's step took 3.4-4.4 s to compile in a run here (10 s for AlexNet
# at batch 512 and for the process's first compile, inductor's start-up included).
TUNE_COMPILE_MIN_BUDGET_S = 5.0
STEPS_PER_SPLIT = {True: 40, False: 400}  # batches in the train split per row (quick, full): enough for warm-up


@dataclass
class RowPlan:
    """What one row is: its ladder name and the compute variant (precision, layout, compile mode)."""

    row: str
    precision: str = "fp32"
    channels_last: bool = False
    compile: str | None = None

    def key_fields(self) -> dict[str, Any]:
        return {"row": self.row, "precision": self.precision, "channels_last": self.channels_last,
                "compile": self.compile}


@dataclass
class TimedRow:
    """A row being measured: its step (returns samples stepped), what to close after, and what it measured."""

    plan: RowPlan
    step: Callable[[], int]
    resources: contextlib.ExitStack
    compile_s: float | None = None
    tuned: dict[str, Any] | None = None
    steps_per_window: int = 1
    step_s: float | None = None  # one steady-state step, timed after the build (steady_step)
    rates: list[float] = field(default_factory=list)
    samples: int = 0
    peak_mem_mb: float | None = None
    mem_delta_mb: float | None = None
    mem_held_mb: float | None = None
    error: BaseException | None = None


def plan_rows(ctx: BenchContext) -> list[RowPlan]:
    plans = [RowPlan(r) for r in TRAIN_LADDER]
    plans += [RowPlan("compute", precision=p) for p in ctx.precisions if p != "fp32"]
    plans += [RowPlan("compute", precision=v.get("precision", "fp32"), channels_last=bool(v.get("channels_last")),
                      compile=v.get("compile")) for v in ctx.train_variants]
    return plans


def tune_budget_s(quick: bool, budget_s: float | None) -> float:
    """The tuner's seconds for one model: TUNE_SHARE of the phase's budget, within [TUNE_MIN_S, TUNE_BUDGET_S] (no
    budget: the most)."""
    most = TUNE_BUDGET_S[quick]
    return most if budget_s is None else max(TUNE_MIN_S[quick], min(most, TUNE_SHARE * budget_s))


def tune_probes_compile(quick: bool, budget_s: float | None) -> bool:
    """Whether the fast row's tuner may probe torch.compile: never in --quick; without a budget, or with a train
    budget that holds a compile (TUNE_COMPILE_MIN_BUDGET_S). The tuner then decides as zoo.train's does."""
    return not quick and (budget_s is None or budget_s >= TUNE_COMPILE_MIN_BUDGET_S)


class RowBuilder:
    """Builds each row's step for one model: the same initial weights, batch and data split for every row."""

    def __init__(self, name: str, ctx: BenchContext, tune_s: float | None = None, probe_compile: bool = False,
                 steps: int | None = None):
        self.name, self.ctx, self.spec = name, ctx, zoo.get_spec(name)
        self.steps = steps or STEPS_PER_SPLIT[ctx.quick]
        self.batch_size = ctx.train_batch_size(name)
        self.tune_s = TUNE_BUDGET_S[ctx.quick] if tune_s is None else tune_s
        self.probe_compile = probe_compile
        self.fast_choice: TuneChoice | None = None  # the fast row's, which the plain compute bound runs too
        torch.manual_seed(ctx.seed)
        kwargs = {"pretrained": "off"} if self.spec.uses_pretrained else {}
        self.template = zoo.get_model(name, **kwargs)  # AlexNet's init takes ~1 s: drawn once, copied per row
        self.loaders: dict[str, Any] = {}

    def model(self) -> torch.nn.Module:
        return copy.deepcopy(self.template).to(self.ctx.device).train()

    def loader(self, kind: str):
        """The train split, on the tutorial's DataLoader settings (tutorial) or the shared loop's (fast), built once
        per kind and shared by the rows (each row iterates it on its own; the fast split is transformed once)."""
        if kind not in self.loaders:
            self.loaders[kind] = self._make_loader(kind)
        return self.loaders[kind]

    def _make_loader(self, kind: str):
        ctx, tl = self.ctx, self.spec.tutorial_loop
        overrides = dict(shuffle=tl.shuffle, drop_last=tl.drop_last, pin_memory=tl.pin_memory) \
            if kind == "tutorial" else {}
        return make_loaders(self.spec, loader=kind, device=ctx.device, root=ctx.data_root,
                            synthetic=not ctx.uses_real_data(self.name), batch_size=self.batch_size, seed=ctx.seed,
                            train_samples=self.batch_size * self.steps, test_samples=1,
                            **overrides).train

    def tutorial_step(self, fused: bool, resources: contextlib.ExitStack) -> Callable[[], int]:
        tl, model = self.spec.tutorial_loop, self.model()
        optimizer = build_optimizer(self.spec.recipe, model, fused=fused or not tl.default_optimizer)
        sink = resources.enter_context(open(os.devnull, "w"))
        writer = None
        if tl.tensorboard_every:
            from torch.utils.tensorboard import SummaryWriter

            folder = resources.enter_context(tempfile.TemporaryDirectory(prefix="bench-tb-"))
            writer = SummaryWriter(folder)
            resources.callback(writer.close)  # registered after the folder: closed before it is removed
        return TutorialStep(self.name, model, optimizer, self.loader("tutorial"), self.ctx.device, tl, sink, writer)

    def shared_step(self, plan: RowPlan) -> Callable[[], int]:
        model = self.model()
        if plan.channels_last:
            model = model.to(memory_format=torch.channels_last)
        optimizer = build_optimizer(self.spec.recipe, model, fused=True)
        opts = StepOptions(self.ctx.device, plan.precision, plan.channels_last)
        net = torch.compile(model, mode=None if plan.compile == "default" else plan.compile) \
            if plan.compile else model
        stats = StepStats(self.ctx.device)
        if plan.row == "compute":
            x, y = next(batches_forever(self.loader("fast")))
            batches = iter(lambda: (x, y), None)
        else:
            batches = batches_forever(self.loader("tutorial" if plan.row == "no_host_read" else "fast"))

        def step() -> int:
            bx, by = next(batches)
            train_step(net, optimizer, bx, by, opts, stats)
            return int(by.shape[0])

        return step

    def tuned_step(self, choice: TuneChoice | None = None) -> tuple[Callable[[], int], dict[str, Any]]:
        """The fast row: the tuner's choice for this exact step, measured on one batch of the fast loader. With
        ``choice`` (the fast row's), the plain compute bound under that same choice, on one batch on the device."""
        ctx, recipe = self.ctx, self.spec.recipe
        batches = batches_forever(self.loader("fast"))
        x, y = next(batches)
        model = self.model()
        if choice is not None:
            batches = iter(lambda: (x, y), None)
        else:  # compile is probed when the phase can afford it and the recipe's run would pay it back
            steps_planned = recipe.epochs * DATASETS[self.spec.dataset][2][0] // self.batch_size \
                if self.probe_compile else None
            choice = self.fast_choice = autotune(model, recipe, x, y, ctx.device, steps_planned=steps_planned,
                                                 budget_s=self.tune_s)
        net, optimizer, opts = build_tuned(choice, model, recipe, ctx.device)  # cudnn.benchmark stays on, as the policy
        stats = StepStats(ctx.device)

        def step() -> int:
            bx, by = next(batches)
            train_step(net, optimizer, bx, by, opts, stats)
            return int(by.shape[0])

        return step, choice.to_dict()

    def build(self, plan: RowPlan) -> TimedRow:
        """The row, after one untimed step (a configuration that cannot run fails here; compile time is kept)."""
        resources = contextlib.ExitStack()
        try:
            tuned = None
            if plan.row in ("tutorial_loop", "fused_optimizer"):
                step = self.tutorial_step(plan.row == "fused_optimizer", resources)
            elif plan.row == "fast" or (plan == RowPlan("compute") and self.fast_choice is not None):
                step, tuned = self.tuned_step(None if plan.row == "fast" else self.fast_choice)
                if plan.row == "compute":  # its fields say what it runs: the fast row's layout and compile
                    plan = RowPlan("compute", channels_last=self.fast_choice.channels_last,
                                   compile=self.fast_choice.compile)
            else:
                step = self.shared_step(plan)
            t = time.perf_counter()
            step()
            self.ctx.sync()
            first_s = time.perf_counter() - t
            compiled = plan.compile or (tuned or {}).get("compile")
            return TimedRow(plan, step, resources, compile_s=first_s if compiled else None, tuned=tuned)
        except BaseException:
            resources.close()
            raise


def steady_step(row: TimedRow, sync: Callable[[], None]) -> None:
    """MEMORY_STEPS steady steps after the build's first, timed (``row.step_s``): a row's memory is read over them."""
    sync()
    t0 = timing.clock()
    for _ in range(MEMORY_STEPS):
        row.step()
    sync()
    row.step_s = (timing.clock() - t0) / MEMORY_STEPS


def measure_row(builder: RowBuilder, plan: RowPlan) -> TimedRow:
    """One row built in its own PeakMemory block, the peak reset after its first (warm) step, then its steady step:
    the row's peak leaves out the first step's one-off work, as an inference row's leaves out its warm calls'."""
    with PeakMemory(builder.ctx.device) as mem:
        row = builder.build(plan)
        try:
            mem.reset_peak()
            steady_step(row, builder.ctx.sync)
        except BaseException:
            row.resources.close()
            raise
    row.peak_mem_mb, row.mem_delta_mb, row.mem_held_mb = mem.peak_mb, mem.delta_mb, mem.held_mb
    return row


def _base_fields(name: str, ctx: BenchContext) -> dict[str, Any]:
    return {"batch_size": ctx.train_batch_size(name), "data": ctx.data_label(name), "quick": ctx.quick,
            "threads": torch.get_num_threads()}


def _failed(name: str, ctx: BenchContext, plan: RowPlan, exc: BaseException) -> Record:
    status = "skipped" if isinstance(exc, torch.OutOfMemoryError) else "failed"
    reason: BaseException | str = exc
    if status == "skipped":
        reason = f"out of memory at batch {ctx.train_batch_size(name)}"
    return not_ok(TrainRecord, name, ctx.device.type, reason, status=status, **_base_fields(name, ctx),
                  **plan.key_fields())


def to_record(name: str, ctx: BenchContext, row: TimedRow) -> Record:
    if row.error is not None:
        return _failed(name, ctx, row.plan, row.error)
    return TrainRecord(model=name, device=ctx.device.type, **_base_fields(name, ctx), **row.plan.key_fields(),
                       **window_stats(row.rates), tuned=row.tuned, steps_per_window=row.steps_per_window, samples_stepped=row.samples, compile_s=row.compile_s,
                       peak_mem_mb=row.peak_mem_mb, mem_delta_mb=row.mem_delta_mb,
                       mem_held_mb=row.mem_held_mb)


class TrainPhase(Phase):
    name = "train"
    record_type = TrainRecord

    def planned_rows(self, name: str, ctx: BenchContext) -> int:
        return len(plan_rows(ctx))

    def row_costs(self, name: str, ctx: BenchContext, prices) -> Priced:
        q = ctx.quick
        return price_rows(name, ctx, prices, plan_rows(ctx), dict(
            MIN_WINDOWS=MIN_WINDOWS[q], MAX_WINDOWS=MAX_WINDOWS[q], WINDOW_S=WINDOW_S[q], MIN_WINDOW_S=MIN_WINDOW_S,
            TUNE_MIN_S=TUNE_MIN_S[q], TUNE_BUDGET_S=TUNE_BUDGET_S[q], STEPS_PER_SPLIT=STEPS_PER_SPLIT[q]))

    def run(self, session: ModelSession, ctx: BenchContext) -> list[Record]:
        name, began = session.name, timing.clock()
        budget_s = ctx.budget_for(name, self.name)
        plans = [p for p in plan_rows(ctx) if kept(ctx, name, self.name, row_label(p))]  # the rest: the budget's
        row_s = None if budget_s is None else budget_s / max(len(plans), 1)
        builder = RowBuilder(name, ctx, tune_s=tune_budget_s(ctx.quick, budget_s),
                             probe_compile=tune_probes_compile(ctx.quick, budget_s),
                             steps=split_steps(name, ctx, row_s, STEPS_PER_SPLIT[ctx.quick]))
        flops = session.cache.get("train_flops_per_sample")
        if flops is None:  # the driver counted it on the meta device when it planned the run; else count here
            flops = session.cache["train_flops_per_sample"] = session.train_flops_per_sample or \
                train_flops_per_sample(builder.template, session.spec.input_shape)
        built: list[TimedRow | Record] = []
        for i, plan in enumerate(plans):
            if any(isinstance(b, TimedRow) and b.plan == plan for b in built):
                continue  # the compute row ran this very configuration (the tuner's choice): one row, not two
            ctx.activity = f"building row {i + 1} of {len(plans)} ({row_label(plan)})"
            builder.loaders.clear()  # each row builds the data it keeps: its memory includes that data
            try:
                built.append(measure_row(builder, plan))
            except Exception as exc:  # a failing variant is recorded, the other rows go on
                built.append(_failed(name, ctx, plan, exc))
        timed = [b for b in built if isinstance(b, TimedRow)]
        try:
            answer = time_all(timed, ctx, None if budget_s is None else budget_s - (timing.clock() - began))
            profile_train_rows(timed, name, ctx)  # --profile: one more window per row, after every timed one
        finally:
            for row in timed:
                row.resources.close()
        records = [to_record(name, ctx, b) if isinstance(b, TimedRow) else b for b in built]
        for rec in records:  # H1's answer: derive() states the precision reached from the same windows
            if answer is not None and isinstance(rec, TrainRecord) and rec.ok and rec.row == "fast" and is_plain(rec):
                rec.target_pct = answer.target_pct
        derive([r for r in records if isinstance(r, TrainRecord)], flops, ctx.peaks)
        return records

    def failed(self, session: ModelSession, ctx: BenchContext, exc: BaseException) -> list[Record]:
        return [_failed(session.name, ctx, plan, exc) for plan in plan_rows(ctx)]
