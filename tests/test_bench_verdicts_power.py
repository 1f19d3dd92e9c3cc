"""The verdict rule's claims, checked by seeded simulation against the project's own statistics
(bench.measure.stats, vectorised over trials): its 95% interval covers the true ratio 93-97% of the time for 3, 5 and
10 processes per side whatever the processes' spread; 80 rows of the same code flag nothing in >= 95% of comparisons
(Holm's rule is what holds it: judged each alone, the same rows flag something far more often); and a row's printed
MDE means what it says: a true change of that size is flagged 80% +- 7% of the time.

The model of a measurement (the issue's): every process draws a lognormal offset of spread ``s`` (sigma of its log)
and takes ``CALLS`` calls with lognormal within-process noise of IQR 12%; a process's figure is its median."""
from __future__ import annotations

import math

import numpy as np
import pytest

from bench.analysis.verdicts import FAMILY_ALPHA, POWER
from bench.measure.stats import holm, interval_bounds, mde_log, p_parts, pooled_parts, welch_parts

CALLS = 51
WITHIN_SIGMA = 0.12 / 1.349  # a lognormal whose IQR is 12% of its median
T = 0.05  # bench.compare's default threshold
BOUND = math.log1p(T)


def log_process_medians(rng: np.random.Generator, trials: int, processes: int, spread: float,
                        shift: float | np.ndarray = 0.0, rows: int | None = None) -> np.ndarray:
    """log of each process's median: shape (trials, [rows,] processes). One row per trial: the median of CALLS
    drawn calls; many rows (the family tests, 80 x more draws): the median's large-sample law, normal with variance
    (pi / 2) sigma^2 / CALLS, to keep the suite fast."""
    shape = (trials, processes) if rows is None else (trials, rows, processes)
    offsets = rng.normal(0.0, spread, size=shape) + np.asarray(shift)[..., None]
    if rows is not None:
        return offsets + rng.normal(0.0, math.sqrt(math.pi / 2 / CALLS) * WITHIN_SIGMA, size=shape)
    calls = rng.normal(0.0, WITHIN_SIGMA, size=(*shape, CALLS))
    return offsets + np.median(calls, axis=-1)  # log is monotone: the log of the median is the median of the logs


def flagged_by_holm(p: np.ndarray) -> np.ndarray:
    """(trials, rows) p-values -> (trials, rows) flags under Holm at the family's alpha."""
    return np.array([holm(list(row), FAMILY_ALPHA) for row in p])


@pytest.mark.parametrize("processes", [3, 5, 10])
@pytest.mark.parametrize("spread", [0.05, 0.20, 0.60])
def test_the_95_percent_interval_covers_the_truth_93_to_97_percent(processes, spread):
    rng = np.random.default_rng(1000 * processes + int(spread * 100))
    la = log_process_medians(rng, 8000, processes, spread)
    lb = log_process_medians(rng, 8000, processes, spread, shift=math.log(1.3))
    lo, hi = interval_bounds(*welch_parts(la, lb), 0.95)
    coverage = float(np.mean((lo <= 1.3) & (1.3 <= hi)))
    assert 0.93 <= coverage <= 0.97, coverage


def test_one_process_rows_judged_with_a_profile_cover_the_truth_too():
    """A one-process row against a --repeat 5 profile (4 df) of this machine: the pooled t interval covers."""
    rng = np.random.default_rng(7)
    spread = 0.2
    profile = log_process_medians(rng, 2000, 5, spread)
    prior_var = np.var(profile, axis=-1, ddof=1)
    la, lb = log_process_medians(rng, 2000, 1, spread), log_process_medians(rng, 2000, 1, spread)
    lo, hi = interval_bounds(*pooled_parts(la, lb, prior_var, 4), 0.95)
    assert 0.93 <= float(np.mean((lo <= 1) & (1 <= hi))) <= 0.97


def test_80_rows_of_the_same_code_flag_nothing_in_at_least_95_percent_of_comparisons():
    rng = np.random.default_rng(80)
    la = log_process_medians(rng, 400, 3, 0.2, rows=80)  # --repeat 3 on both sides, processes 20% apart
    lb = log_process_medians(rng, 400, 3, 0.2, rows=80)
    p = p_parts(*welch_parts(la, lb), BOUND)
    clean = float(np.mean(~flagged_by_holm(p).any(axis=1)))
    assert clean >= 0.95, clean
    alone = float(np.mean(~(p <= FAMILY_ALPHA).any(axis=1)))  # each row's own 95% interval beyond T
    assert alone < 0.9, alone  # what the family rule saves: judged one by one the same code is flagged often


def test_one_process_rows_of_the_same_code_with_a_profile_flag_nothing_95_percent():
    rng = np.random.default_rng(81)
    prior_var = np.var(log_process_medians(rng, 400, 5, 0.2, rows=80), axis=-1, ddof=1)  # one profile per trial
    la, lb = log_process_medians(rng, 400, 1, 0.2, rows=80), log_process_medians(rng, 400, 1, 0.2, rows=80)
    p = p_parts(*pooled_parts(la, lb, prior_var, 4), BOUND)
    assert float(np.mean(~flagged_by_holm(p).any(axis=1))) >= 0.95


@pytest.mark.parametrize("processes", [3, 5, 10])
def test_a_change_equal_to_a_rows_mde_is_flagged_80_percent_of_the_time(processes):
    """80 rows of which one changed by its MDE (at Holm's level for 80 rows, from the standard error its design
    gives: the between-process spread over ``processes`` per side) is flagged 80% +- 7% of the time."""
    rng = np.random.default_rng(processes)
    trials, rows, spread = 1000, 80, 0.2
    per_process = spread ** 2 + (1.2533 * WITHIN_SIGMA) ** 2 / CALLS  # a median's variance: (pi / 2) sigma^2 / n
    mde = mde_log(math.sqrt(2 * per_process / processes), 2 * processes - 2, BOUND, FAMILY_ALPHA / rows, POWER)
    shift = np.zeros(rows)
    shift[0] = mde
    la = log_process_medians(rng, trials, processes, spread, rows=rows)
    lb = log_process_medians(rng, trials, processes, spread, shift=shift, rows=rows)
    flags = flagged_by_holm(p_parts(*welch_parts(la, lb), BOUND))
    power = float(np.mean(flags[:, 0]))
    assert 0.73 <= power <= 0.87, power
    assert float(np.mean(flags[:, 1:].any(axis=1))) <= 0.05


def test_a_one_process_rows_mde_from_its_profile_means_what_it_says():
    rng = np.random.default_rng(6)
    trials, rows, spread = 1500, 80, 0.2
    prior_var = np.var(log_process_medians(rng, trials, 5, spread), axis=-1, ddof=1)
    se = np.sqrt(2 * prior_var)  # one process a side: the profile alone sets the error
    mde = mde_log(se, 4, BOUND, FAMILY_ALPHA / rows, POWER, fixed_se=True)
    shift = np.zeros((trials, rows))
    shift[:, 0] = mde
    la = log_process_medians(rng, trials, 1, spread, rows=rows)
    lb = log_process_medians(rng, trials, 1, spread, shift=shift, rows=rows)
    flags = flagged_by_holm(p_parts(*pooled_parts(la, lb, prior_var[:, None], 4), BOUND))
    assert 0.73 <= float(np.mean(flags[:, 0])) <= 0.87
