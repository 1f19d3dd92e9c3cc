"""How the training rows are timed: windows of warm back-to-back steps, round-robin over every row (time_rows), then
H1 (bench.schedule.headlines) measured to a precision (time_all): ``fast`` over ``tutorial_loop``, timed in interleaved
rounds until the ratio's 95% interval is within +-``target_pct`` percent, or the question's share of the phase's
seconds is spent.

As torch.utils.benchmark's ``adaptive_autorange`` stops once the spread is small enough (rather than after a fixed
count), a round here is one window of each of the two rows, back to back, in alternating order (so neither row is
always the one after a switch); after every round the bootstrap interval of the ratio of the rows' median window rates
(bench.measure.stats.median_ratio_ci, the same interval derive() prints) is checked. Windows are the phase's own
(warm, steady back-to-back steps), so the extra rounds only add samples to the rows the round-robin started.
The answer says the interval reached and whether it met the target; the table prints it beside the ratio.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from bench.measure import timing
from bench.measure.stats import median_ratio_ci
from bench.measure.timing import steps_for_window, time_window

WINDOW_S = {True: 0.15, False: 0.5}  # a window's target without a budget (quick, full)
MIN_WINDOW_S = 0.02  # the shortest window a budget may ask for
MIN_WINDOWS = {True: 3, False: 5}  # the sample rule: every row's IQR rests on at least this many windows
MAX_WINDOWS = {True: 3, False: 9}
MEMORY_STEPS = 1  # steady steps the phase times per row after its build (steady_step): what sizes a slow row
H1_SHARE = 0.5  # of the train phase's seconds left after the builds: what the round-robin leaves for the question
PLAIN = {"precision": "fp32", "channels_last": False, "compile": None}
NO_BUDGET_S = {True: 3.0, False: 60.0}  # the question's seconds without --budget (quick, full)
MAX_ROUNDS = 400  # a guard: a ratio this noisy after this many rounds will not narrow in a run's time
MIN_RATE_WINDOWS = 3  # per row before an interval is trusted to have met the target


class Timed(Protocol):
    rates: list[float]
    error: BaseException | None
    step: Callable[[], int]
    step_s: float | None
    steps_per_window: int
    samples: int


@dataclass
class H1Answer:
    """The ratio fast / tutorial_loop of median window rates, its 95% interval, the precision asked and reached."""

    ratio: float
    lo: float
    hi: float
    target_pct: float
    reached_pct: float
    met: bool
    rounds: int  # the extra interleaved rounds this loop ran (after the round-robin's)


def half_width_pct(ratio: float, lo: float, hi: float) -> float:
    """The interval's wider side as a percent of the ratio: [0.95, 1.05] around 1.00 is +-5%."""
    return 100.0 * max(hi / ratio - 1.0, 1.0 - lo / ratio) if ratio > 0 else float("inf")


def ratio_now(base: Timed, answer: Timed, target_pct: float, rounds: int) -> H1Answer | None:
    """The answer the windows so far give (None: too few windows on a side for any interval)."""
    if len(base.rates) < 2 or len(answer.rates) < 2:
        return None
    ratio, lo, hi = median_ratio_ci(base.rates, answer.rates)  # median(answer) / median(base)
    reached = half_width_pct(ratio, lo, hi)
    enough = min(len(base.rates), len(answer.rates)) >= MIN_RATE_WINDOWS
    return H1Answer(ratio, lo, hi, target_pct, reached, enough and reached <= target_pct, rounds)


def measure_to_precision(base: Timed, answer: Timed, window: Callable[[Any], None], *, target_pct: float,
                         budget_s: float | None, quick: bool = False,
                         clock: Callable[[], float] = timing.clock) -> H1Answer | None:
    """Interleaved rounds of ``window(base)`` and ``window(answer)`` (alternating which goes first) until the
    ratio's interval is within +-``target_pct`` % or another round would outlast ``budget_s`` (None:
    NO_BUDGET_S). None when either row failed or no interval could be formed."""
    limit_s = NO_BUDGET_S[quick] if budget_s is None else budget_s
    began, round_s, rounds = clock(), 0.0, 0
    while base.error is None and answer.error is None:
        got = ratio_now(base, answer, target_pct, rounds)
        if (got is not None and got.met) or rounds >= MAX_ROUNDS:
            return got
        if clock() - began + round_s > limit_s:
            return got
        t0 = clock()
        for row in (base, answer) if rounds % 2 == 0 else (answer, base):
            window(row)
        round_s, rounds = clock() - t0, rounds + 1
    return None


def window_target_s(n_rows: int, quick: bool, budget_s: float | None) -> float:
    """Seconds per window: WINDOW_S, or less when the budget left for the windows cannot hold MIN_WINDOWS of them
    per row (plus about one more for sizing), down to MIN_WINDOW_S."""
    target_s = WINDOW_S[quick]
    if budget_s is None:
        return target_s
    fit_s = budget_s / (max(n_rows, 1) * (MIN_WINDOWS[quick] + 1))
    return max(MIN_WINDOW_S, min(target_s, fit_s))


def window_steps(row: Any, sync: Callable[[], None], target_s: float) -> int:
    """Steps per window: from the steady-state step time (steady_step) when that step alone lasted long
    enough to be trusted (steps_for_window's own rule: 5% of the target), else steps_for_window's probe."""
    if row.step_s is not None and row.step_s * MEMORY_STEPS >= 0.05 * target_s:
        return max(1, round(target_s / row.step_s))
    return steps_for_window(row.step, sync, target_s)


def time_rows(rows: list[Any], sync: Callable[[], None], *, quick: bool, budget_s: float | None = None,
              say: Callable[[str], None] = lambda text: None) -> None:
    """Size each row's window, then time the windows round-robin in a rotating order: MIN_WINDOWS rounds, then more
    (up to MAX_WINDOWS) while a round still fits in ``budget_s`` (None: no budget, all of them).

    A row that raises is marked with its error and leaves the rotation; the others go on. ``say`` hears what runs:
    the sizing, then "round k of n, R rows in the round" (the progress pulse prints it).
    """
    began = timing.clock()
    target_s = window_target_s(len(rows), quick, budget_s)
    say(f"sizing windows of {target_s:.2g} s ({len(rows)} rows)")
    for row in rows:
        _guard(row, lambda r=row: setattr(r, "steps_per_window", window_steps(r, sync, target_s)))
    live = [r for r in rows if r.error is None]
    # A one-step window means a multi-second step: five windows keep the run bounded, nine otherwise.
    most = MIN_WINDOWS[quick] if any(r.steps_per_window == 1 for r in live) else MAX_WINDOWS[quick]
    round_s = 0.0
    for w in range(most):
        spent_s = timing.clock() - began
        if w >= MIN_WINDOWS[quick] and budget_s is not None and spent_s + round_s > budget_s:
            break
        t0 = timing.clock()
        live = [r for r in rows if r.error is None]
        say(f"round {w + 1} of {MIN_WINDOWS[quick]}" + (f"-{most}" if most > MIN_WINDOWS[quick] else "") +
            f", {len(live)} rows in the round")
        for row in live[w % max(len(live), 1):] + live[:w % max(len(live), 1)]:  # no row always first or last
            _guard(row, lambda r=row: _one_window(r, sync))
        round_s = timing.clock() - t0


def _one_window(row: Any, sync: Callable[[], None]) -> None:
    if row.steps_per_window > 1:  # warm: the switch from the row before is paid outside the window (module doc)
        row.step()
    seconds, samples = time_window(row.step, sync, row.steps_per_window)
    row.rates.append(samples / seconds)
    row.samples += samples


def _guard(row: Any, fn: Callable[[], None]) -> None:
    if row.error is not None:
        return
    try:
        fn()
    except Exception as exc:  # a failing row is recorded as such; the other rows go on
        row.error = exc


def time_all(timed: list[Any], ctx: Any, left_s: float | None) -> H1Answer | None:
    """The round-robin over every row, then H1's two rows to ctx.precision_pct in what is left (H1_SHARE of
    ``left_s`` at least): its answer, None without both rows."""
    say = lambda text: setattr(ctx, "activity", text)  # noqa: E731
    pair = [next((r for r in timed if r.plan.key_fields() == PLAIN | {"row": n}), None)
            for n in ("tutorial_loop", "fast")]
    began = timing.clock()
    share = 1.0 - H1_SHARE if None not in pair else 1.0
    time_rows(timed, ctx.sync, quick=ctx.quick, budget_s=None if left_s is None else share * left_s, say=say)
    if None in pair:
        return None
    say(f"H1: fast vs tutorial_loop to +-{ctx.precision_pct:g}%")
    return measure_to_precision(pair[0], pair[1], lambda r: _guard(r, lambda: _one_window(r, ctx.sync)),
                                target_pct=ctx.precision_pct, quick=ctx.quick,
                                budget_s=None if left_s is None else left_s - (timing.clock() - began))


