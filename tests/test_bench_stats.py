"""bench.measure.stats on samples drawn from known distributions (seeded numpy): the ratio-of-medians interval finds a known
shift, stays on 1 without one, covers the truth about as often as it claims; percentiles appear only with enough
values; the rank test matches its textbook values."""
from __future__ import annotations

import numpy as np
import pytest

from bench.measure.stats import bootstrap_medians, mann_whitney_p, median_ratio_ci, percentile_or_none


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


def test_mann_whitney_matches_the_textbook_normal_approximation():
    # U = 0, n1 = n2 = 3: z = (0 - 4.5 + 0.5) / sqrt(5.25) -> p = 0.0808556 (scipy's asymptotic value)
    assert mann_whitney_p([1, 2, 3], [4, 5, 6]) == pytest.approx(0.0808556, rel=1e-5)
    assert mann_whitney_p([4, 5, 6], [1, 2, 3]) == pytest.approx(0.0808556, rel=1e-5)
    # ties: ranks 1 | 3 3 3 | 5.5 5.5, so U = 7 - 6 = 1; tie groups 1, 3, 2 make the variance 9/12 * (7 - 30/30)
    # = 4.5; z = (3.5 - 0.5) / sqrt(4.5) = sqrt(2) -> p = erfc(1)
    assert mann_whitney_p([1, 2, 2], [2, 3, 3]) == pytest.approx(0.1572992, rel=1e-5)
    assert mann_whitney_p([5.0] * 10, [5.0] * 10) == 1.0


def test_mann_whitney_separates_shifted_distributions_only():
    a = lognormal(1, 1000)
    assert mann_whitney_p(a, lognormal(2, 1000)) > 0.01
    assert mann_whitney_p(a, lognormal(3, 1000, median=2.5)) < 1e-10
