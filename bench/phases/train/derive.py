"""The training rows' derived fields (rung gains, speedups, fraction of the compute bound, above_bound, GFLOP/s and
% of peak), filled once by the phase so readers (report, compare) never recompute them."""
from __future__ import annotations

import copy
from typing import Any

import torch

from bench.measure.machine import pct_of_peak
from bench.measure.stats import median_ratio_ci
from bench.model.flops import count_flops
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


def above_bound(rates: list[float], bound_rates: list[float]) -> bool:
    """True when the row beats its bound by more than the noise: the bootstrap interval of the ratio of median
    window rates lies wholly above 1 (with fewer than two windows on either side nothing is beyond the noise)."""
    if len(rates) < 2 or len(bound_rates) < 2:
        return False
    _, lo, _ = median_ratio_ci(bound_rates, rates)  # median(rates) / median(bound_rates)
    return lo > 1.0


def bound_of(rec: TrainRecord, ok: list[TrainRecord]) -> TrainRecord | None:
    """The compute row that bounds ``rec``: the compute row of its own precision and variant; for the tuned "fast"
    row (whose choice may change layout or compilation) the fastest exact (fp32) compute row."""
    computes = [r for r in ok if r.row == "compute"]
    if rec.row == "fast":
        exact = [r for r in computes if r.precision == "fp32"]
        return max(exact, key=lambda r: r.samples_per_s, default=None)
    same = [r for r in computes if (r.precision, r.channels_last, r.compile)
            == (rec.precision, rec.channels_last, rec.compile)]
    return same[0] if same else None


def derive(records: list[TrainRecord], flops_per_sample: float | None, peaks: dict[str, Any]) -> None:
    """Fill every derived field in place: readers (report, compare) never recompute them."""
    ok = [r for r in records if r.ok]
    ladder = {r.row: r for r in ok if is_plain(r)}
    tutorial, fp32_compute = ladder.get("tutorial_loop"), ladder.get("compute")
    previous = None
    for name in TRAIN_LADDER:
        if name in ladder:
            ladder[name].rung_gain = _ratio(ladder[name], previous)
            previous = ladder[name]
    for rec in ok:
        rec.speedup_vs_tutorial_loop = _ratio(rec, tutorial)
        if rec.row == "compute":
            if rec is not fp32_compute:
                rec.speedup_vs_fp32_compute = _ratio(rec, fp32_compute)
        else:
            bound = bound_of(rec, ok)
            rec.fraction_of_compute = _ratio(rec, bound)
            rec.above_bound = bound is not None and above_bound(rec.window_rates, bound.window_rates)
        if flops_per_sample and rec.samples_per_s:
            flops_per_s = rec.samples_per_s * flops_per_sample
            rec.gflops_per_s = flops_per_s / 1e9
            rec.pct_of_peak = pct_of_peak(flops_per_s, peaks, rec.precision)
