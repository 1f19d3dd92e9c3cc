"""Statistics over raw samples: percentiles that rest on enough calls, and the ratio of two runs' medians with a
bootstrap confidence interval, within one process or across several. Pure numpy; nothing here times anything.

``median_ratio_ci`` answers "how sure is this ratio, given the samples each process took?" (sampling noise within a
process). It does not cover run-to-run noise (another process draws another allocator, thread pool, cache and
frequency state): a process is one draw of that. ``process_ratio_ci`` covers both when a run measured a row in
several fresh processes (``--repeat``): it resamples processes first, then samples within each (a hierarchical
bootstrap), so a row whose processes disagree gets the wide interval it deserves. Calls timed back to back are not
independent, so the within-process part is somewhat narrower than the truth.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

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
