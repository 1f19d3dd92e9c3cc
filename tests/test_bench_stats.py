"""bench.measure.stats on samples drawn from known distributions (seeded numpy): the ratio-of-medians interval finds a known
shift, stays on 1 without one, covers the truth about as often as it claims; percentiles appear only with enough
values; the process-then-sample bootstrap widens with the processes' disagreement and reduces to the one-process
interval for one process each. The verdicts' t intervals (Welch / Student / pooled with a prior), Holm's rule, p,
the MDE and processes needed, against values worked by hand or by scipy directly."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sps

from bench.measure.stats import (
    MAX_PROCESSES,
    LogInterval,
    between_variance,
    bootstrap_medians,
    holm,
    log_medians,
    mde_log,
    median_ratio_ci,
    p_beyond,
    percentile_or_none,
    pooled_interval,
    process_mean_median,
    process_ratio_ci,
    processes_needed,
    split_processes,
    t_quantile,
    welch_interval,
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


# -- the verdicts' t intervals over log process medians ------------------------------------------------------------------

def test_log_medians_and_their_between_process_variance():
    logs = log_medians([[1.0, 2.0, 3.0], [4.0], [2.0, 2.0]])
    assert logs == pytest.approx(np.log([2.0, 4.0, 2.0]))
    assert between_variance(logs) == (pytest.approx(np.var(np.log([2.0, 4.0, 2.0]), ddof=1)), 2)
    with pytest.raises(ValueError, match="one process has no between-process variance"):
        between_variance(np.log([2.0]))
    with pytest.raises(ValueError, match="medians must be positive"):
        log_medians([[1.0], [0.0, 0.0]])


def test_welch_interval_by_hand():
    la, lb = np.log([1.0, 1.2, 1.1]), np.log([2.0, 2.6, 2.2, 2.4])
    li = welch_interval(la, lb)
    va, vb = np.var(la, ddof=1) / 3, np.var(lb, ddof=1) / 4
    df = (va + vb) ** 2 / (va ** 2 / 2 + vb ** 2 / 3)
    assert (li.diff, li.se, li.df) == pytest.approx((lb.mean() - la.mean(), np.sqrt(va + vb), df))
    half = sps.t.ppf(0.975, df) * np.sqrt(va + vb)
    assert li.bounds() == pytest.approx((np.exp(li.diff - half), np.exp(li.diff + half)))
    assert li.ratio == pytest.approx(np.exp(li.diff)) and li.bounds(0.5)[1] < li.bounds()[1]
    lc = np.log([2.0, 2.6, 2.2])
    same = welch_interval(la, lc)  # as many processes a side: Student's 2n - 2 df
    assert same.df == 4 and same.se == pytest.approx(np.sqrt(np.var(la, ddof=1) / 3 + np.var(lc, ddof=1) / 3))
    flat = welch_interval(np.log([1.0, 1.0]), np.log([2.0, 2.0]))
    assert flat.se == 0 and flat.df == np.inf and flat.bounds() == pytest.approx((2.0, 2.0))


def test_pooled_interval_weighs_the_prior_by_its_degrees_of_freedom():
    la, lb = np.log([1.0]), np.log([1.5, 1.7])
    li = pooled_interval(la, lb, prior_var=0.04, prior_df=4)
    own = np.sum((lb - lb.mean()) ** 2)
    s2 = (own + 4 * 0.04) / (1 + 4)
    assert (li.diff, li.se, li.df) == pytest.approx((lb.mean() - la.mean(), np.sqrt(s2 * (1 + 1 / 2)), 5))
    assert pooled_interval(la, la, 0.04, 4).se == pytest.approx(np.sqrt(0.04 * 2))
    with pytest.raises(ValueError, match="no degrees of freedom"):
        pooled_interval(la, la, 0.04, 0)


def test_dividing_by_the_machine_adds_its_error_and_keeps_the_fewer_df():
    row, machine = LogInterval(0.5, 0.03, 10), LogInterval(0.2, 0.04, 6)
    got = row.divided_by(machine)
    assert (got.diff, got.se, got.df) == pytest.approx((0.3, 0.05, 6))


def test_p_beyond_is_two_sided_against_the_threshold_band():
    bound = np.log(1.1)
    li = LogInterval(np.log(1.3), 0.05, 8)
    assert p_beyond(li, bound) == pytest.approx(2 * sps.t.sf((np.log(1.3) - bound) / 0.05, 8))
    faster = LogInterval(-np.log(1.3), 0.05, 8)
    assert p_beyond(faster, bound) == pytest.approx(p_beyond(li, bound))  # symmetric in the direction
    assert p_beyond(LogInterval(0.0, 0.05, 8), bound) == 1.0  # twice a p above one half: capped
    assert p_beyond(LogInterval(0.2, 0.0, 8), bound) == 0.0 and p_beyond(LogInterval(0.05, 0.0, 8), bound) == 1.0
    # at the 95% interval's edge the p is 0.05 exactly: the rule on one row is the interval beyond T
    edge = LogInterval(bound + sps.t.ppf(0.975, 8) * 0.05, 0.05, 8)
    assert p_beyond(edge, bound) == pytest.approx(0.05) and edge.bounds()[0] == pytest.approx(1.1)


def test_holm_steps_down_until_the_first_it_keeps():
    assert holm([0.01, 0.04, 0.03, 0.2], 0.05) == [True, False, False, False]  # 0.01 <= .0125; 0.03 > .05 / 3
    assert holm([0.01, 0.015, 0.024, 0.5], 0.05) == [True, True, True, False]  # .0125, .0167, .025
    assert holm([0.05], 0.05) == [True] and holm([0.051], 0.05) == [False] and holm([], 0.05) == []
    assert holm([0.3, 0.001], 0.05) == [False, True]


def test_mde_is_the_change_flagged_with_the_power_asked():
    bound, se, df = np.log(1.05), 0.04, 8
    mde = mde_log(se, df, bound, 0.05, 0.8)
    crit = sps.t.ppf(0.975, df)
    # a rerun estimates its own error: the noncentral t says the power at that change
    assert sps.nct.sf(crit, df, (mde - bound) / se) == pytest.approx(0.8, abs=1e-6)
    fixed = mde_log(se, df, bound, 0.05, 0.8, fixed_se=True)
    assert fixed == pytest.approx(bound + (crit + sps.t.ppf(0.8, df)) * se)
    assert mde_log(se, df, bound, 0.05 / 80, 0.8) > mde  # a family's smaller alpha needs a larger change
    assert mde_log(0.0, df, bound, 0.05) == pytest.approx(bound)
    assert mde_log(se, np.inf, bound, 0.05, fixed_se=True) == pytest.approx(bound + (1.959964 + 0.841621) * se)
    assert t_quantile(0.975, 4) == pytest.approx(2.776445) and t_quantile(np.array([0.975]), 4).shape == (1,)


def test_processes_needed_is_the_fewest_whose_mde_reaches_the_target():
    variance, bound, target = 0.001, np.log(1.05), np.log(1.075)
    n = processes_needed(variance, target, bound, 0.05)
    assert mde_log(np.sqrt(2 * variance / n), 2 * n - 2, bound, 0.05) <= target
    assert mde_log(np.sqrt(2 * variance / (n - 1)), 2 * n - 4, bound, 0.05) > target
    assert processes_needed(0.0, target, bound, 0.05) == 2
    few = 1e-4  # where the df (2n - 2 of two n-process runs) decides the count
    assert processes_needed(few, target, bound, 0.05) == 5
    assert mde_log(np.sqrt(2 * few / 4), 6, bound, 0.05) > target >= mde_log(np.sqrt(2 * few / 5), 8, bound, 0.05)
    assert processes_needed(variance, bound, bound, 0.05) is None  # a change of T itself: never
    assert processes_needed(1.0, target, bound, 0.05) is None and MAX_PROCESSES == 200
