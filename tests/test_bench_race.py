"""The racing rule (bench.measure.race) on seeded samples and a fake clock: who is dropped, when it stops."""
from __future__ import annotations

import numpy as np
import pytest

from bench.measure import race as racing


class Field:
    """Candidates whose calls take ``median`` seconds with a relative noise ``noise``; a fake clock that advances
    by each chunk's seconds."""

    def __init__(self, medians: dict[str, float], noise: float = 0.05, chunk: int = 10, seed: int = 1):
        self.medians, self.noise, self.chunk = medians, noise, chunk
        self.rng = np.random.default_rng(seed)
        self.clock = 0.0
        self.order: list[str] = []

    def time_chunk(self, name: str) -> list[float]:
        values = self.medians[name] * (1 + self.noise * self.rng.standard_normal(self.chunk))
        values = np.abs(values).tolist()
        self.clock += sum(values)
        self.order.append(name)
        return values

    def run(self, budget_s: float = 10.0, precision_pct: float = 5.0, min_samples: int = 10):
        return racing.race(list(self.medians), self.time_chunk, lambda: self.clock, budget_s, precision_pct,
                           min_samples)


def test_a_clearly_slower_candidate_is_dropped_and_keeps_its_samples_and_interval():
    field = Field({"a": 1e-3, "b": 1.05e-3, "slow": 2e-3}, noise=0.05)
    result = field.run(precision_pct=1.0)
    assert "slow" in result.dropped and result.dropped_by["slow"] == "a"
    dropped = result.dropped["slow"]
    assert dropped.lo > 1.0 and dropped.vs_leader == pytest.approx(2.0, rel=0.1)
    assert len(result.samples["slow"]) == dropped.n >= 10
    # after the drop it is timed no more: the others got more chunks than it did
    assert len(result.samples["a"]) > len(result.samples["slow"])
    assert [s.name for s in result.final] == ["a", "b"]


def test_the_top_two_are_never_dropped_however_far_apart():
    result = Field({"a": 1e-3, "b": 3e-3}, noise=0.02).run()
    assert result.dropped == {} and [s.name for s in result.final] == ["a", "b"]
    assert result.runner_up.vs_leader == pytest.approx(3.0, rel=0.05) and result.target_met is True


def test_a_rival_within_the_noise_stays_in_the_race():
    field = Field({"a": 1e-3, "b": 1.0e-3, "c": 1.01e-3}, noise=0.3)
    result = field.run(budget_s=0.5)
    assert result.dropped == {} and len(result.final) == 3


def test_it_stops_as_soon_as_the_top_two_are_separated_to_the_precision():
    result = Field({"a": 1e-3, "b": 1.5e-3}, noise=0.01).run(precision_pct=5.0)
    assert result.target_met is True and result.rounds == racing.MIN_ROUNDS
    assert result.runner_up.half_width_pct() <= 5.0


def test_a_spent_budget_ends_the_race_with_the_target_not_met():
    field = Field({"a": 1e-3, "b": 1e-3}, noise=0.5)
    result = field.run(budget_s=0.2, precision_pct=0.1)
    assert result.target_met is False
    assert field.clock < 0.2 + 2 * 10 * 1e-3 * 3  # at most the round that crossed the budget
    assert result.runner_up.half_width_pct() > 0.1


def test_the_sample_rules_come_before_the_budget():
    field = Field({"a": 1e-3, "b": 2e-3}, chunk=3)
    result = field.run(budget_s=0.0, min_samples=12)
    assert min(len(v) for v in result.samples.values()) >= 12 and result.rounds >= racing.MIN_ROUNDS


def test_rounds_rotate_who_goes_first():
    field = Field({"a": 1e-3, "b": 1e-3, "c": 1e-3}, noise=0.5)
    field.run(budget_s=0.05)
    firsts = {field.order[i] for i in range(0, 9, 3)}
    assert firsts == {"a", "b", "c"}


def test_one_candidate_has_no_ratio_to_reach():
    result = Field({"eager": 1e-3}).run()
    assert result.winner == "eager" and result.runner_up is None and result.target_met is None


def test_half_width_is_the_larger_side_of_the_interval_as_a_percentage():
    s = racing.Standing("b", 2.0, 1.25, 1.0, 1.3, 10)
    assert s.half_width_pct() == pytest.approx(20.0)

