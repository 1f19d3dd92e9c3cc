"""Statistics over raw samples: percentiles that rest on enough calls, and the ratio of two runs' medians with a
bootstrap confidence interval, within one process or across several. Pure numpy; nothing here times anything.

``median_ratio_ci`` answers "how sure is this ratio, given the samples each process took?" (sampling noise within a
process). It does not cover run-to-run noise (another process draws another allocator, thread pool, cache and
frequency state): a process is one draw of that. ``process_ratio_ci`` covers both when a run measured a row in
several fresh processes (``--repeat``): it resamples processes first, then samples within each (a hierarchical
bootstrap), so a row whose processes disagree gets the wide interval it deserves. Calls timed back to back are not
independent, so the within-process part is somewhat narrower than the truth.

The verdicts rest on ``log_interval`` instead: over 1-10 processes a percentile bootstrap is too narrow (it shrinks the
between-process variance by (g-1)/g and uses normal quantiles where t with few degrees of freedom applies), so the
process is the unit of replication and B over A is a t interval over the log of each process's median: Welch's when
both runs have >= 2 processes, else a pooled variance whose prior (a noise profile's between-process variance of the
row, with its degrees of freedom) stands in for the side that has no spread of its own. ``mde_log`` and
``processes_needed`` say what such an interval can detect.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import special
from scipy import stats as sps

from bench.records import PERCENTILE_MIN_CALLS


def min_calls_for_percentile(q: float) -> int:
    """Calls a percentile needs before it is printed: records.PERCENTILE_MIN_CALLS, else at least 10 / (1 - q)."""
    if q in PERCENTILE_MIN_CALLS:
        return PERCENTILE_MIN_CALLS[int(q)]
    return math.ceil(10 / (1 - q / 100)) if q < 100 else math.inf


def percentile_or_none(values: Sequence[float] | np.ndarray, q: float) -> float | None:
    """numpy's linear percentile ``q`` (0-100) of ``values``, or None when there are too few values to rest it on."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.size == 0 or arr.size < min_calls_for_percentile(q):
        return None
    return float(np.percentile(arr, q))


def _as_samples(values: Sequence[float] | np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64).ravel()
    if arr.size == 0:
        raise ValueError(f"{name}: no samples")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name}: samples must be finite")
    return arr


def bootstrap_medians(values: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """``n_boot`` medians of bootstrap resamples (with replacement, same size) of ``values``, in O(n log n + n_boot).

    Drawing a resample is drawing n uniforms U and taking sorted[floor(n U)]; floor is monotone, so the resample's
    k-th smallest value is sorted[floor(n U_(k))], and the k-th smallest of n uniforms is Beta(k, n + 1 - k). The
    (k+1)-th is U_(k) + (1 - U_(k)) V with V ~ Beta(1, n - k) (the least of the n - k uniforms above U_(k)). Exactly the
    distribution of resampling and taking the median, without materialising n_boot x n resamples.
    """
    xs = np.sort(values)
    n = xs.size
    if n == 1:
        return np.full(n_boot, xs[0])
    k = (n + 1) // 2  # 1-based rank of the (lower) middle value
    u_k = rng.beta(k, n + 1 - k, size=n_boot)
    lower = xs[np.minimum((n * u_k).astype(np.int64), n - 1)]
    if n % 2:
        return lower
    u_next = u_k + (1 - u_k) * rng.beta(1, n - k, size=n_boot)
    upper = xs[np.minimum((n * u_next).astype(np.int64), n - 1)]
    return (lower + upper) / 2.0


def median_ratio_ci(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray, conf: float = 0.95,
                    n_boot: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """(ratio, lo, hi): median(b) / median(a) and its ``conf`` percentile-bootstrap interval.

    ``a`` and ``b`` are resampled independently (two runs); the seed makes the interval reproducible, so the same two
    files always get the same verdict.
    """
    xa, xb = _as_samples(a, "a"), _as_samples(b, "b")
    check_plan(conf, n_boot)
    med_a, med_b = float(np.median(xa)), float(np.median(xb))
    if med_a <= 0 or med_b < 0:
        raise ValueError("medians must be positive to form a ratio")
    rng = np.random.default_rng(seed)
    boot_a = bootstrap_medians(xa, n_boot, rng)
    boot_b = bootstrap_medians(xb, n_boot, rng)
    return ratio_interval(med_a, med_b, boot_a, boot_b, conf)


def check_plan(conf: float, n_boot: int) -> None:
    if not 0 < conf < 1:
        raise ValueError(f"conf must be in (0, 1), not {conf}")
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, not {n_boot}")


def ratio_interval(stat_a: float, stat_b: float, boot_a: np.ndarray, boot_b: np.ndarray,
                   conf: float) -> tuple[float, float, float]:
    """(stat_b / stat_a, lo, hi): the ratio and the central ``conf`` quantiles of the bootstrap ratios."""
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = boot_b / boot_a
    tail = (1 - conf) / 2
    lo, hi = np.quantile(ratios, [tail, 1 - tail])
    return stat_b / stat_a, float(lo), float(hi)


def _as_groups(groups: Sequence[Sequence[float]], name: str) -> list[np.ndarray]:
    arrs = [_as_samples(g, f"{name} process {i}") for i, g in enumerate(groups)]
    if not arrs:
        raise ValueError(f"{name}: no processes")
    return arrs


def process_mean_median(groups: Sequence[Sequence[float]] | list[np.ndarray]) -> float:
    """The statistic a repeated row is compared by: the mean over its processes of each process's median (every
    process weighs the same, however many samples it took). One process: its median."""
    return float(np.mean([np.median(np.asarray(g, dtype=np.float64)) for g in groups]))


def hierarchical_means(groups: list[np.ndarray], n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """``n_boot`` bootstrap draws of ``process_mean_median``: each draw picks len(groups) processes with replacement,
    then one bootstrap median of each picked process's samples (an independent resample per pick)."""
    g = len(groups)
    meds = np.stack([bootstrap_medians(x, n_boot * g, rng).reshape(n_boot, g) for x in groups])  # (g, n_boot, g)
    pick = rng.integers(0, g, size=(n_boot, g))
    return meds[pick, np.arange(n_boot)[:, None], np.arange(g)[None, :]].mean(axis=1)


def process_ratio_ci(a: Sequence[Sequence[float]], b: Sequence[Sequence[float]], conf: float = 0.95,
                     n_boot: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """(ratio, lo, hi) of B over A, each run given as its processes' raw samples (a list of lists).

    ratio = process_mean_median(b) / process_mean_median(a); the interval is the ``conf`` percentile interval of the
    hierarchical bootstrap (processes, then samples within each). When both runs are one process each this is exactly
    ``median_ratio_ci`` (same draws, same interval), so older one-process results keep their verdicts.
    """
    ga, gb = _as_groups(a, "a"), _as_groups(b, "b")
    if len(ga) == 1 and len(gb) == 1:
        return median_ratio_ci(ga[0], gb[0], conf=conf, n_boot=n_boot, seed=seed)
    check_plan(conf, n_boot)
    stat_a, stat_b = process_mean_median(ga), process_mean_median(gb)
    if stat_a <= 0 or stat_b < 0:
        raise ValueError("medians must be positive to form a ratio")
    rng = np.random.default_rng(seed)
    boot_a = hierarchical_means(ga, n_boot, rng)
    boot_b = hierarchical_means(gb, n_boot, rng)
    return ratio_interval(stat_a, stat_b, boot_a, boot_b, conf)


def split_processes(samples: Sequence[float], sizes: Sequence[int] | None) -> list[list[float]]:
    """A row's pooled raw samples cut into its processes by ``sizes`` (samples per process, in order); no sizes: one
    process. ValueError when the sizes do not add up to the samples."""
    values = list(samples)
    if not sizes:
        return [values]
    if any(not isinstance(n, int) or isinstance(n, bool) or n < 1 for n in sizes) or sum(sizes) != len(values):
        raise ValueError(f"samples_per_repeat {list(sizes)} does not cut {len(values)} samples into processes")
    out, start = [], 0
    for n in sizes:
        out.append(values[start:start + n])
        start += n
    return out


@dataclass(frozen=True)
class LogInterval:
    """B over A on the log scale: ``diff`` = mean log process median of B - of A, its standard error ``se`` and
    degrees of freedom ``df`` (math.inf: a known variance), and the ``conf`` interval of the ratio exp(diff)."""

    diff: float
    se: float
    df: float
    conf: float = 0.95

    @property
    def ratio(self) -> float:
        return math.exp(self.diff)

    def bounds(self, conf: float | None = None) -> tuple[float, float]:
        lo, hi = interval_bounds(self.diff, self.se, self.df, conf or self.conf)
        return float(lo), float(hi)

    def divided_by(self, other: LogInterval) -> LogInterval:
        """This ratio over another's (a machine's), the two errors added as independent, the fewer df kept."""
        return LogInterval(self.diff - other.diff, math.hypot(self.se, other.se), min(self.df, other.df), self.conf)


Array = np.ndarray


def interval_bounds(diff: float | Array, se: float | Array, df: float | Array, conf: float) -> tuple:
    """The ``conf`` t interval of exp(diff) (elementwise over arrays)."""
    half = t_quantile(1 - (1 - conf) / 2, df) * se
    return np.exp(diff - half), np.exp(diff + half)


def t_quantile(q: float | np.ndarray, df: float | np.ndarray) -> float | np.ndarray:
    """Student's t quantile (the normal one at infinite df)."""
    out = sps.t.ppf(q, df)
    return float(out) if np.ndim(out) == 0 else out


def log_medians(groups: Sequence[Sequence[float]]) -> np.ndarray:
    """The log of each process's median: the unit a verdict replicates over. ValueError on a median <= 0."""
    meds = np.array([np.median(g) for g in _as_groups(groups, "run")])
    if np.any(meds <= 0):
        raise ValueError("medians must be positive to take their log")
    return np.log(meds)


def between_variance(logs: np.ndarray) -> tuple[float, int]:
    """(sample variance of the log process medians, its degrees of freedom g - 1); ValueError under 2 processes."""
    if logs.size < 2:
        raise ValueError("one process has no between-process variance")
    return float(np.var(logs, ddof=1)), int(logs.size - 1)


def welch_parts(la: Array, lb: Array) -> tuple[Array, Array, Array]:
    """(diff, se, df) of Welch's t for mean(lb) - mean(la) over the last axis (>= 2 processes a side), with
    Welch-Satterthwaite df, except with as many processes on both sides: there Welch's statistic is Student's pooled
    t, whose 2n - 2 df are exact for equal spreads and robust for equal counts, while Welch's df (as low as n - 1)
    would cost most of the power at a family's small alpha. Vectorised, so that the seeded simulations run the rule
    itself over thousands of trials."""
    va, vb = np.var(la, axis=-1, ddof=1) / la.shape[-1], np.var(lb, axis=-1, ddof=1) / lb.shape[-1]
    se2 = va + vb
    with np.errstate(divide="ignore", invalid="ignore"):
        df = np.where(se2 > 0, se2 ** 2 / (va ** 2 / (la.shape[-1] - 1) + vb ** 2 / (lb.shape[-1] - 1)), np.inf)
    if la.shape[-1] == lb.shape[-1]:
        df = np.where(se2 > 0, 2.0 * la.shape[-1] - 2, np.inf)
    return lb.mean(axis=-1) - la.mean(axis=-1), np.sqrt(se2), df


def welch_interval(la: np.ndarray, lb: np.ndarray, conf: float = 0.95) -> LogInterval:
    """Welch's t interval of mean(lb) - mean(la) (each side >= 2 processes)."""
    diff, se, df = welch_parts(la, lb)
    return LogInterval(float(diff), float(se), float(df), conf)


def pooled_parts(la: Array, lb: Array, prior_var: float | Array, prior_df: int) -> tuple[Array, Array, Array]:
    """(diff, se, df) of the t statistic with one between-process variance pooled from both sides' own spread (a
    side of one process adds none) and the prior's, weighted by degrees of freedom; over the last axis."""
    own_ss = sum(np.sum((x - x.mean(axis=-1, keepdims=True)) ** 2, axis=-1) for x in (la, lb))
    df = la.shape[-1] + lb.shape[-1] - 2 + prior_df
    if df < 1:
        raise ValueError("no degrees of freedom: neither the runs nor the prior have a between-process spread")
    s2 = (own_ss + prior_df * np.asarray(prior_var)) / df
    se = np.sqrt(s2 * (1 / la.shape[-1] + 1 / lb.shape[-1]))
    return lb.mean(axis=-1) - la.mean(axis=-1), se, np.full(np.shape(se), float(df))


def pooled_interval(la: np.ndarray, lb: np.ndarray, prior_var: float, prior_df: int,
                    conf: float = 0.95) -> LogInterval:
    """The t interval of mean(lb) - mean(la) with the prior's variance pooled in (``pooled_parts``)."""
    diff, se, df = pooled_parts(la, lb, prior_var, prior_df)
    return LogInterval(float(diff), float(se), float(df), conf)


def p_parts(diff: float | Array, se: float | Array, df: float | Array, bound: float) -> float | Array:
    """Two-sided p of 'the change lies within +-bound' (log scale): twice the smaller one-sided p of 'no more than
    bound slower' and 'no more than bound faster', at most 1; a zero se gives 0 beyond the bound, else 1."""
    diff, se = np.asarray(diff, dtype=np.float64), np.asarray(se, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        p_slower = sps.t.sf((diff - bound) / se, df)
        p_faster = sps.t.cdf((diff + bound) / se, df)
    p = np.minimum(1.0, 2 * np.minimum(p_slower, p_faster))
    p = np.where(se > 0, p, np.where(np.abs(diff) > bound, 0.0, 1.0))
    return float(p) if p.ndim == 0 else p


def p_beyond(li: LogInterval, bound: float) -> float:
    return float(p_parts(li.diff, li.se, li.df, bound))


def holm(p_values: Sequence[float], alpha: float) -> list[bool]:
    """Holm's step-down rule: which hypotheses are rejected with a family-wise error of at most ``alpha``."""
    order = sorted(range(len(p_values)), key=lambda i: p_values[i])
    rejected = [False] * len(p_values)
    for step, i in enumerate(order):
        if p_values[i] > alpha / (len(p_values) - step):
            break
        rejected[i] = True
    return rejected


def mde_log(se: float | Array, df: float | Array, bound: float, alpha_row: float, power: float = 0.8,
            fixed_se: bool = False) -> float | Array:
    """The smallest change (log scale) a two-sided test at ``alpha_row`` of 'within +-bound' flags with ``power``.

    When the runs estimate their own error (``fixed_se`` False: Welch / Student over their processes), a rerun
    draws a new estimate: the change is bound + ncp se, ncp the noncentrality at which a t with ``df`` exceeds its
    critical value with that probability (noncentral t, exact where the quantile sum is not: few df and a family's
    small alpha). When the error is a noise profile's (``fixed_se``: one process a side), reruns keep that estimate
    and only the true error varies around it: bound + (t(1 - alpha_row / 2) + t(power)) se."""
    df = np.minimum(np.asarray(df, dtype=np.float64), 1e7)  # a known variance: the t is a normal
    crit = t_quantile(1 - alpha_row / 2, df)
    ncp = crit + t_quantile(power, df) if fixed_se else special.nctdtrinc(df, 1 - power, crit)
    out = bound + ncp * np.asarray(se, dtype=np.float64)
    return float(out) if np.ndim(out) == 0 else out


MAX_PROCESSES = 200  # beyond this many processes per side, "processes needed" says none will do


def processes_needed(variance: float, target: float, bound: float, alpha_row: float,
                     power: float = 0.8) -> int | None:
    """Fewest processes per side (>= 2) at which Welch's interval of two such runs detects a change of ``target``
    (log scale) with ``power``, given the row's between-process ``variance``; None beyond MAX_PROCESSES."""
    if target <= bound:
        return None
    n = np.arange(2, MAX_PROCESSES + 1)
    ok = mde_log(np.sqrt(2 * variance / n), 2 * n - 2, bound, alpha_row, power) <= target
    return int(n[np.argmax(ok)]) if ok.any() else None
