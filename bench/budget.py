"""The run's time budget, spread over (model, phase) pairs by their cost, and re-spread as the run goes.

A pair's cost is ``planned rows x (1 + step FLOPs / mean step FLOPs of that phase over the run's models)``: every row
pays a floor (warm-up, a minimum of windows or calls, whatever the model), and a model whose step is heavier than the
phase's average pays in proportion to its FLOPs (AlexNet's training step at batch 512 is ~2000x the MLP's at 64).

``seconds_for(name, phase)`` is the pair's share of what is LEFT of the budget, taken when the pair starts: a pair
that ran over leaves less for the ones after it, one that finished early leaves more, so the run ends near its
budget whatever the machine. But never less than MIN_SHARE of the pair's planned share (its cost's share of the
whole budget): a heavy model whose sample rules overrun its share must not starve the models after it (in one run
AlexNet at batch 512 overran by ~100 s and left the last two models zero seconds, so the tuner of one of them could
not probe a single candidate). The budget is a target for the phases' sizing, not a kill switch: a phase still meets
its sample rules, and the run's wall time (env.wall_s) says what it really took.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterable

Pair = tuple[str, str]  # (model, phase)
MIN_SHARE = 0.5  # the least a pair gets, as a fraction of its planned share, however far earlier pairs overran


def pair_costs(rows: dict[Pair, int], step_flops: dict[Pair, float | None]) -> dict[Pair, float]:
    """Cost weight of every pair from its planned rows and the FLOPs of one of its steps (None: the phase's mean)."""
    by_phase: dict[str, list[float]] = {}
    for (_, phase), flops in step_flops.items():
        if flops:
            by_phase.setdefault(phase, []).append(flops)
    costs = {}
    for pair, n in rows.items():
        known = by_phase.get(pair[1])
        mean = sum(known) / len(known) if known else None
        flops = step_flops.get(pair)
        relative = flops / mean if flops and mean else 1.0
        costs[pair] = n * (1.0 + relative)
    return costs


class Budget:
    """Seconds per (model, phase): the pair's cost share of the budget left when it started."""

    def __init__(self, total_s: float, costs: dict[Pair, float], clock: Callable[[], float] = time.perf_counter):
        self.total_s, self.costs, self.clock = float(total_s), dict(costs), clock
        self.t0 = clock()
        self.done: set[Pair] = set()
        self.started: dict[Pair, float] = {}  # pair -> its seconds, fixed when it started

    def elapsed_s(self) -> float:
        return self.clock() - self.t0

    def left_s(self) -> float:
        return max(0.0, self.total_s - self.elapsed_s())

    def pending(self) -> Iterable[Pair]:
        return (p for p in self.costs if p not in self.done)

    def planned_s(self, pair: Pair) -> float:
        """The pair's cost share of the whole budget, as planned before the run started."""
        total = sum(self.costs.values())
        return self.total_s * self.costs.get(pair, 0.0) / total if total > 0 else 0.0

    def _share(self, pair: Pair) -> float:
        pending = sum(self.costs[p] for p in self.pending())
        cost = self.costs.get(pair, 0.0)
        if pair in self.done or pending <= 0:
            return 0.0
        return max(self.left_s() * cost / pending, MIN_SHARE * self.planned_s(pair))

    def start(self, pair: Pair) -> float:
        """The pair begins now: its seconds are fixed from here on (so every call of a phase sees one figure)."""
        self.started[pair] = self._share(pair)
        return self.started[pair]

    def finish(self, pair: Pair) -> None:
        self.done.add(pair)

    def finish_model(self, name: str) -> None:
        """A model that ended early (broken checkpoint, interrupt): its other pairs no longer claim a share."""
        self.done.update(p for p in self.costs if p[0] == name)

    def seconds_for(self, name: str, phase: str) -> float:
        pair = (name, phase)
        return self.started[pair] if pair in self.started else self._share(pair)
