"""The rule bench.compare judges a change by: matched rows' raw samples, their ratio and its interval, the
between-run floor, the verdict, and the machine check. Pure numpy, no torch; bench.compare is its command line.

Rows are matched on what was measured (``Record.key()``). For every pair this compares the raw samples each run kept
(per-call latencies for inference, per-window samples/s for training and scaling): B vs A is the ratio of the mean
over each run's processes of each process's median (one process: its median), with a seeded bootstrap interval that
resamples processes first and samples within each (``bench.measure.stats.process_ratio_ci``), printed as e.g.
``1.27x slower [1.24, 1.30]``. A row that either run measured in one process only has no run-to-run noise in its
interval: that interval is widened by the between-run floor before the rule. Both runs' machine calibration probes
are compared the same way, so a slower machine is not mistaken for slower code.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from bench.measure.stats import median_ratio_ci, process_mean_median, process_ratio_ci, split_processes
from bench.records import InferRecord, Record, RunEnv, ScaleRecord, ServeRecord, TrainRecord
from bench.report.load import probe_processes

DEFAULT_THRESHOLD_PCT = 5.0
CONF = 0.95
MIN_SAMPLES = 3  # fewer raw samples on either side: the interval means nothing, the row is inconclusive
# The between-run floor F: how far one fresh process's figure for a row can sit from another's with the same code on
# the same machine. A row measured in one process per run is judged on its interval widened by F each way, so it gets
# no verdict unless it moved by more than (1 + T)(1 + F). Measured on the 2-core AVX2 CPU of issue 21: a fresh
# process's one-thread mlp b=1 p50 read 108 to 172 us from one process to the next (1.59x), hence 60%. Rows measured
# in >= 2 processes in both runs (--repeat) carry their own between-process noise and are judged without it.
DEFAULT_FLOOR_PCT = 60.0
FLOOR_SOURCE = ("the documented default, bench.analysis.verdicts.DEFAULT_FLOOR_PCT: the same row's one-process p50 spread 1.59x "
                "between fresh processes on a 2-core CPU")
VERDICTS = ("regression", "improvement", "no change", "inconclusive")
DECISION_RULE = (
    "B vs A = the mean over each run's processes of each process's median of the raw samples (per-call latency; "
    "per-window samples/s), as a slowdown or speedup factor with its 95% bootstrap interval (processes resampled, "
    "then samples within each). A row measured in one process in either run has no run-to-run noise in its "
    "interval: it is widened by the between-run floor F each way first. Threshold T = --fail-on-regression PCT when "
    "given, else --threshold (default 5%). A row is a regression (or improvement) only when the WHOLE interval lies "
    "beyond T slower (faster); 'no change' when the whole interval lies within +-T; 'inconclusive' when it straddles "
    "T. Machine drift: the runs' calibration probes are compared by the same rule; when they differ beyond T, "
    "verdicts are withheld, or with --normalize every ratio is divided by the machine's ratio.")


@dataclass
class Change:
    """One matched row: B's time over A's time (> 1 slower, < 1 faster), the interval it is judged on (lo, hi), the
    within-process interval (the samples alone), and how many processes each run measured it in."""

    record: Record
    slowdown: float | None
    lo: float | None
    hi: float | None
    n_a: int
    n_b: int
    verdict: str
    procs_a: int = 1
    procs_b: int = 1
    within: float | None = None  # the ratio of the pooled samples' medians, the centre of within_lo..within_hi
    within_lo: float | None = None
    within_hi: float | None = None
    floor: float = 0.0  # the widening applied (a fraction): > 0 when either run has one process for the row
    stat_a: float | None = None  # the compared figure of each run, in the row's unit (ms, or samples/s)
    stat_b: float | None = None
    spread_a: float | None = None  # max / min of the run's process medians - 1 (None: one process)
    spread_b: float | None = None


def raw_samples(rec: Record) -> tuple[list[float], bool] | None:
    """(samples, lower_is_better) of a row: per-call (per-query) latency in ms, or per-window samples/s; None for
    other tables."""
    if isinstance(rec, ServeRecord) and rec.mode == "AccuracyOnly":
        return None  # an accuracy pass: no latency to compare
    if isinstance(rec, (InferRecord, ServeRecord)):
        return list(rec.latencies_ms or []), True
    if isinstance(rec, (TrainRecord, ScaleRecord)):
        return list(rec.window_rates or []), False
    return None


def slowdown_ci(a: list[float], b: list[float], lower_is_better: bool) -> tuple[float, float, float]:
    """(B time / A time, lo, hi) of the samples alone: the ratio of medians oriented so > 1 always means B is slower."""
    return _oriented(median_ratio_ci(a, b, conf=CONF, seed=0), lower_is_better)


def verdict(lo: float, hi: float, threshold: float) -> str:
    """The decision rule: flag only when the whole interval lies beyond the threshold (a fraction, e.g. 0.05)."""
    up, down = 1 + threshold, 1 / (1 + threshold)
    if lo > up:
        return "regression"
    if hi < down:
        return "improvement"
    if lo >= down and hi <= up:
        return "no change"
    return "inconclusive"


def fmt_ratio(s: float, lo: float, hi: float) -> str:
    """``1.27x slower [1.24, 1.30]`` or ``1.10x faster [1.05, 1.15]`` (the interval in the same direction)."""
    if s >= 1:
        return f"{s:.2f}x slower [{lo:.2f}, {hi:.2f}]"
    return f"{_inv(s):.2f}x faster [{_inv(hi):.2f}, {_inv(lo):.2f}]"


def _inv(x: float) -> float:
    return 1 / x if x > 0 else math.inf


def machine_drift(env_a: RunEnv, env_b: RunEnv) -> dict[str, Any] | None:
    """B's machine time over A's from the calibration probes both runs share: the geometric mean of the probes'
    ratios and of their interval ends (conservative: as if the probes' errors were fully correlated). A probe taken
    in several processes (--repeat) is bootstrapped over its processes like a row."""
    pa, pb = probe_processes(env_a.calibration), probe_processes(env_b.calibration)
    names = sorted(set(pa) & set(pb))
    if not names:
        return None
    try:
        probes = {name: process_ratio_ci(pa[name], pb[name], conf=CONF, seed=0) for name in names}
    except (TypeError, ValueError):  # junk in a calibration block: treat it as missing
        return None

    def geo(i: int) -> float:
        return math.exp(sum(math.log(p[i]) for p in probes.values()) / len(probes))

    return {"ratio": geo(0), "lo": geo(1), "hi": geo(2), "probes": probes}


def _oriented(r: tuple[float, float, float], lower_is_better: bool) -> tuple[float, float, float]:
    ratio, lo, hi = r
    return (ratio, lo, hi) if lower_is_better else (_inv(ratio), _inv(hi), _inv(lo))


def _spread(groups: list[list[float]]) -> float | None:
    """How far a run's processes disagree: max / min of their medians - 1 (None for one process)."""
    if len(groups) < 2:
        return None
    meds = [float(np.median(g)) for g in groups]
    return max(meds) / min(meds) - 1 if min(meds) > 0 else None


def rate_bracket(rec: ServeRecord) -> tuple[float, float] | None:
    """A Server row's max rate as the interval its search left: [highest passing, lowest failing above it] (the
    passing rate twice when no probe above it failed); None without an answer."""
    if rec.max_rate_qps is None or rec.max_rate_qps <= 0:
        return None
    above = [p["target_qps"] for p in rec.probes if not p.get("met_bound") and p["target_qps"] > rec.max_rate_qps]
    return rec.max_rate_qps, min(above) if above else rec.max_rate_qps


def judge_rates(ra: ServeRecord, rb: ServeRecord, threshold: float, machine: tuple[float, float, float] | None,
                floor: float) -> Change:
    """Server rows: B's time over A's time is A's max rate over B's, its interval from the two search brackets
    (each capacity lies in its bracket), so a search's resolution is never read as a change. A search is one
    process's answer, so the between-run floor widens it like any one-process row."""
    a, b = rate_bracket(ra), rate_bracket(rb)
    if a is None or b is None:
        return Change(rb, None, None, None, len(ra.probes), len(rb.probes), "inconclusive")
    s, lo, hi = a[0] / b[0], a[0] / b[1] / (1 + floor), a[1] / b[0] * (1 + floor)
    if machine is not None:
        s, lo, hi = s / machine[0], lo / machine[2], hi / machine[1]
    return Change(rb, s, lo, hi, len(ra.probes), len(rb.probes), verdict(lo, hi, threshold), floor=floor,
                  stat_a=a[0], stat_b=b[0])


def judge(ra: Record, rb: Record, threshold: float, machine: tuple[float, float, float] | None = None,
          floor: float = 0.0) -> Change | None:
    """The change from row ``ra`` to row ``rb`` (both ok), or None for a table without raw samples.

    The ratio and its interval come from the hierarchical bootstrap over each run's processes (``--repeat``). When
    either run measured the row in one process only, nothing in the interval covers run-to-run noise: it is widened
    by ``floor`` (a fraction) each way before the rule, so no verdict goes beyond what that floor allows.
    ``machine`` = (ratio, lo, hi) divides the ratio (--normalize): lo by the machine's hi, hi by its lo, so the
    machine's own uncertainty widens the interval rather than vanishing.
    """
    if isinstance(ra, ServeRecord) and isinstance(rb, ServeRecord) and ra.scenario == "Server":
        return judge_rates(ra, rb, threshold, machine, floor)
    pair = raw_samples(ra), raw_samples(rb)
    if pair[0] is None or pair[1] is None:
        return None
    (sa, lower_better), (sb, _) = pair
    change = Change(rb, None, None, None, len(sa), len(sb), "inconclusive")
    try:
        ga = split_processes(sa, getattr(ra, "samples_per_repeat", None))
        gb = split_processes(sb, getattr(rb, "samples_per_repeat", None))
        change.procs_a, change.procs_b = len(ga), len(gb)
        if min(len(sa), len(sb)) < MIN_SAMPLES:
            raise ValueError("too few samples")
        s, lo, hi = _oriented(process_ratio_ci(ga, gb, conf=CONF, seed=0), lower_better)
        w, wlo, whi = slowdown_ci(sa, sb, lower_better)
        change.stat_a, change.stat_b = process_mean_median(ga), process_mean_median(gb)
    except (TypeError, ValueError):  # too few samples, a median of zero, junk values: no ratio to judge
        return change
    change.spread_a, change.spread_b = _spread(ga), _spread(gb)
    change.floor = floor if min(len(ga), len(gb)) < 2 else 0.0
    lo, hi = lo / (1 + change.floor), hi * (1 + change.floor)
    if machine is not None:
        s, lo, hi = s / machine[0], lo / machine[2], hi / machine[1]
        w, wlo, whi = w / machine[0], wlo / machine[2], whi / machine[1]
    change.slowdown, change.lo, change.hi = s, lo, hi
    change.within, change.within_lo, change.within_hi = w, wlo, whi
    change.verdict = verdict(lo, hi, threshold)
    return change


def compare_records(rec_a: list[Record], rec_b: list[Record], threshold: float,
                    machine: tuple[float, float, float] | None = None, floor: float = 0.0) -> dict[str, Any]:
    """Changes of every row ok in both runs, the rows ok in A that fail in B, and what appears in one run only."""
    index_a = {r.key(): r for r in rec_a}
    index_b = {r.key(): r for r in rec_b}
    changes = []
    for key, ra in index_a.items():
        rb = index_b.get(key)
        if rb is not None and ra.ok and rb.ok:
            change = judge(ra, rb, threshold, machine, floor)
            if change is not None:
                changes.append(change)
    now_failing = [index_b[k] for k, ra in index_a.items()
                   if ra.ok and k in index_b and index_b[k].status == "failed"]
    return {"changes": changes, "now_failing": now_failing,
            "only_a": [r for k, r in index_a.items() if k not in index_b],
            "only_b": [r for k, r in index_b.items() if k not in index_a]}


def machine_state(drift: dict[str, Any] | None, threshold: float) -> str:
    """'changed (slower)', 'changed (faster)', 'same', 'inconclusive', or 'unknown' (no shared probe)."""
    if drift is None:
        return "unknown"
    return {"regression": "changed (slower)", "improvement": "changed (faster)", "no change": "same",
            "inconclusive": "inconclusive"}[verdict(drift["lo"], drift["hi"], threshold)]


def machine_changed(drift: dict[str, Any] | None, threshold: float) -> bool:
    return machine_state(drift, threshold).startswith("changed")


