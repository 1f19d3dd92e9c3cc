"""The rule bench.compare judges a change by: matched rows' raw samples, their ratio and its interval, the verdict
over the family of rows, what each row could detect, and the machine check. Pure numpy and scipy, no torch;
bench.compare is its command line.

Rows are matched on what was measured (``Record.key()``). The process is the unit of replication: B vs A is the
ratio of the geometric means over each run's processes of each process's median of the raw samples (per-call
latencies for inference, per-window samples/s for training and scaling), with a t interval over the log process
medians (bench.measure.stats): Welch's when both runs measured the row in >= 2 processes (``--repeat``), else one
variance pooled from the runs' own spread and this machine's noise profile for the row (bench.analysis.noise), whose
degrees of freedom the t quantile uses. A row measured in one process with no profile gets no verdict. A row is
flagged only when its test of "the change lies within +-T" is rejected under Holm's rule over all the rows judged
(family-wise error 5%); with one row that is exactly "the whole 95% interval lies beyond T". Every row carries the
smallest change it would flag with 80% power (its MDE) and the processes per side that would detect 1 + 1.5 T.
The machine check compares the runs' calibration probes by the same interval.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from bench.analysis.noise import Priors, RowNoise
from bench.measure.stats import (
    LogInterval,
    holm,
    log_medians,
    mde_log,
    median_ratio_ci,
    p_beyond,
    pooled_interval,
    process_mean_median,
    processes_needed,
    split_processes,
    welch_interval,
)
from bench.records import InferRecord, Record, RunEnv, ScaleRecord, ServeRecord, TrainRecord
from bench.report.load import probe_processes

DEFAULT_THRESHOLD_PCT = 5.0
CONF = 0.95
FAMILY_ALPHA = 1 - CONF  # Holm's family-wise error over the rows of one comparison
POWER = 0.8  # the MDE: the smallest change flagged this often
DETECT_FACTOR = 1.5  # processes_needed answers "how many to detect a change of 1 + 1.5 T" (T itself: never at 80%)
MIN_SAMPLES = 3  # fewer raw samples on either side: the interval means nothing, the row is inconclusive
VERDICTS = ("regression", "improvement", "no change", "inconclusive", "no verdict")
DECISION_RULE = (
    "B vs A = the ratio of the geometric means over each run's processes of each process's median of the raw "
    "samples (per-call latency; per-window samples/s), as a slowdown or speedup factor with its 95% t interval over "
    "the log process medians: Welch's when both runs measured the row in >= 2 processes, else with the between-"
    "process variance pooled from the runs and this machine's noise profile (no profile: no verdict). Threshold "
    "T = --fail-on-regression PCT when given, else --threshold (default 5%). A row is a regression (improvement) "
    "when its test of 'within +-T' is rejected under Holm's rule over all rows judged (family-wise 5%), i.e. its "
    "interval lies beyond T slower (faster) at the Holm level; 'no change' when the whole 95% interval lies within "
    "+-T; else 'inconclusive'. MDE: the smallest change flagged with 80% power; processes needed: per side, to "
    "detect 1 + 1.5 T. Machine check: the calibration probes by the same interval; when it lies beyond T, verdicts "
    "are withheld, or with --normalize every ratio is divided by the machine's.")


@dataclass
class Change:
    """One matched row: B's time over A's time (> 1 slower, < 1 faster), its 95% interval (lo, hi), the
    within-process interval (the samples alone), how many processes each run measured it in, and what the test over
    the processes found and could find (p, MDE, processes needed)."""

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
    stat_a: float | None = None  # the compared figure of each run, in the row's unit (ms, or samples/s)
    stat_b: float | None = None
    spread_a: float | None = None  # max / min of the run's process medians - 1 (None: one process)
    spread_b: float | None = None
    method: str = ""  # "welch", "noise profile" (pooled with the prior), "" (no interval over processes)
    interval: LogInterval | None = None  # oriented: diff > 0 means B is slower
    variance: float | None = None  # the between-process variance of the log medians the interval used
    p: float | None = None  # two-sided p of "within +-T"
    mde: float | None = None  # the smallest slowdown (or speed-up) factor flagged with 80% power, at the family level
    processes_needed: int | None = None  # per side, to detect 1 + 1.5 T with 80% power
    family: int = 1  # the rows judged together (Holm)


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
    """The rule on one interval: flag only when the whole interval lies beyond the threshold (a fraction)."""
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


def log_interval(ga: list[list[float]], gb: list[list[float]], prior: RowNoise | None,
                 lower_is_better: bool = True) -> tuple[LogInterval, float, str] | None:
    """(interval of B over A oriented as a slowdown, the between-process variance it used, the method), or None
    when neither the runs nor a prior give a between-process spread."""
    la, lb = log_medians(ga), log_medians(gb)
    if la.size >= 2 and lb.size >= 2:
        li, method = welch_interval(la, lb, CONF), "welch"
        ss = sum(float(np.sum((x - x.mean()) ** 2)) for x in (la, lb))
        variance = ss / (la.size + lb.size - 2)
    elif prior is not None:
        li, method = pooled_interval(la, lb, prior.variance, prior.df, CONF), "noise profile"
        variance = (li.se ** 2) / (1 / la.size + 1 / lb.size)
    else:
        return None
    if not lower_is_better:
        li = LogInterval(-li.diff, li.se, li.df, li.conf)
    return li, variance, method


def machine_drift(env_a: RunEnv, env_b: RunEnv, priors: Priors | None = None) -> dict[str, Any] | None:
    """B's machine time over A's from the calibration probes both runs share, each by the rows' interval over its
    processes (a probe taken in one process per run needs the noise profile's spread for it). The probes' log
    ratios are averaged and their standard errors too (conservative: as if fully correlated), at the fewest df.
    ``interval`` is None when no probe has a between-run spread: the machine check cannot judge."""
    pa, pb = probe_processes(env_a.calibration), probe_processes(env_b.calibration)
    names = sorted(set(pa) & set(pb))
    if not names:
        return None
    probes: dict[str, tuple[float, float, float]] = {}
    judged: list[LogInterval] = []
    for name in names:
        try:
            found = log_interval(pa[name], pb[name], priors.prior(("calibration", name)) if priors else None)
            ratio = math.exp(float(np.mean(log_medians(pb[name])) - np.mean(log_medians(pa[name]))))
        except (TypeError, ValueError):  # junk in a calibration block: treat it as missing
            continue
        if found is None:
            probes[name] = (ratio, math.nan, math.nan)
            continue
        judged.append(found[0])
        probes[name] = (found[0].ratio, *found[0].bounds())
    if not probes:
        return None
    ratio = math.exp(sum(math.log(p[0]) for p in probes.values()) / len(probes))
    if not judged:
        return {"ratio": ratio, "lo": None, "hi": None, "probes": probes, "interval": None}
    li = LogInterval(float(np.mean([x.diff for x in judged])), float(np.mean([x.se for x in judged])),
                     min(x.df for x in judged), CONF)
    lo, hi = li.bounds()
    return {"ratio": li.ratio, "lo": lo, "hi": hi, "probes": probes, "interval": li}


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


def judge_rates(ra: ServeRecord, rb: ServeRecord, machine: LogInterval | None = None) -> Change:
    """Server rows: B's time over A's time is A's max rate over B's, its interval from the two search brackets
    (each capacity lies in its bracket), so a search's resolution is never read as a change. A search is one
    process's answer with no between-run spread (the serve phase is not repeated), so it gets no verdict."""
    a, b = rate_bracket(ra), rate_bracket(rb)
    if a is None or b is None:
        return Change(rb, None, None, None, len(ra.probes), len(rb.probes), "inconclusive")
    s, lo, hi = a[0] / b[0], a[0] / b[1], a[1] / b[0]
    if machine is not None:
        lo_m, hi_m = machine.bounds()
        s, lo, hi = s / machine.ratio, lo / hi_m, hi / lo_m
    return Change(rb, s, lo, hi, len(ra.probes), len(rb.probes), "no verdict", stat_a=a[0], stat_b=b[0])


def judge(ra: Record, rb: Record, threshold: float, machine: LogInterval | None = None,
          prior: RowNoise | None = None) -> Change | None:
    """The change from row ``ra`` to row ``rb`` (both ok), judged alone (a family of one; ``family_verdicts`` judges
    the rows of a comparison together), or None for a table without raw samples.

    ``prior`` is this machine's between-process variance of the row (bench.analysis.noise), used when either run
    measured it in one process; without it such a row gets "no verdict". ``machine`` (--normalize) divides the
    ratio by the machine's, its error added to the row's.
    """
    if isinstance(ra, ServeRecord) and isinstance(rb, ServeRecord) and ra.scenario == "Server":
        return judge_rates(ra, rb, machine)
    pair = raw_samples(ra), raw_samples(rb)
    if pair[0] is None or pair[1] is None:
        return None
    (sa, lower_better), (sb, _) = pair
    change = Change(rb, None, None, None, len(sa), len(sb), "inconclusive")
    ga: list[list[float]] = []
    gb: list[list[float]] = []
    try:
        ga = split_processes(sa, getattr(ra, "samples_per_repeat", None))
        gb = split_processes(sb, getattr(rb, "samples_per_repeat", None))
        change.procs_a, change.procs_b = len(ga), len(gb)
        if min(len(sa), len(sb)) < MIN_SAMPLES:
            raise ValueError("too few samples")
        found = log_interval(ga, gb, prior, lower_better)
        w, wlo, whi = slowdown_ci(sa, sb, lower_better)
        change.stat_a, change.stat_b = process_mean_median(ga), process_mean_median(gb)
    except (TypeError, ValueError):  # too few samples, a median of zero, junk values: no ratio to judge
        return change if lower_better else stalled(change, ga, gb)
    change.spread_a, change.spread_b = _spread(ga), _spread(gb)
    if machine is not None:
        w, wlo, whi = w / machine.ratio, wlo / machine.bounds()[1], whi / machine.bounds()[0]
    change.within, change.within_lo, change.within_hi = w, wlo, whi
    if found is None:  # one process and no profile: the ratio is shown, the interval would be the samples' alone
        change.slowdown, change.verdict = math.exp(float(np.mean(log_medians(gb)) - np.mean(log_medians(ga)))), "no verdict"
        if not lower_better:
            change.slowdown = _inv(change.slowdown)
        return change
    li, change.variance, change.method = found
    change.interval = li.divided_by(machine) if machine is not None else li
    change.slowdown = change.interval.ratio
    change.lo, change.hi = change.interval.bounds()
    score(change, threshold, 1)
    change.verdict = verdict(change.lo, change.hi, threshold)
    return change


def stalled(change: Change, ga: list[list[float]], gb: list[list[float]]) -> Change:
    """A training row whose B stopped (a process's median rate 0 where A's were all > 0) took infinitely long: a
    regression whatever the noise, outside the family (no interval to test)."""
    try:
        if min(len(x) for x in ga + gb) >= MIN_SAMPLES and min(np.median(x) for x in ga) > 0 \
                and min(np.median(x) for x in gb) == 0:
            change.slowdown = change.lo = change.hi = math.inf
            change.verdict, change.method = "regression", "stalled"
    except (TypeError, ValueError):
        pass
    return change


def score(change: Change, threshold: float, family: int, flagged: bool | None = None) -> None:
    """The row's p, MDE and processes needed at a family of ``family`` rows; with ``flagged`` (Holm's answer) its
    verdict: flagged rows by their direction, else 'no change' when the 95% interval lies within +-T."""
    li, bound = change.interval, math.log1p(threshold)
    change.family = family
    change.p = p_beyond(li, bound)
    alpha_row = FAMILY_ALPHA / family  # Holm's first step: a lone change must clear this
    change.mde = math.exp(float(mde_log(li.se, li.df, bound, alpha_row, POWER, change.method == "noise profile")))
    change.processes_needed = processes_needed(change.variance or 0.0, math.log1p(DETECT_FACTOR * threshold), bound,
                                               alpha_row, POWER)
    if flagged is not None:
        by_interval = verdict(change.lo, change.hi, threshold)
        change.verdict = ("regression" if li.diff > 0 else "improvement") if flagged else (
            "no change" if by_interval == "no change" else "inconclusive")


def family_verdicts(changes: list[Change], threshold: float) -> None:
    """Holm's rule over every row with an interval: each row's verdict, p, MDE and processes needed as one family."""
    judged = [c for c in changes if c.interval is not None]
    for c, flagged in zip(judged, holm([p_beyond(c.interval, math.log1p(threshold)) for c in judged], FAMILY_ALPHA)):
        score(c, threshold, len(judged), flagged)


def compare_records(rec_a: list[Record], rec_b: list[Record], threshold: float,
                    machine: LogInterval | None = None, priors: Priors | None = None) -> dict[str, Any]:
    """Changes of every row ok in both runs (judged as one family), the rows ok in A that fail in B, and what
    appears in one run only."""
    index_a = {r.key(): r for r in rec_a}
    index_b = {r.key(): r for r in rec_b}
    changes = []
    for key, ra in index_a.items():
        rb = index_b.get(key)
        if rb is not None and ra.ok and rb.ok:
            change = judge(ra, rb, threshold, machine, priors.prior(key) if priors else None)
            if change is not None:
                changes.append(change)
    family_verdicts(changes, threshold)
    now_failing = [index_b[k] for k, ra in index_a.items()
                   if ra.ok and k in index_b and index_b[k].status == "failed"]
    return {"changes": changes, "now_failing": now_failing,
            "only_a": [r for k, r in index_a.items() if k not in index_b],
            "only_b": [r for k, r in index_b.items() if k not in index_a]}


def machine_state(drift: dict[str, Any] | None, threshold: float) -> str:
    """'changed (slower)', 'changed (faster)', 'same', 'inconclusive', 'no spread' (its probes have no between-run
    spread: one process per run and no noise profile) or 'unknown' (no shared probe)."""
    if drift is None:
        return "unknown"
    if drift.get("interval") is None:
        return "no spread"
    return {"regression": "changed (slower)", "improvement": "changed (faster)", "no change": "same",
            "inconclusive": "inconclusive"}[verdict(drift["lo"], drift["hi"], threshold)]


def machine_changed(drift: dict[str, Any] | None, threshold: float) -> bool:
    return machine_state(drift, threshold).startswith("changed")
