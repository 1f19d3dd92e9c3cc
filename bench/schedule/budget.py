"""The run's time budget: a plan priced on this machine (bench.schedule.pricing), fitted to ``--budget``, and re-fitted as the
run goes.

Every planned row is a ``RowCost``: ``floor_s``, what it costs at its sample rules' minimum (its build, warm-up,
MIN_WINDOWS windows or PERCENTILE_MIN_CALLS[50] calls), and ``full_s``, what it costs with no budget (the phase's own
sizes). One-off costs that several rows share (a model's train template and tuner, a backend's build, the ONNX
export, a torchrun start-up) are ``groups``: paid once when any of their rows is kept. ``fit`` keeps rows until their
floors fit what is left, dropping rows in DROP ORDER (what a user loses least per second saved goes first: each
``tier`` weighs TIER_WEIGHT times the one before, over the row's seconds), and gives the rest to every kept row in proportion to what its full size would add (``flex``): first
fewer windows and calls, down to the sample rules, then fewer rows.

``Budget`` re-fits before every (model, phase) pair with the prices corrected by what the finished pairs really
took (``ratio``: measured / expected seconds, per phase), so a machine slower than its prices drops rows later in the
run rather than overrunning it, and the ETA (``eta_s``) is the corrected prices of what is left. The seconds are the
whole process's: ``elapsed`` counts from the command's start (imports, probes and pricing included) and ``reserve_s``
keeps room for the result files and plots at the end.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

Pair = tuple[str, str]  # (model, phase)
# The whole process's time budget in seconds, from the command's start to its exit (imports, probes, the pricing pass,
# builds, torchrun start-ups, result files and plots included): the plan is priced on this machine and fitted to it
# here, and the run ends within it plus the ETA's error (at most 15%). 520 s + 15% is under 10 minutes.
DEFAULT_BUDGET_S = 520.0
QUICK_BUDGET_S = 120.0
PLOTS_LABEL = "plots"  # the report's PNGs: a row of the plan the budget may drop (re-rendered by bench.report)
# The tiers, from what a user loses least (drop_order weighs each by TIER_WEIGHT ** tier over the row's seconds).
TIER_VARIANT = 0  # extra training variants: channels_last, compile, extra precisions
TIER_SCALE = 1  # the scale phase on a CPU (its processes share the same cores: the answer is rarely news)
TIER_DUP_BATCH = 2  # a non-eager backend at its second batch size (eager keeps both: the throughput reference)
# The ladder's middle rungs (fused_optimizer, no_host_read, fast_untuned) say which step of the ladder gave its
# speed-up; its ends (tutorial_loop, fast, compute) give the speed-up itself. A backend's row answers "which engine
# do I deploy?", what most readers of an inference table come for, so the middle rungs go before it.
TIER_LADDER = 3
TIER_BACKEND = 4  # a non-eager backend's remaining row
TIER_CORE = 5  # the rest: tutorial_loop, fast, compute, eager, parity, scale on GPUs
TIER_NAMES = {TIER_VARIANT: "training variant", TIER_SCALE: "scale on CPU", TIER_DUP_BATCH: "second batch size",
              TIER_BACKEND: "backend", TIER_LADDER: "ladder rung", TIER_CORE: "core row"}
TIER_WEIGHT = 4.0  # how much more a user loses with a row of the next tier than with one of this tier, per second
MIN_PRICED_S = 0.5  # below this a row's price says nothing about what dropping it saves
RATIO_RANGE = (0.1, 10.0)  # how far measured / expected may correct the prices


def pair_costs(rows: dict[Pair, int], step_flops: dict[Pair, float | None]) -> dict[Pair, float]:
    """Cost weights per pair from planned rows and one step's FLOPs (None: the phase's mean), for the progress ETA of
    a run without a budget (nothing priced): ``rows x (1 + FLOPs / the phase's mean FLOPs)``."""
    by_phase: dict[str, list[float]] = {}
    for (_, phase), flops in step_flops.items():
        if flops:
            by_phase.setdefault(phase, []).append(flops)
    costs = {}
    for pair, n in rows.items():
        known = by_phase.get(pair[1])
        mean = sum(known) / len(known) if known else None
        flops = step_flops.get(pair)
        costs[pair] = n * (1.0 + (flops / mean if flops and mean else 1.0))
    return costs


@dataclass
class RowCost:
    """One planned row, priced: the seconds at its floor and at its full size, the shared costs it needs."""

    model: str
    phase: str
    label: str  # unique within (model, phase): how the phase knows the row (e.g. "onnxruntime b=64")
    floor_s: float
    full_s: float
    tier: int = TIER_CORE
    groups: tuple[str, ...] = ()  # shared one-off costs (Plan.groups) this row needs
    fields: dict[str, Any] = field(default_factory=dict)  # the record's key fields (its skipped row)
    droppable: bool = True
    args: tuple[str, ...] = ()  # bench.run flags beyond --models/--phases that measure this row alone
    headline: str | None = None  # the question it answers (bench.schedule.headlines), None: a secondary row
    bundle: str | None = None  # rows of one bundle (a ratio's two ends) are kept or dropped together

    @property
    def pair(self) -> Pair:
        return (self.model, self.phase)

    @property
    def name(self) -> str:
        return f"{self.model} {self.phase} {self.label}".strip()


@dataclass
class Fit:
    """What fits: kept and dropped rows, the floor and full seconds of the kept ones, and the share of the flexible
    seconds (full - floor) that the budget grants (1: every row at its full size)."""

    kept: list[RowCost]
    dropped: list[RowCost]
    floor_s: float
    full_s: float
    flex: float  # the secondary rows' share
    flex_headline: float = 1.0  # the headlines' share: unused seconds go to them first

    def flex_of(self, row: RowCost) -> float:
        return self.flex_headline if row.headline else self.flex


def need_s(rows: Iterable[RowCost], groups: dict[str, float], flex: float | Callable[[RowCost], float],
           scale: Callable[[RowCost], float]) -> float:
    """Seconds of ``rows`` at ``flex`` (0: floors, 1: full; or per row), each row's and shared group's price times
    ``scale``."""
    rows = list(rows)
    seen: dict[str, float] = {}
    total = 0.0
    share = flex if callable(flex) else (lambda r: flex)
    for r in rows:
        total += scale(r) * (r.floor_s + share(r) * max(0.0, r.full_s - r.floor_s))
        for g in r.groups:
            seen.setdefault(g, scale(r) * groups.get(g, 0.0))
    return total + sum(seen.values())


def loss_per_second(row: RowCost, groups: dict[str, float]) -> float:
    """What dropping ``row`` loses a user per second it saves: TIER_WEIGHT ** tier over its floor plus its groups'
    seconds (at least MIN_PRICED_S). A tier counts TIER_WEIGHT times the one before it, so a row of an earlier tier
    outlasts one of a later tier only when it is more than that many times cheaper: a 0.3 s backend row is not
    dropped to save 0.3 s while a single 80 s training row of the same run is kept."""
    cost = row.floor_s + sum(groups.get(g, 0.0) for g in row.groups)
    return TIER_WEIGHT ** row.tier / max(cost, MIN_PRICED_S)


def drop_order(rows: list[RowCost], groups: dict[str, float]) -> list[RowCost]:
    """Droppable rows, first to go first: every secondary row before any headline (bench.schedule.headlines), then
    the least loss per second saved (loss_per_second), then the lower tier."""
    return sorted((r for r in rows if r.droppable),
                  key=lambda r: (r.headline is not None, loss_per_second(r, groups), r.tier, r.model, r.phase,
                                 r.label))


def bundle_of(row: RowCost, rows: Iterable[RowCost]) -> list[RowCost]:
    """``row`` and the rows kept or dropped with it (the same bundle), in ``rows``' order."""
    return [row] if row.bundle is None else [r for r in rows if r is row or r.bundle == row.bundle]


def _share(room: float, floor_s: float, full_s: float) -> float:
    """The flexible share ``room`` seconds grant rows whose floors and full sizes sum to these (0 to 1)."""
    if room <= 0:
        return 0.0
    return 1.0 if full_s <= floor_s or room >= full_s - floor_s else room / (full_s - floor_s)


def fit(rows: list[RowCost], groups: dict[str, float], available_s: float,
        scale: Callable[[RowCost], float] = lambda r: 1.0) -> Fit:
    """Keep rows until their floors fit ``available_s``, dropping in drop_order (a bundle at once); then every
    dropped row (bundle) that still fits comes back, the last dropped (the dearest loss) first; then the flexible
    seconds: the headlines' first, the secondary rows' from what the headlines leave."""
    kept = list(rows)
    dropped: list[RowCost] = []
    for victim in drop_order(rows, groups):
        if need_s(kept, groups, 0.0, scale) <= available_s:
            break
        for r in bundle_of(victim, kept):
            kept.remove(r)
            dropped.append(r)
    for back in reversed(list(dropped)):  # the drop that made the plan fit may have freed room for cheaper rows
        if back not in dropped:
            continue  # came back with its bundle
        bundle = bundle_of(back, dropped)
        if need_s([*kept, *bundle], groups, 0.0, scale) <= available_s:
            kept += bundle
            for r in bundle:
                dropped.remove(r)
    kept.sort(key=rows.index)
    floor_s, full_s = need_s(kept, groups, 0.0, scale), need_s(kept, groups, 1.0, scale)
    heads = [r for r in kept if r.headline]
    head_extra = need_s(heads, {}, 1.0, scale) - need_s(heads, {}, 0.0, scale)
    flex_headline = _share(available_s - floor_s, 0.0, head_extra)
    flex = _share(available_s - floor_s - flex_headline * head_extra, 0.0, full_s - floor_s - head_extra)
    return Fit(kept, dropped, floor_s, full_s, flex, flex_headline)


class Budget:
    """The fitted plan as the run goes: which rows are kept, each pair's seconds, the ETA."""

    def __init__(self, total_s: float, rows: list[RowCost], groups: dict[str, float], *, reserve_s: float = 0.0,
                 elapsed: Callable[[], float] | None = None, clock: Callable[[], float] = time.perf_counter):
        self.total_s, self.rows, self.groups, self.reserve_s = float(total_s), list(rows), dict(groups), reserve_s
        t0 = clock()
        self.clock = clock
        self.elapsed = elapsed or (lambda: clock() - t0)
        self.dropped: dict[str, RowCost] = {}  # row name -> row, dropped at plan time or before its pair
        self.done: set[Pair] = set()
        self.started: dict[Pair, float] = {}  # pair -> its expected seconds (uncorrected), fixed when it started
        self.spent: dict[Pair, float] = {}  # pair -> seconds it really took
        self.pair_t0: dict[Pair, float] = {}
        # pair -> the seconds it was given when it started (read later, seconds_for would already be corrected by
        # the pair's own time: the first pair of a phase would always read as exactly on budget)
        self.granted: dict[Pair, float] = {}
        self.flex = self.flex_headline = 1.0
        self.first_left_s = self.left_s()
        self.first = self.refit()
        self.first_dropped = dict(self.dropped)  # the plan printed before the measurements

    # -- prices corrected by what finished pairs really took
    def ratio(self, phase: str) -> float:
        """measured / expected seconds of the finished pairs of ``phase`` (of every phase before any), in
        RATIO_RANGE; 1 before anything finished."""
        pairs = [p for p in self.spent if p[1] == phase and self.started.get(p)] or \
            [p for p in self.spent if self.started.get(p)]
        expected = sum(self.started[p] for p in pairs)
        if not pairs or expected <= 0:
            return 1.0
        lo, hi = RATIO_RANGE
        return min(hi, max(lo, sum(self.spent[p] for p in pairs) / expected))

    def _scale(self, row: RowCost) -> float:
        return self.ratio(row.phase)

    def unstarted(self) -> list[RowCost]:
        return [r for r in self.rows if r.pair not in self.done and r.pair not in self.started]

    def pending(self) -> list[RowCost]:
        return [r for r in self.unstarted() if r.name not in self.dropped]

    def left_s(self) -> float:
        return self.total_s - self.elapsed() - self.reserve_s

    def refit(self) -> Fit:
        """Fit every row that has not started into what is left: a row dropped earlier comes back when the run went
        faster than priced, one kept so far goes when it went slower. Rows of started pairs stay as they were."""
        rows = self.unstarted()
        for r in rows:
            self.dropped.pop(r.name, None)
        got = fit(rows, self.groups, self.left_s() - self._running_left_s(), self._scale)
        for r in got.dropped:
            self.dropped[r.name] = r
        self.flex, self.flex_headline = got.flex, got.flex_headline
        return got

    def _flex(self, row: RowCost) -> float:
        return self.flex_headline if row.headline else self.flex

    def _running_left_s(self) -> float:
        return sum(max(0.0, self.started[p] * self.ratio(p[1]) - (self.clock() - self.pair_t0[p]))
                   for p in self.started if p not in self.done)

    # -- what the driver and the phases ask
    def keeps(self, model: str, phase: str, label: str) -> bool:
        return f"{model} {phase} {label}".strip() not in self.dropped

    def drops_model(self, name: str) -> bool:
        """Whether every row of model ``name`` is dropped (its build is then saved too)."""
        mine = [r for r in self.rows if r.model == name]
        return bool(mine) and all(r.name in self.dropped for r in mine)

    def dropped_in(self, pair: Pair) -> list[RowCost]:
        return [r for r in self.rows if r.pair == pair and r.name in self.dropped]  # in planned order

    def expected_s(self, pair: Pair, flex: float | None = None) -> float:
        kept = [r for r in self.rows if r.pair == pair and r.name not in self.dropped]
        return need_s(kept, self.groups, self._flex if flex is None else flex, lambda r: 1.0)

    def start(self, pair: Pair) -> float:
        """The pair begins: re-fit what is left (dropping rows that no longer fit), fix its seconds."""
        self.refit()
        self.started[pair] = self.expected_s(pair)
        self.pair_t0[pair] = self.clock()
        self.granted[pair] = self.seconds_for(*pair)
        return self.granted[pair]

    def given_s(self, pair: Pair) -> float | None:
        """The seconds ``pair`` was given when it started, to 0.1 s (None: it never started)."""
        seconds = self.granted.get(pair)
        return None if seconds is None else round(seconds, 1)

    def finish(self, pair: Pair) -> None:
        if pair in self.pair_t0:
            self.spent[pair] = self.clock() - self.pair_t0[pair]
        self.done.add(pair)

    def finish_model(self, name: str) -> None:
        """A model that ended early (broken checkpoint, interrupt): its other pairs no longer claim a share."""
        self.done.update(r.pair for r in self.rows if r.model == name)

    def seconds_for(self, name: str, phase: str) -> float:
        """The pair's seconds on this machine: its expected seconds corrected by the measured ratio."""
        pair = (name, phase)
        expected = self.started[pair] if pair in self.started else self.expected_s(pair)
        return expected * self.ratio(phase)

    def eta_s(self) -> float:
        """Seconds to the end: the running pairs' rest, the pending rows' corrected prices, the reserve."""
        rest = need_s(self.pending(), self.groups, self._flex, self._scale)
        return self._running_left_s() + rest + self.reserve_s

    def headline_budget_s(self) -> float | None:
        """The --budget that would hold every headline at its floor (with the seconds already spent, the reserve and
        the shared costs they need), when the first plan could not; None when it did."""
        if not any(r.headline for r in self.first_dropped.values()):
            return None
        heads = [r for r in self.rows if r.headline]
        return float(round(self.total_s - self.first_left_s + need_s(heads, self.groups, 0.0, lambda r: 1.0) + 1))

    def summary(self) -> dict[str, Any]:
        """For env.notes["budget"]: the plan as priced and what it dropped."""
        kept = [r for r in self.rows if r.name not in self.dropped]
        return {"total_s": self.total_s, "reserve_s": round(self.reserve_s, 1),
                "planned_rows": len(self.rows), "kept_rows": len(kept), "dropped_rows": len(self.dropped),
                "dropped_at_plan": len(self.first_dropped),
                "priced_floor_s": round(need_s(self.rows, self.groups, 0.0, lambda r: 1.0), 1),
                "priced_full_s": round(need_s(self.rows, self.groups, 1.0, lambda r: 1.0), 1),
                "planned_s": round(need_s(kept, self.groups, self.first.flex_of, lambda r: 1.0), 1),
                "flex": round(self.first.flex, 3), "flex_headline": round(self.first.flex_headline, 3),
                "headline_rows": sum(1 for r in self.rows if r.headline),
                "headlines_dropped_at_plan": sorted(r.name for r in self.first_dropped.values() if r.headline),
                "budget_for_headlines_s": self.headline_budget_s(),
                "dropped": {r.name: round(r.floor_s + sum(self.groups.get(g, 0.0) for g in r.groups), 1)
                            for r in self.dropped.values()}}


def planned(ctx, phases: list):
    """(rows, costs) per (model, phase): what progress counts and how the budget is spread."""
    from bench.model.flops import zoo_flops

    rows = {(m, p.name): int(p.planned_rows(m, ctx)) for m in ctx.models for p in phases}
    step_flops: dict = {}
    for m in ctx.models:
        try:
            forward, train = zoo_flops(m)
        except Exception:  # noqa: BLE001 - an uncountable model gets its phase's average cost
            forward = train = None
        infer_bs = ctx.infer_batch_sizes(m)
        for p in phases:
            if p.name in ("train", "scale", "tta"):  # a training step: forward + backward over the train batch
                step_flops[(m, p.name)] = train and train * ctx.train_batch_size(m)
            else:
                step_flops[(m, p.name)] = forward and forward * sum(infer_bs) / len(infer_bs)
    return rows, pair_costs(rows, step_flops)
