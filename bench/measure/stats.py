"""Statistics over raw samples: percentiles that rest on enough calls, the ratio of two medians with a bootstrap
confidence interval, and a rank test. Pure numpy; nothing here times anything.

The interval answers "how sure is this ratio, given the samples each run took?" (sampling noise). It does not cover
run-to-run noise (another process, a warmer cache, a different frequency): that is what a comparison's threshold is
for. Calls timed back to back are not independent, so the interval is somewhat narrower than the truth; the threshold
absorbs that too.
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
    if not 0 < conf < 1:
        raise ValueError(f"conf must be in (0, 1), not {conf}")
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, not {n_boot}")
    med_a, med_b = float(np.median(xa)), float(np.median(xb))
    if med_a <= 0 or med_b < 0:
        raise ValueError("medians must be positive to form a ratio")
    rng = np.random.default_rng(seed)
    boot_a = bootstrap_medians(xa, n_boot, rng)
    boot_b = bootstrap_medians(xb, n_boot, rng)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = boot_b / boot_a
    tail = (1 - conf) / 2
    lo, hi = np.quantile(ratios, [tail, 1 - tail])
    return med_b / med_a, float(lo), float(hi)


def _average_ranks(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """1-based ranks with ties given their average rank, and the size of every tie group."""
    uniq, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    upper = np.cumsum(counts)  # rank of each group's last member
    avg = upper - (counts - 1) / 2.0
    return avg[inverse], counts


def mann_whitney_p(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> float:
    """Two-sided p-value of the Mann-Whitney U test (normal approximation, tie correction, continuity correction)."""
    xa, xb = _as_samples(a, "a"), _as_samples(b, "b")
    n1, n2 = xa.size, xb.size
    n = n1 + n2
    ranks, ties = _average_ranks(np.concatenate([xa, xb]))
    u1 = float(ranks[:n1].sum()) - n1 * (n1 + 1) / 2.0
    mu = n1 * n2 / 2.0
    tie_term = float((ties ** 3 - ties).sum()) / (n * (n - 1)) if n > 1 else 0.0
    var = n1 * n2 / 12.0 * ((n + 1) - tie_term)
    if var <= 0:
        return 1.0  # every value equal: no evidence of a difference
    z = max(abs(u1 - mu) - 0.5, 0.0) / math.sqrt(var)
    return float(min(1.0, math.erfc(z / math.sqrt(2))))
