"""The headline questions (bench.schedule.headlines) and the rules the budget keeps for them, on fake prices and a
fake clock; H1 measured to a precision on stand-in rows; the training table's intervals and labels. Nothing here
times anything real."""
from __future__ import annotations

import contextlib

import pytest
import torch

from bench.context import BenchContext
from bench.phases.train import phase as train
from bench.phases.train import rounds
from bench.phases.train.derive import derive
from bench.phases.train.phase import RowPlan, TimedRow
from bench.records import TrainRecord
from bench.report.tables import h1_cell, rung_gain_cell
from bench.schedule.budget import TIER_CORE, TIER_LADDER, TIER_VARIANT, Budget, RowCost, fit
from bench.schedule.headlines import H1_PAIR, headline_of, headline_pairs, is_headline, mark_rows
from zoo import tune


def row(model, phase, label, floor, full=None, tier=TIER_CORE, **fields):
    return RowCost(model, phase, label, floor, floor if full is None else full, tier, (), fields)


def h1_rows(model: str, floor: float, full: float) -> list[RowCost]:
    plain = {"precision": "fp32", "channels_last": False, "compile": None}
    return [row(model, "train", name, floor, full, **plain, row=name) for name in H1_PAIR]


def marked(rows: list[RowCost]) -> list[RowCost]:
    return mark_rows(rows, {m: 64 for m in {r.model for r in rows}})


# ---------------------------------------------------------------------------------------------------------------
# which rows are headlines


def test_headlines_are_h1s_two_ends_h2s_default_backends_at_batch_1_and_the_recipe_batch_and_parity():
    plain = {"precision": "fp32", "channels_last": False, "compile": None}
    assert headline_of("m", "train", {"row": "fast", **plain}).question == "H1"
    assert headline_of("m", "train", {"row": "tutorial_loop", **plain}).bundle == \
        headline_of("m", "train", {"row": "fast", **plain}).bundle  # one ratio: kept or dropped together
    assert not is_headline("m", "train", {"row": "compute", **plain})
    assert not is_headline("m", "train", {"row": "fast", **plain, "channels_last": True})
    assert is_headline("m", "infer", {"backend": "onnxruntime-int8", "batch_size": 64}, recipe_batch=64)
    assert is_headline("m", "infer", {"backend": "eager", "batch_size": 1}, recipe_batch=64)
    assert not is_headline("m", "infer", {"backend": "eager", "batch_size": 8}, recipe_batch=64)
    assert not is_headline("m", "infer", {"backend": "eager", "batch_size": 1}, backends=["compile"])
    assert headline_of("m", "parity", {"backend": "onnxruntime"}).question == "H3"
    assert not is_headline("m", "scale", {"procs": 2})
    (base, answer), = headline_pairs("m")
    assert (base["row"], answer["row"]) == H1_PAIR


# ---------------------------------------------------------------------------------------------------------------
# the budget serves the questions


def finished(budget: Budget, priced_s: float, took_s: float) -> None:
    """A train pair of another model ran: priced ``priced_s``, it took ``took_s`` (the prices' correction)."""
    pair = ("x", "train")
    budget.started[pair], budget.spent[pair] = priced_s, took_s
    budget.done.add(pair)


def test_a_headline_priced_3x_too_high_is_shortened_not_dropped_and_the_secondary_rows_go_first():
    # alexnet_mnist's step priced 2.4x too high: its ladder ends went first while the bound stayed.
    heads = h1_rows("alex", 30.0, 90.0)  # priced 3x its true 10 s floor
    rest = [row("alex", "train", "compute", 20.0, 40.0, row="compute"),
            row("alex", "train", "no_host_read", 5.0, 10.0, TIER_LADDER, row="no_host_read"),
            row("alex", "infer", "openvino b=7", 8.0, 16.0, TIER_VARIANT, backend="openvino", batch_size=7)]
    rows = marked(heads + rest)
    got = fit(rows, {}, 70.0)
    assert {r.label for r in got.kept} >= set(H1_PAIR)  # kept, at a shorter size
    assert {r.label for r in got.dropped} == {"compute", "openvino b=7"}
    assert got.flex_headline == pytest.approx(5.0 / 120.0) and got.floor_s == 65.0  # shortened, the 5 s left to it
    # The price proves wrong: the first pair took a third of its price; the refit brings the secondary rows back.
    now = [0.0]
    budget = Budget(75.0, rows, {}, clock=lambda: now[0])
    assert "alex train compute" in budget.dropped and budget.keeps("alex", "train", "fast")
    finished(budget, 30.0, 10.0)  # measured / priced = 1/3
    budget.refit()
    assert not budget.dropped and budget.flex_headline == 1.0


def test_a_price_too_low_shortens_the_headline_to_its_floor_and_drops_secondary_rows_never_the_headline():
    rows = marked(h1_rows("m", 10.0, 40.0) + [row("m", "train", "compute", 10.0, 20.0, row="compute")])
    now = [0.0]
    budget = Budget(100.0, rows, {}, clock=lambda: now[0])
    assert not budget.dropped and budget.flex_headline == 1.0
    finished(budget, 10.0, 40.0)  # the machine is 4x slower than priced: 120 s of floors
    budget.refit()
    assert budget.keeps("m", "train", "fast") and budget.keeps("m", "train", "tutorial_loop")
    assert not budget.keeps("m", "train", "compute")  # the secondary row went ...
    assert budget.flex_headline < 1.0  # ... and the headline shrank toward its floor instead of going


def test_a_pair_is_never_split_and_a_budget_too_small_for_the_headlines_says_which_would_hold_them():
    rows = marked(h1_rows("a", 10.0, 20.0) + h1_rows("b", 25.0, 50.0) + [row("a", "train", "compute", 1.0)])
    got = fit(rows, {}, 45.0)  # room for a's pair (20 s) and one of b's ends (25 s): never one end alone
    assert {(r.model, r.label) for r in got.dropped} == {("b", "tutorial_loop"), ("b", "fast")}
    assert {(r.model, r.label) for r in got.kept} == {("a", "tutorial_loop"), ("a", "fast"), ("a", "compute")}
    now = [0.0]
    budget = Budget(45.0, rows, {}, clock=lambda: now[0])
    assert budget.headline_budget_s() == pytest.approx(70.0 + 1)  # every headline floor, +1 s for rounding
    assert budget.summary()["headlines_dropped_at_plan"] == ["b train fast", "b train tutorial_loop"]
    assert Budget(200.0, rows, {}, clock=lambda: now[0]).headline_budget_s() is None


def test_unused_seconds_go_back_to_the_headlines_first():
    rows = marked(h1_rows("m", 10.0, 30.0) + [row("m", "train", "compute", 10.0, 50.0, row="compute")])
    got = fit(rows, {}, 60.0)  # floors 30 s; 30 s of room: the headlines' 40 s of flex first
    assert got.flex_headline == pytest.approx(30.0 / 40.0) and got.flex == 0.0
    got = fit(rows, {}, 90.0)  # 60 s of room: the headlines full, the rest to the secondary row
    assert got.flex_headline == 1.0 and got.flex == pytest.approx(20.0 / 40.0)


# ---------------------------------------------------------------------------------------------------------------
# H1 to a precision


class _Row:
    """A stand-in timed row: each window appends the next rate and advances the fake clock by ``window_s``."""

    def __init__(self, rates, clock, window_s=1.0):
        self.source, self.clock, self.window_s = iter(rates), clock, window_s
        self.rates: list[float] = []
        self.error = None

    def window(self):
        self.rates.append(next(self.source))
        self.clock[0] += self.window_s


def test_the_precision_loop_stops_once_the_interval_is_narrow_enough():
    clock = [0.0]
    base = _Row([100.0 + (i % 3) for i in range(1000)], clock)
    fast = _Row([200.0 + (i % 3) for i in range(1000)], clock)
    got = rounds.measure_to_precision(base, fast, lambda r: r.window(), target_pct=5.0, budget_s=500.0,
                                      clock=lambda: clock[0])
    assert got.met and got.reached_pct <= 5.0 and got.ratio == pytest.approx(2.0, rel=0.02)
    assert got.lo <= got.ratio <= got.hi
    assert len(fast.rates) == rounds.MIN_RATE_WINDOWS and clock[0] < 10  # stopped at once: no seconds wasted


def test_the_precision_loop_stops_when_its_share_is_spent_and_says_the_target_was_not_met():
    clock = [0.0]
    noisy = [50.0, 150.0, 100.0, 30.0, 170.0] * 200
    base, fast = _Row(noisy, clock), _Row(noisy[1:], clock)
    got = rounds.measure_to_precision(base, fast, lambda r: r.window(), target_pct=1.0, budget_s=12.0,
                                      clock=lambda: clock[0])
    assert not got.met and got.reached_pct > 1.0 and got.target_pct == 1.0
    assert clock[0] <= 12.0 and got.rounds == 6  # 2 s a round: the round that would outlast 12 s never starts


def test_h1_gets_its_share_after_the_round_robin_and_the_fast_record_says_the_precision(monkeypatch):
    clock = [0.0]
    ctx = BenchContext(torch.device("cpu"), quick=True, synthetic=True, checkpoints=None)
    heard: list[float | None] = []

    def fake_rows(rows, sync, *, quick, budget_s=None, say=None):
        heard.append(budget_s)
        for r in rows:
            r.rates += [10.0, 11.0, 10.5]

    monkeypatch.setattr(rounds, "time_rows", fake_rows)
    monkeypatch.setattr(rounds.timing, "clock", lambda: clock[0])
    def step() -> int:
        clock[0] += 0.1
        return 1

    rows = [TimedRow(RowPlan(n), step, contextlib.ExitStack()) for n in ("tutorial_loop", "fast", "compute")]
    answer = rounds.time_all(rows, ctx, 20.0)
    assert heard == [pytest.approx((1 - rounds.H1_SHARE) * 20.0)]
    assert answer is not None and answer.met and answer.target_pct == ctx.precision_pct
    assert answer.rounds > 0 and len(rows[1].rates) == 3 + answer.rounds and len(rows[2].rates) == 3
    assert clock[0] <= 20.0
    assert rounds.time_all(rows[2:], ctx, 20.0) is None and heard[-1] == 20.0  # no pair: the whole budget


# ---------------------------------------------------------------------------------------------------------------
# what the training table says


def _rec(row_name, rates, **kw) -> TrainRecord:
    rates = [float(r) for r in rates]
    return TrainRecord(model="m", device="cpu", row=row_name, batch_size=8, window_rates=rates,
                       samples_per_s=sorted(rates)[len(rates) // 2], windows=len(rates), **kw)


def test_a_rung_gain_whose_interval_holds_one_prints_no_difference_established():
    tut = _rec("tutorial_loop", [10, 14, 9, 13, 11])
    noisy = _rec("fused_optimizer", [12, 9, 15, 10, 13])
    clear = _rec("no_host_read", [40, 41, 39, 40, 42])
    derive([tut, noisy, clear], None, {})
    assert noisy.rung_gain_lo < 1.0 < noisy.rung_gain_hi
    assert rung_gain_cell(noisy).endswith("(no difference established)")
    assert "no difference" not in rung_gain_cell(clear) and rung_gain_cell(clear).startswith(
        f"{clear.rung_gain:.2f}x [")
    assert h1_cell(clear).startswith(f"{clear.speedup_vs_tutorial_loop:.2f}x [")


def test_a_fast_rung_the_tuner_left_at_the_default_is_one_row_and_a_slower_choice_says_so():
    untuned = _rec("fast_untuned", [100, 101, 99, 100, 102])
    kept = _rec("fast", [93, 94, 92, 93, 95], tuned={"channels_last": False, "optimizer_impl": "fused", "compile": None})
    derive([untuned, kept], None, {})
    assert kept.same_config_as == "fast_untuned" and kept.rung_gain is None
    assert rung_gain_cell(kept) == "= fast_untuned (the tuner kept the default)"
    slower = _rec("fast", [93, 94, 92, 93, 95], tuned={"channels_last": True, "optimizer_impl": "fused"})
    derive([untuned, slower], None, {})
    assert "the tuner's choice measured slower than the default" in rung_gain_cell(slower)


def test_the_compute_row_that_runs_the_tuners_choice_records_what_ran(monkeypatch):
    ctx = BenchContext(torch.device("cpu"), quick=True, synthetic=True, checkpoints=None)
    builder = train.RowBuilder("mlp", ctx, tune_s=0.1)
    builder.fast_choice = tune.TuneChoice(channels_last=True, optimizer_impl="foreach")
    monkeypatch.setattr(builder, "tuned_step", lambda choice=None: (lambda: 8, choice.to_dict()))
    built = builder.build(RowPlan("compute"))
    built.rates = [1.0, 2.0, 3.0]
    rec = train.to_record("mlp", ctx, built)
    assert rec.channels_last is True and rec.tuned["optimizer_impl"] == "foreach"  # was channels_last=False
    plain = builder.build(RowPlan("compute", precision="bf16"))  # a variant runs what its own fields say
    assert plain.plan.channels_last is False and plain.tuned is None
    for r in (built, plain):
        r.resources.close()


def test_a_variant_the_compute_row_already_ran_is_one_row_not_two(monkeypatch):
    """The tuner chose channels_last: the compute row ran it (its fields say so), so the channels_last variant,
    the same key, is not built and measured a second time."""
    built: list[RowPlan] = []

    class Builder:
        def __init__(self, name, ctx, **kw):
            self.ctx, self.template, self.loaders = ctx, torch.nn.Linear(1, 1), {}

        def build(self, plan):
            ran = RowPlan("compute", channels_last=True) if plan == RowPlan("compute") else plan
            built.append(ran)
            return TimedRow(ran, lambda: 8, contextlib.ExitStack())

    monkeypatch.setattr(train, "RowBuilder", Builder)
    monkeypatch.setattr(train, "steady_step", lambda row, sync: None)
    monkeypatch.setattr(train, "time_all", lambda timed, ctx, left_s: [r.rates.extend([8.0, 8.0, 8.0]) for r in timed]
                        and None)
    ctx = BenchContext(torch.device("cpu"), quick=True, synthetic=True, checkpoints=None,
                       train_variants=[{"channels_last": True}])
    session = train.ModelSession("mlp", torch.nn.Linear(1, 1))
    session.cache["train_flops_per_sample"] = 1.0
    records = train.TrainPhase().run(session, ctx)
    keys = [(r.row, r.channels_last) for r in records]
    assert keys.count(("compute", True)) == 1 and built.count(RowPlan("compute", channels_last=True)) == 1


def test_h1s_precision_is_stated_from_the_windows_as_derived_so_pooled_processes_restate_it():
    tut = _rec("tutorial_loop", [100, 101, 99, 100, 100, 101, 99])
    fast = _rec("fast", [200, 202, 198, 200, 201, 199, 200], target_pct=5.0)
    derive([tut, fast], None, {})
    assert fast.target_met and 0 < fast.reached_pct <= 5.0
    assert "target +-5% met" in h1_cell(fast)
    fast.window_rates += [60.0, 400.0, 90.0, 380.0, 70.0, 390.0, 80.0, 410.0]  # another process's (--repeat)
    derive([tut, fast], None, {})
    assert not fast.target_met and fast.reached_pct > 5.0 and "not met" in h1_cell(fast)


def test_a_rows_window_of_several_steps_is_warmed_first_and_a_one_step_window_is_not():
    """Rows alternate round-robin: the switch from the row before (its model, data, optimizer state) is paid in one
    untimed step, as the tuner's probe does; a one-step window (a multi-second step) is not doubled for it."""
    calls = {"n": 0}

    def step() -> int:
        calls["n"] += 1
        return 4

    row = TimedRow(RowPlan("fast"), step, contextlib.ExitStack())
    row.steps_per_window = 3
    rounds._one_window(row, lambda: None)
    assert calls["n"] == 4 and row.samples == 12  # the warm step's samples are not counted
    row.steps_per_window, calls["n"] = 1, 0
    rounds._one_window(row, lambda: None)
    assert calls["n"] == 1


def test_the_plan_printed_at_the_start_names_the_budget_that_would_hold_every_headline():
    from bench.schedule.pricing import headline_lines

    rows = marked(h1_rows("a", 10.0, 20.0) + h1_rows("b", 25.0, 50.0))
    line, = headline_lines(Budget(45.0, rows, {}, clock=lambda: 0.0))
    assert "--budget 45 s cannot hold every headline at its floor" in line and "--budget 71 would hold them" in line
    line, = headline_lines(Budget(500.0, rows, {}, clock=lambda: 0.0))
    assert line.startswith("  headlines: all 4 headline rows planned first") and "at 100%" in line
