"""Racing candidates to the fastest, in interleaved rounds (successive halving, F-race): pure rules, no torch.

Every round gives each candidate still in the race a short chunk of timed calls, in a rotated order, so a slow drift
of the machine (another process, the clock, the cache) lands on every candidate alike instead of on whoever ran last.
After each round the candidates are ranked by median; one ranked third or lower is dropped once the interval of its
median over the leader's lies wholly above 1 (clearly behind, not merely behind on this draw). The two best are never
dropped: what is left of the race's seconds goes to separating them, until the 95% interval of their ratio is within
+-``precision_pct`` of the ratio, or the seconds are spent. A dropped candidate keeps its samples and the interval
that dropped it.

Intervals are bootstrap intervals of a ratio of medians over the calls (bench.measure.stats.median_ratio_ci). Calls
timed back to back are not independent, so the interval is within-process noise only, and somewhat narrow; dropping
uses a stricter level (DROP_CONF) because the test is repeated after every round.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from bench.measure.stats import median_ratio_ci

CONF = 0.95  # the level every printed interval is at
DROP_CONF = 0.99  # a drop is tested after every round: a stricter level keeps repeated looks from dropping a rival
MIN_ROUNDS = 3  # rounds before any drop or stop: one chunk can land on a burst of load
MAX_ROUNDS = 1000  # a guard against a clock that never advances; a real race ends on its seconds first


@dataclass(frozen=True)
class Standing:
    """A candidate against the leader: ``vs_leader`` = its median / the leader's (>= 1), with its interval."""

    name: str
    median: float
    vs_leader: float
    lo: float
    hi: float
    n: int

    def half_width_pct(self) -> float:
        """The interval's larger side as a percentage of the ratio: what ``precision_pct`` is compared with."""
        return 100.0 * max(self.hi / self.vs_leader - 1.0, 1.0 - self.lo / self.vs_leader)


@dataclass
class RaceResult:
    samples: dict[str, list[float]]
    rounds: int = 0
    final: list[Standing] = field(default_factory=list)  # the candidates left at the end, leader first
    dropped: dict[str, Standing] = field(default_factory=dict)  # name -> the standing that dropped it (DROP_CONF)
    dropped_by: dict[str, str] = field(default_factory=dict)  # name -> the leader it was measured against then
    dropped_round: dict[str, int] = field(default_factory=dict)
    target_met: bool | None = None  # None: fewer than two candidates, no ratio to reach a precision on

    @property
    def winner(self) -> str | None:
        return self.final[0].name if self.final else None

    @property
    def runner_up(self) -> Standing | None:
        return self.final[1] if len(self.final) > 1 else None


def standings(samples: Mapping[str, Sequence[float]], names: Sequence[str], conf: float = CONF,
              seed: int = 0) -> list[Standing]:
    """``names`` ranked by median (fastest first), each against the fastest with its ``conf`` interval."""
    medians = {n: float(np.median(samples[n])) for n in names}
    ranked = sorted(names, key=lambda n: (medians[n], n))
    if not ranked:
        return []
    leader = ranked[0]
    out = [Standing(leader, medians[leader], 1.0, 1.0, 1.0, len(samples[leader]))]
    for name in ranked[1:]:
        r, lo, hi = median_ratio_ci(samples[leader], samples[name], conf=conf, seed=seed)
        out.append(Standing(name, medians[name], r, lo, hi, len(samples[name])))
    return out


def to_drop(ranked: Sequence[Standing]) -> list[Standing]:
    """Those ranked third or lower whose interval against the leader lies wholly above 1 (ranked at DROP_CONF)."""
    return [s for s in ranked[2:] if s.lo > 1.0]


def precision_met(ranked: Sequence[Standing], precision_pct: float) -> bool:
    """Two candidates left and their ratio's interval within +-precision_pct of the ratio."""
    return len(ranked) == 2 and ranked[1].half_width_pct() <= precision_pct


def race(names: Sequence[str], time_chunk: Callable[[str], Sequence[float]], spent_s: Callable[[], float],
         budget_s: float, precision_pct: float, min_samples: int, seed: int = 0) -> RaceResult:
    """Race ``names``: ``time_chunk(name)`` times one chunk of calls and returns their seconds; ``spent_s()`` says
    how long the race has run. It stops once every candidate left has ``min_samples`` samples and MIN_ROUNDS rounds
    are done, and then either the top two are separated to ``precision_pct`` (or one candidate is left), or
    ``budget_s`` is spent (never before the minimum: the sample rules come before the budget)."""
    result = RaceResult(samples={n: [] for n in names})
    alive = list(names)
    while result.rounds < MAX_ROUNDS:
        shift = result.rounds % max(len(alive), 1)
        for name in alive[shift:] + alive[:shift]:
            result.samples[name].extend(time_chunk(name))
        result.rounds += 1
        if result.rounds < MIN_ROUNDS or min(len(result.samples[n]) for n in alive) < min_samples:
            continue
        ranked = standings(result.samples, alive, DROP_CONF, seed)
        for s in to_drop(ranked):
            alive.remove(s.name)
            result.dropped[s.name], result.dropped_by[s.name] = s, ranked[0].name
            result.dropped_round[s.name] = result.rounds
        ranked = standings(result.samples, alive, CONF, seed)
        if len(alive) < 2 or precision_met(ranked, precision_pct) or spent_s() >= budget_s:
            break
    result.final = standings(result.samples, alive, CONF, seed)
    result.target_met = precision_met(result.final, precision_pct) if len(result.final) >= 2 else None
    return result
