"""The training rows' derived fields (rung gains, speedups, fraction of the compute bound, above_bound, GFLOP/s and
% of peak), filled once by the phase so readers (report, compare) never recompute them."""
from __future__ import annotations

import copy
from typing import Any

import torch

from bench.measure.machine import pct_of_peak
from bench.measure.stats import median_ratio_ci
from bench.model.flops import count_flops
from bench.phases.train.rounds import half_width_pct
from bench.records import TRAIN_LADDER, TrainRecord


def train_flops_per_sample(model: torch.nn.Module, input_shape: tuple[int, ...]) -> float:
    """Forward + backward FLOPs per sample (bench.model.flops), on a throw-away copy on the CPU."""
    return count_flops(copy.deepcopy(model).cpu(), torch.randn(2, *input_shape), train=True)


def is_plain(rec: TrainRecord) -> bool:
    """fp32, default layout, eager: the ladder's own setting."""
    return rec.precision == "fp32" and not rec.channels_last and not rec.compile


def _ratio(a: TrainRecord, b: TrainRecord | None) -> float | None:
    if b is None or not a.samples_per_s or not b.samples_per_s:
        return None
    return a.samples_per_s / b.samples_per_s


def ratio_ci(a: TrainRecord, b: TrainRecord | None) -> tuple[float | None, float | None]:
    """The 95% interval of ``a``'s median window rate over ``b``'s (a bootstrap over each row's windows: two windows
    a side at least), (None, None) without one."""
    if b is None or len(a.window_rates) < 2 or len(b.window_rates) < 2 or not _ratio(a, b):
        return None, None
    _, lo, hi = median_ratio_ci(b.window_rates, a.window_rates)  # median(a) / median(b)
    return lo, hi


def same_config(rec: TrainRecord, before: TrainRecord) -> bool:
    """Whether the fast rung runs fast_untuned's very configuration: the tuner kept the default (contiguous, the
    fused kernel fast_untuned builds, no compile)."""
    tuned = rec.tuned or {}
    return rec.row == "fast" and before.row == "fast_untuned" and bool(tuned) and not tuned.get("channels_last") \
        and not tuned.get("compile") and tuned.get("optimizer_impl") == "fused"


def above_bound(rates: list[float], bound_rates: list[float]) -> bool:
    """True when the row beats its bound by more than the noise: the bootstrap interval of the ratio of median
    window rates lies wholly above 1 (with fewer than two windows on either side nothing is beyond the noise)."""
    if len(rates) < 2 or len(bound_rates) < 2:
        return False
    _, lo, _ = median_ratio_ci(bound_rates, rates)  # median(rates) / median(bound_rates)
    return lo > 1.0


def ladder_bound(ok: list[TrainRecord]) -> TrainRecord | None:
    """The one compute row every rung's "% of compute" divides by: the row that ran the fast rung's choice (its
    ``tuned``), else the plain fp32 compute row."""
    computes = [r for r in ok if r.row == "compute" and r.precision == "fp32"]
    return next((r for r in computes if r.tuned), None) or next((r for r in computes if is_plain(r)), None)


def bound_of(rec: TrainRecord, ok: list[TrainRecord]) -> TrainRecord | None:
    """The compute row that bounds ``rec``: the ladder's one bound (ladder_bound) for every fp32 rung, the compute
    row of its own precision otherwise."""
    if rec.precision == "fp32":
        return ladder_bound(ok)
    return next((r for r in ok if r.row == "compute" and r.precision == rec.precision), None)


def derive(records: list[TrainRecord], flops_per_sample: float | None, peaks: dict[str, Any]) -> None:
    """Fill every derived field in place: readers (report, compare) never recompute them."""
    ok = [r for r in records if r.ok]
    bound = ladder_bound(ok)
    ladder = {r.row: r for r in ok if is_plain(r) or r is bound}
    tutorial = ladder.get("tutorial_loop")
    previous = None
    for name in TRAIN_LADDER:
        if name in ladder:
            rec = ladder[name]
            if previous is not None and same_config(rec, previous):
                rec.same_config_as = previous.row  # one configuration: no gain between a row and itself
            else:
                rec.rung_gain = _ratio(rec, previous)
                rec.rung_gain_lo, rec.rung_gain_hi = ratio_ci(rec, previous)
            previous = rec
    for rec in ok:
        rec.speedup_vs_tutorial_loop = _ratio(rec, tutorial)
        rec.speedup_lo, rec.speedup_hi = ratio_ci(rec, tutorial) if rec is not tutorial else (None, None)
        if rec.target_pct is not None:  # H1's precision, from the interval of the windows as pooled now (--repeat)
            ok_ci = rec.speedup_lo is not None and rec.speedup_hi is not None and rec.speedup_vs_tutorial_loop
            rec.reached_pct = half_width_pct(rec.speedup_vs_tutorial_loop, rec.speedup_lo, rec.speedup_hi) \
                if ok_ci else None
            rec.target_met = rec.reached_pct is not None and rec.reached_pct <= rec.target_pct
        if rec.row == "compute":
            if rec is not bound:
                rec.speedup_vs_fp32_compute = _ratio(rec, bound)
        else:
            own = bound_of(rec, ok)
            rec.fraction_of_compute = _ratio(rec, own)
            rec.above_bound = own is not None and above_bound(rec.window_rates, own.window_rates)
        if flops_per_sample and rec.samples_per_s:
            flops_per_s = rec.samples_per_s * flops_per_sample
            rec.gflops_per_s = flops_per_s / 1e9
            rec.pct_of_peak = pct_of_peak(flops_per_s, peaks, rec.precision)
