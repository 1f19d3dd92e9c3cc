"""Exact-step autotuning: pick the fastest way to run the very same training step on this machine.

Every option probed keeps the step's fp32 maths and the model's architecture: the memory format (contiguous or
channels_last, for 4-D conv models), the optimizer kernel (fused, foreach or the per-tensor loop: PyTorch's three
implementations of one update), ``torch.compile`` (default mode, probed only when the run's planned steps could pay
its compile time back). ``cudnn.benchmark`` is on for every trial and for the run (zoo.execution.CUDNN_BENCHMARK:
cuDNN's plan cache keeps the first plan per shape, so it cannot be a per-trial choice). Mixed precision is never a
candidate: the precision is the caller's, passed through unchanged. TF32 is left as it is.

The probe runs on deep copies (the caller's model and optimizer are untouched, and the RNG state is restored, so a
tuned run draws the same dropout masks as an untuned one) and times the candidates INTERLEAVED: every round runs
every candidate once, in a rotated order, so a slow spell on a shared machine hits all of them alike; a candidate's
rate is the median over rounds of samples stepped / window seconds (perf_counter, device sync around each window).

Float sums are reordered by channels_last convolutions and by the fused/foreach kernels, so a tuned run matches an
untuned one to float tolerance, not bit for bit.
"""
from __future__ import annotations

import copy
import dataclasses
import logging
import statistics
import time
from collections.abc import Iterable

import torch
from torch import nn

from zoo.engine import (
    StepStats,
    synchronize,
    train_step,
)
from zoo.execution import (  # noqa: F401 - re-exported: what a choice is lives beside how it is measured
    COMPILE_MODE,
    Candidate,
    TuneChoice,
    apply_compile,
    build_tuned,
    changes,
    default_candidate,
    eager_candidates,
    has_conv2d,
    untuned,
)
from zoo.registry import Recipe

log = logging.getLogger("zoo")

TUNE_MODES = ("auto", "off")  # python -m zoo.train --tune
# The least a torch.compile of a zoo model's step costs (CPU inductor here: about a second with a warm cache, 3-4 s
# with a cold one, more for the process's first). Compile is probed only when the tuner's budget (at most
# MAX_TUNE_FRACTION of the run) holds this much: the compile is a probe cost too (a one-epoch LeNet run of 4.7 s spent
# 2.2 s in a probe that compiled, to keep the eager step).
COMPILE_MIN_S = 2.0
# Leave the default configuration unless a candidate beats it by more than this: interleaved medians on a shared
# machine still differ by a percent or two between identical configurations.
MIN_GAIN = 1.02
COMPILE_STAGE_SHARE = 0.4  # of the budget, kept for timing the compiled candidate against the eager choice
# A probe costs at most this share of the run it tunes (its estimated eager time), and is skipped when that share is
# under MIN_BUDGET_S or cannot hold every eager candidate's least timing: a short run gains less than the probe would
# cost. (A one-epoch LeNet run of ~5 s still pays for a 0.5 s probe: channels_last made its step 1.3x faster here.)
MAX_TUNE_FRACTION = 0.1
MIN_BUDGET_S = 0.25
WINDOW_S = 0.15  # one timed window of one candidate
WARM_S = 0.1  # the most a candidate's timed warm-up burst lasts (5% of the budget when that is less)
MIN_ROUNDS, MAX_ROUNDS = 3, 15
WARM_STEPS = 2  # Trial.warm at least: the first call and a burst of at least one step


# ---------------------------------------------------------------------------------------------------------------
# Measuring


class Trial:
    """One candidate being timed on its own deep copy of the model."""

    def __init__(self, cand: Candidate, model: nn.Module, recipe: Recipe, x, y, device, precision):
        self.cand, self.x, self.y, self.device = cand, x, y, device
        eager = dataclasses.replace(cand, compile=None)
        copy_ = copy.deepcopy(model).train()
        # Learning rate 0: the same kernels and arithmetic, but the copy stays at the run's starting weights. A copy
        # stepped hundreds of times on one batch would fit it and drift into tiny gradients (denormal floats,
        # tens of times slower on CPUs), which the run itself never sees and which would favour later trials.
        self.net, self.optimizer, self.opts = build_tuned(eager, copy_, recipe, device, lr=0.0, precision=precision)
        self.net = apply_compile(self.net, cand.compile)
        self.stats = StepStats(device)
        self.steps, self.step_s, self.first_s = 1, 0.0, 0.0
        self.rates: list[float] = []

    def step(self) -> None:
        train_step(self.net, self.optimizer, self.x, self.y, self.opts, self.stats)

    def warm(self, burst_s: float = WARM_S) -> None:
        """First call (one-off costs: compile, cuDNN autotuning, allocator growth), then a timed burst (>= 1 step,
        ~``burst_s``) for the step time: two steps in all for a step slower than the burst."""
        synchronize(self.device)
        t = time.perf_counter()
        self.step()
        synchronize(self.device)
        self.first_s = time.perf_counter() - t
        n, t = 0, time.perf_counter()
        while n < 1 or time.perf_counter() - t < burst_s:
            self.step()
            synchronize(self.device)
            n += 1
        self.step_s = max((time.perf_counter() - t) / n, 1e-6)

    def median(self) -> float:
        return statistics.median(self.rates)


def time_interleaved(trials: list[Trial], budget_s: float) -> None:
    """Rounds in which every trial steps for a window of ~WINDOW_S, in a rotated order; each window's samples/s is
    appended to ``trial.rates``. Many short rounds beat few long ones on a shared machine: a burst of load then
    spoils a few windows of every trial instead of most of one trial's. Step counts are re-sized from the rates
    measured so far (one warm-up step is a poor estimate), and rounds stop when the budget is spent (MIN_ROUNDS
    at least; slow steps get one-step windows). A window of several steps runs one untimed step first: the switch
    from another trial's weights and optimizer state is paid there, as the bench's rows pay theirs, so a probe's
    rate and the row that runs its choice measure alike.

    bench.phases.train.phase.time_rows also times windows round-robin, and the two stay apart on purpose (zoo never
    imports bench): the tuner ranks candidates of unknown speed inside a probe of a second or two, so it re-sizes
    its windows after every round and keeps only rates; the bench's rows are records whose windows are samples of
    one fixed length, sized once, with a failing row recorded and dropped from the rotation."""
    window_s = min(WINDOW_S, budget_s / (MIN_ROUNDS * len(trials)))  # a small budget: shorter windows
    per_round_s = sum(max(t.step_s, window_s) for t in trials)
    rounds = int(min(MAX_ROUNDS, max(MIN_ROUNDS, budget_s / per_round_s)))
    for t in trials:
        t.steps = max(1, round(window_s / t.step_s))
    batch = trials[0].y.shape[0]
    started = time.perf_counter()
    for r in range(rounds):
        for t in trials[r % len(trials):] + trials[:r % len(trials)]:
            if t.steps > 1:  # warm, as bench's training rows do: the switch from the trial before stays out of it
                t.step()
            synchronize(t.device)
            start = time.perf_counter()
            for _ in range(t.steps):
                t.step()
            synchronize(t.device)
            t.rates.append(t.steps * batch / (time.perf_counter() - start))
        for t in trials:
            t.steps = max(1, round(window_s * t.median() / batch))
        if r + 1 >= MIN_ROUNDS and time.perf_counter() - started > budget_s:
            break


def _start(cands: Iterable[Candidate], model, recipe, x, y, device, precision, *, first_required: bool = True,
           left_s: float | None = None, prior: list[Trial] | None = None) -> list[Trial]:
    """Built and warmed trials; a candidate that cannot run here (no kernel, compiler missing) is left out, except
    the first when ``first_required`` (the reference configuration must run: its failure is the caller's bug).

    With ``left_s``, candidates are started, in order, only while ``fits`` says the next one (beside ``prior`` and
    those already started) still fits in what is left of it; the rest are not probed."""
    began = time.perf_counter()
    burst_s = WARM_S if left_s is None else min(WARM_S, 0.05 * max(left_s, 0.0))
    trials: list[Trial] = []
    for i, cand in enumerate(cands):
        running = list(prior or []) + trials
        if left_s is not None and running and not fits(running, left_s - (time.perf_counter() - began), burst_s):
            log.debug("tune: budget spent; not probed from %s on", cand.label)
            break
        try:
            trial = Trial(cand, model, recipe, x, y, device, precision)
            trial.warm(burst_s)
            trials.append(trial)
        except Exception as exc:  # noqa: BLE001 - a candidate that fails is not chosen; the default must run
            if i == 0 and first_required:
                raise
            log.debug("tune: %s left out: %s: %s", cand.label, type(exc).__name__, exc)
    return trials


def fits(trials: list[Trial], left_s: float, burst_s: float = WARM_S) -> bool:
    """Whether one more candidate fits in ``left_s``: its warm-up (a first call and a burst, at the fastest step seen
    so far) plus MIN_ROUNDS one-step windows of every trial, the new one included (the least time_interleaved
    takes)."""
    step_s = min(t.step_s for t in trials)
    need_s = step_s + max(burst_s, step_s) + MIN_ROUNDS * (step_s + sum(t.step_s for t in trials))
    return need_s <= left_s


class _Preserved:
    """Restores what probing touches outside the copies: the RNG states (dropout draws)."""

    def __init__(self, device: torch.device):
        devices = [device.index if device.index is not None else torch.cuda.current_device()] \
            if device.type == "cuda" else []
        self.fork = torch.random.fork_rng(devices=devices)

    def __enter__(self):
        self.fork.__enter__()

    def __exit__(self, *exc):
        return self.fork.__exit__(*exc)


def pick_fastest(trials: list[Trial]) -> Trial:
    """The fastest trial by median rate; ``trials[0]`` (the reference) unless beaten by more than MIN_GAIN and in
    at least two thirds of the rounds (a burst of load in a few windows must not pick a winner)."""
    ref = trials[0]
    best = max(trials, key=Trial.median)
    wins = sum(a > b for a, b in zip(best.rates, ref.rates))
    return best if best.median() > MIN_GAIN * ref.median() and 3 * wins >= 2 * len(ref.rates) else ref


def autotune(model: nn.Module, recipe: Recipe, x: torch.Tensor, y: torch.Tensor, device: torch.device | str, *,
             precision: str = "fp32", steps_planned: int | None = None, budget_s: float = 10.0,
             candidates: Iterable[Candidate] | None = None,
             reference: Candidate | None = None, probe_compile: bool = True) -> TuneChoice:
    """The fastest configuration of this exact step on batch (x, y), measured on copies of ``model``.

    ``candidates`` (default: every eager configuration the device offers, then compile of the best one when
    ``steps_planned`` could pay for it) are timed interleaved for about ``budget_s`` seconds in all (plus warm-up
    and, when probed, the compile time), against ``reference`` (default: the untuned configuration), which wins
    unless beaten by MIN_GAIN and which ``gain`` divides by. With ``steps_planned``, the probe takes at most
    MAX_TUNE_FRACTION of the run's estimated eager time, and a run too short for even MIN_BUDGET_S is not probed
    (the reference, ``measured`` empty). ``probe_compile=False`` leaves compile out (e.g. the user chose it).
    ``precision`` is used as given; it is never a candidate.
    """
    device = torch.device(device)
    default = reference or default_candidate(model, recipe, device)
    cands = eager_candidates(model, recipe, x, device) if candidates is None else list(candidates)
    eager = [default] + [c for c in cands if not c.compile and c != default]
    compiled = [c for c in cands if c.compile]  # empty: compile the best eager candidate, if compile may pay
    started = time.perf_counter()
    with _Preserved(device):
        trials = _start(eager[:1], model, recipe, x, y, device, precision, left_s=budget_s)
        if steps_planned is not None:
            share_s = MAX_TUNE_FRACTION * steps_planned * trials[0].step_s
            budget_s = min(budget_s, share_s)
            # The least a probe can cost: every candidate's warm-up and MIN_ROUNDS windows of at least one step.
            least_s = len(eager) * trials[0].step_s * (WARM_STEPS + MIN_ROUNDS)
            if share_s < max(MIN_BUDGET_S, least_s):
                # No figures in the reason: it is stored in every metrics line, which a resume must reproduce.
                reason = f"the run is too short to pay for a probe ({MAX_TUNE_FRACTION:.0%} of its eager time)"
                log.debug("tune: ~%d steps, %.2f s probe at most: %s; %s", steps_planned, share_s, reason,
                          default.label)
                return TuneChoice.of(default, reason=reason)
        left_s = budget_s - (time.perf_counter() - started)
        trials += _start(eager[1:], model, recipe, x, y, device, precision, first_required=False, left_s=left_s,
                         prior=trials)
        best_step_s = min(t.step_s for t in trials)
        # The budget must hold the least compile time (COMPILE_MIN_S), and the compile stage's timing must fit its
        # share of it (compile_stage_fits), or its verdict is noise.
        may_compile = probe_compile and steps_planned is not None and budget_s >= COMPILE_MIN_S \
            and compile_stage_fits(best_step_s, budget_s)
        if len(trials) == 1 and not may_compile:  # nothing to compare within the budget: the default, unmeasured
            reason = "no candidate beside the default fits in the tuner's budget"
            log.info("tune: %s (%.1f s); left untuned (%s)", reason, budget_s, default.label)
            return TuneChoice.of(trials[0].cand, reason=reason)
        stage_s = budget_s * (1.0 - COMPILE_STAGE_SHARE if may_compile else 1.0) - (time.perf_counter() - started)
        time_interleaved(trials, max(stage_s, 0.25 * budget_s))
        best = pick_fastest(trials)
        measured = {t.cand.label: t.median() for t in trials}
        choice = TuneChoice.of(best.cand, gain=best.median() / trials[0].median(), measured=measured)
        if may_compile:
            compiled = compiled or [dataclasses.replace(best.cand, compile=COMPILE_MODE)]
            left_s = max(budget_s - (time.perf_counter() - started), COMPILE_STAGE_SHARE * budget_s)
            choice = _probe_compile(choice, best, compiled, steps_planned, left_s, model, recipe, precision)
    log.debug("tune: %s, %.2fx %s | measured samples/s: %s", choice.label, choice.gain, default.label,
              ", ".join(f"{k} {v:,.0f}" for k, v in choice.measured.items()))
    return choice


def compile_stage_fits(step_s: float, budget_s: float) -> bool:
    """Whether the compile stage's least work fits in the share it is sure of (COMPILE_STAGE_SHARE of the budget):
    the compiled trial's warm-up steps and MIN_ROUNDS one-step windows of it and of the eager choice. The compile
    itself is not counted (it cannot be known before it runs): AlexNet at batch 512 on 2 CPU cores (~1.7 s a step)
    would spend ~14 s timing it, against a 10 s budget."""
    return (WARM_STEPS + 2 * MIN_ROUNDS) * step_s <= COMPILE_STAGE_SHARE * budget_s


def compile_pays(eager_samples_per_s: float, compiled_samples_per_s: float, compile_s: float, steps_planned: int,
                 batch_size: int) -> bool:
    """Whether the run's planned steps save more seconds than the compile costs: steps x per-step saving > compile."""
    saving_s = batch_size / eager_samples_per_s - batch_size / compiled_samples_per_s
    return steps_planned * saving_s > compile_s


def _probe_compile(choice: TuneChoice, eager: Trial, cands: list[Candidate], steps_planned: int, budget_s: float,
                   model, recipe, precision) -> TuneChoice:
    """Compile each candidate (its first call's seconds are the compile cost), time it interleaved against the best
    eager trial, and take it only when it is faster by MIN_GAIN and steps_planned x saving > compile seconds."""
    trials = _start(cands, model, recipe, eager.x, eager.y, eager.device, precision, first_required=False)
    if not trials:
        return choice
    eager.rates = []
    time_interleaved([eager, *trials], budget_s)
    batch = eager.y.shape[0]
    measured, best, best_ratio, compile_s = dict(choice.measured), None, MIN_GAIN, None
    # Raw medians of this stage: the eager choice re-measured beside the compiled ones (machine load differs
    # between stages, so compiled rates compare with this figure, not with the first stage's).
    measured[f"{eager.cand.label} (compile stage)"] = eager.median()
    for t in trials:
        t_compile_s = max(t.first_s - t.step_s, 0.0)
        compile_s = t_compile_s if compile_s is None else min(compile_s, t_compile_s)
        measured[t.cand.label] = t.median()
        ratio = t.median() / eager.median()
        if ratio > best_ratio and compile_pays(eager.median(), t.median(), t_compile_s, steps_planned, batch):
            best, best_ratio, compile_s = t, ratio, t_compile_s
    if best is None:
        return dataclasses.replace(choice, measured=measured, compile_s=compile_s)
    # Chained through the eager choice, which both stages measured: (compiled / eager) x (eager / default).
    return TuneChoice.of(best.cand, gain=choice.gain * best_ratio, measured=measured, compile_s=compile_s)
