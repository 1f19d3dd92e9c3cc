"""bench.measure.stats on samples drawn from known distributions (seeded numpy): the ratio-of-medians interval finds a known
shift, stays on 1 without one, covers the truth about as often as it claims; percentiles appear only with enough
values; the process-then-sample bootstrap widens with the processes' disagreement and reduces to the one-process
interval for one process each."""
from __future__ import annotations

import numpy as np
import pytest

from bench.measure.stats import (
    bootstrap_medians,
    median_ratio_ci,
    percentile_or_none,
    process_mean_median,
    process_ratio_ci,
    split_processes,
)


def lognormal(seed: int, n: int, median: float = 2.0, sigma: float = 0.2) -> np.ndarray:
    """Latency-like samples whose true median is ``median``."""
    return np.random.default_rng(seed).lognormal(np.log(median), sigma, n)


def test_same_distribution_interval_contains_one():
    ratio, lo, hi = median_ratio_ci(lognormal(1, 2000), lognormal(2, 2000))
    assert lo < 1 < hi
    assert ratio == pytest.approx(1.0, abs=0.03) and hi - lo < 0.06


def test_a_25_percent_shift_is_found_and_sized():
    ratio, lo, hi = median_ratio_ci(lognormal(1, 5000), lognormal(2, 5000, median=2.5))
    assert 1 < lo < ratio < hi
    assert ratio == pytest.approx(1.25, rel=0.02)
    assert lo == pytest.approx(1.25, rel=0.03) and hi == pytest.approx(1.25, rel=0.03)


def test_interval_is_oriented_b_over_a():
    ratio, lo, hi = median_ratio_ci(lognormal(1, 500, median=2.5), lognormal(2, 500))
    assert hi < 1 and ratio == pytest.approx(0.8, rel=0.04)


def test_coverage_is_near_the_nominal_level():
    # 300 pairs of runs whose true ratio of medians is 1.1: a 90% interval should hold it about 90% of the time.
    hits = 0
    for rep in range(300):
        a = lognormal(2 * rep, 201, median=1.0, sigma=0.3)
        b = lognormal(2 * rep + 1, 201, median=1.1, sigma=0.3)
        _, lo, hi = median_ratio_ci(a, b, conf=0.90, n_boot=1000, seed=rep)
        hits += lo <= 1.1 <= hi
    assert 0.83 <= hits / 300 <= 0.97


def test_interval_is_reproducible_under_its_seed():
    a, b = lognormal(1, 300), lognormal(2, 300)
    assert median_ratio_ci(a, b, seed=3) == median_ratio_ci(a, b, seed=3)
    assert median_ratio_ci(a, b, seed=3)[1:] != median_ratio_ci(a, b, seed=4)[1:]


def test_wider_confidence_gives_a_wider_interval():
    a, b = lognormal(1, 300), lognormal(2, 300)
    _, lo90, hi90 = median_ratio_ci(a, b, conf=0.90)
    _, lo99, hi99 = median_ratio_ci(a, b, conf=0.99)
    assert lo99 < lo90 and hi99 > hi90


@pytest.mark.parametrize("n", [1, 2, 3, 4, 9, 10, 51])
def test_fast_bootstrap_medians_match_resampling(n):
    # the order-statistic draw must give the same distribution as resampling and taking np.median
    x = lognormal(7, n, sigma=0.5)
    fast = bootstrap_medians(x, 100_000, np.random.default_rng(0))
    idx = np.random.default_rng(1).integers(0, n, size=(100_000, n))
    slow = np.median(x[idx], axis=1)
    qs = [0.025, 0.25, 0.5, 0.75, 0.975]
    assert np.quantile(fast, qs) == pytest.approx(np.quantile(slow, qs), rel=0.02)
    assert fast.mean() == pytest.approx(slow.mean(), rel=0.01)


@pytest.mark.parametrize("a, b", [([], [1.0]), ([1.0], []), ([0.0, 0.0], [1.0]), ([float("nan")], [1.0])])
def test_ratio_refuses_what_has_no_ratio(a, b):
    with pytest.raises(ValueError):
        median_ratio_ci(a, b)


def test_percentile_needs_its_minimum_values():
    assert percentile_or_none(range(99), 90) is None
    assert percentile_or_none(range(100), 90) == pytest.approx(89.1)
    assert percentile_or_none(range(999), 99) is None
    assert percentile_or_none(range(1000), 99) == pytest.approx(989.01)
    assert percentile_or_none([], 50) is None
    assert percentile_or_none(range(20), 95) is None and percentile_or_none(range(200), 95) is not None


def processes(seed: int, medians: list[float], n: int = 400, sigma: float = 0.1) -> list[np.ndarray]:
    """One run measured in len(medians) processes, each process's samples around its own median."""
    return [lognormal(seed * 100 + i, n, median=m, sigma=sigma) for i, m in enumerate(medians)]


def test_one_process_each_is_exactly_the_samples_interval():
    a, b = lognormal(1, 300), lognormal(2, 300, median=2.2)
    assert process_ratio_ci([a], [b], seed=5) == median_ratio_ci(a, b, seed=5)


def test_the_statistic_weighs_every_process_the_same():
    assert process_mean_median([[1.0, 1.0, 1.0], [3.0]]) == 2.0
    assert process_mean_median([[1.0, 2.0, 9.0]]) == 2.0


def test_processes_that_disagree_widen_the_interval_past_the_samples_own():
    # Same code, processes 1.7x apart in each run: the samples alone would call B faster; the processes say nothing.
    a = processes(1, [1.0, 1.7, 1.0])
    b = processes(2, [1.7, 1.0, 1.7])
    ratio, lo, hi = process_ratio_ci(a, b)
    _, wlo, whi = median_ratio_ci(np.concatenate(a), np.concatenate(b))
    assert lo < 1 < hi and hi - lo > 0.4
    assert whi - wlo < 0.1 and not wlo < 1 < whi  # pooled samples, no processes: a confident wrong answer


def test_a_shift_of_every_process_is_found_through_process_noise():
    a = processes(1, [1.0, 1.05, 0.97])
    b = processes(2, [1.25, 1.31, 1.21])
    ratio, lo, hi = process_ratio_ci(a, b)
    assert ratio == pytest.approx(1.25, rel=0.02) and 1.15 < lo < ratio < hi < 1.35


def test_process_interval_covers_the_truth_about_as_often_as_it_claims():
    # True process medians vary 10% (lognormal); the mean over 5 processes of each run, B 10% slower.
    hits, n = 0, 200
    for rep in range(n):
        rng = np.random.default_rng(rep)
        a = [lognormal(10 * rep + i, 101, median=float(m)) for i, m in enumerate(rng.lognormal(0, 0.1, 5))]
        b_medians = rng.lognormal(np.log(1.1), 0.1, 5)
        b = [lognormal(10 * rep + 5 + i, 101, median=float(m)) for i, m in enumerate(b_medians)]
        _, lo, hi = process_ratio_ci(a, b, conf=0.90, n_boot=1000, seed=rep)
        truth = 1.1  # both runs' process medians drawn around exp(mu) with the same spread
        hits += lo <= truth <= hi
    assert 0.70 <= hits / n <= 0.97  # the bootstrap of 5 processes runs somewhat narrow, never wildly


def test_process_interval_is_reproducible_and_refuses_junk():
    a, b = processes(1, [1.0, 1.1]), processes(2, [1.0, 1.2])
    assert process_ratio_ci(a, b, seed=3) == process_ratio_ci(a, b, seed=3)
    with pytest.raises(ValueError):
        process_ratio_ci([], b)
    with pytest.raises(ValueError):
        process_ratio_ci([[1.0], []], b)
    with pytest.raises(ValueError):
        process_ratio_ci([[0.0, 0.0], [0.0]], b)


def test_split_processes_cuts_in_order_and_checks_the_sizes():
    assert split_processes([1, 2, 3, 4, 5], [2, 3]) == [[1, 2], [3, 4, 5]]
    assert split_processes([1, 2], []) == [[1, 2]] and split_processes([1, 2], None) == [[1, 2]]
    for sizes in ([2, 2], [5, 0], [-1, 6], [2.5, 2.5], [True, 4]):
        with pytest.raises(ValueError, match="does not cut"):
            split_processes([1, 2, 3, 4, 5], sizes)
