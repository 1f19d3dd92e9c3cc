"""The serve phase under the run's budget: every planned row priced, a tight budget drops serve rows in the written
order, a dropped row is not run, and the kept rows' tests are sized to the share the phase was given. Fake prices, a
fake clock and a fake LoadGen (it stops a test the way LoadGen does, from the settings it is handed); no test reads
a real clock."""
from __future__ import annotations

import types

import numpy as np
import pytest
import torch

import bench.phases.serve.phase as serve
import bench.phases.serve.rows as serve_rows
import zoo
from bench.backends.base import Backend
from bench.context import BenchContext, ModelSession
from bench.measure import timing
from bench.phases import PHASES
from bench.phases.serve import logs as serve_logs
from bench.phases.serve.search import MAX_PROBES
from bench.phases.serve.settings import MIN_DURATION_FLOOR_MS, MIN_SEARCH_PROBES
from bench.phases.serve.sut import LoadGenRun
from bench.records import SERVE_SCENARIOS
from bench.schedule import rows as schedule_rows
from bench.schedule import serve_cost
from bench.schedule.budget import TIER_BACKEND, TIER_CORE, TIER_DUP_BATCH, Budget, drop_order, fit, need_s
from bench.schedule.pricing import ModelPrices, Prices

CPU = torch.device("cpu")
BACKENDS = ["eager", "onnxruntime", "noop"]


def fake_prices(models, call_s=0.002):
    return Prices(models={m: ModelPrices(build_s=0.5, forward_s={1: call_s, 64: call_s * 20}, sample_s=call_s / 3)
                          for m in models})


def serve_context(models=("mlp", "lenet"), **kw) -> BenchContext:
    return BenchContext(device=CPU, models=list(models), phases=["infer", "serve"], backends=list(BACKENDS),
                        batch_sizes=[1], threads=2, synthetic=True, budget_s=120.0, server_latency_ms=50.0, **kw)


def test_every_planned_serve_row_is_priced_with_a_floor_below_its_full_size():
    ctx = serve_context()
    phases = [PHASES[p] for p in ctx.phases]
    rows, groups, _ = schedule_rows.priced_rows(ctx, phases, fake_prices(ctx.models))
    for m in ctx.models:
        mine = [r for r in rows if r.pair == (m, "serve")]
        assert len(mine) == PHASES["serve"].planned_rows(m, ctx) == len(BACKENDS) * 6
        assert len({r.label for r in mine}) == len(mine)  # the plan knows each row by its label
        assert all(0 < r.floor_s <= r.full_s for r in mine)
        assert all(r.floor_s < r.full_s for r in mine if r.fields["mode"] == "PerformanceOnly")  # tests shorten
        assert all(f"{m} serve inputs" in r.groups and f"{m} build" in r.groups for r in mine)
        assert {r.fields["scenario"] for r in mine} == set(SERVE_SCENARIOS)
    assert groups["mlp serve onnxruntime"] > 0 and "mlp onnx export" in groups


def test_a_tight_budget_drops_serve_rows_in_the_written_order():
    ctx = serve_context(models=("mlp",))
    phases = [PHASES[p] for p in ctx.phases]
    rows, groups, _ = schedule_rows.priced_rows(ctx, phases, fake_prices(ctx.models))
    serve_rows_ = [r for r in rows if r.phase == "serve"]
    tiers = {r.label: r.tier for r in serve_rows_}
    assert tiers["onnxruntime Server batching off"] == tiers["noop MultiStream"] == TIER_DUP_BATCH
    assert tiers["onnxruntime Server"] == tiers["noop Offline"] == tiers["onnxruntime AccuracyOnly"] == TIER_BACKEND
    assert {t for label, t in tiers.items() if label.startswith("eager ")} == {TIER_CORE}
    order = [r.label for r in drop_order(serve_rows_, groups)]
    eager_at = [i for i, label in enumerate(order) if label.startswith("eager ")]
    assert max(i for i, label in enumerate(order) if not label.startswith("eager ")) < min(eager_at)
    for sel in ("onnxruntime", "noop"):  # a backend's other batchings go before its own other rows
        mine = [label for label in order if label.startswith(sel + " ")]
        assert set(mine[:2]) == {f"{sel} MultiStream", f"{sel} Server batching off"}
    infer_row = next(r for r in rows if r.phase == "infer" and r.tier == TIER_BACKEND)
    serve_row = next(r for r in serve_rows_ if r.label == "onnxruntime Server")
    whole = drop_order([infer_row, serve_row], groups)
    assert whole[0] is serve_row  # seconds of steady load go before a closed-loop row of the same tier
    available = need_s(rows, groups, 0.0, lambda r: 1.0) * 0.6
    got = fit(rows, groups, available)
    assert got.dropped and got.floor_s <= available
    assert not any(r.label.startswith("eager ") and r.phase == "serve" for r in got.dropped)


def test_a_dropped_serve_row_is_not_run_and_is_a_skipped_row_with_its_command(monkeypatch, tmp_path):
    ctx = serve_context(models=("mlp",))
    ctx.out_dir = str(tmp_path)
    phases = [PHASES[p] for p in ctx.phases]
    rows, groups, _ = schedule_rows.priced_rows(ctx, phases, fake_prices(ctx.models))
    serve_only = [r for r in rows if r.phase == "serve"]
    # Room for the eager rows' floors only: every onnxruntime and noop serve row goes (the infer rows too).
    eager = [r for r in serve_only if r.label.startswith("eager ")]
    ctx.budget = Budget(need_s(eager, groups, 0.0, lambda r: 1.0) + 0.1, serve_only, groups, elapsed=lambda: 0.0,
                        clock=lambda: 0.0)
    dropped = ctx.budget.dropped_in(("mlp", "serve"))
    assert {r.fields["backend"] for r in dropped} == {"onnxruntime", "noop"}
    monkeypatch.setattr(serve, "loadgen_missing", lambda: "mlperf_loadgen is not installed")
    torch.manual_seed(0)
    session = ModelSession("mlp", zoo.get_model("mlp").eval())
    ran = serve.ServePhase().run(session, ctx)
    assert {r.backend for r in ran} == {"eager"} and len(ran) == 6  # the dropped backends were not even built
    skips = schedule_rows.budget_skips(ctx, PHASES["serve"], dropped)
    rec = next(r for r in skips if r.backend == "onnxruntime" and r.scenario == "Server" and r.batching == "off")
    assert rec.status == "skipped" and rec.reason.startswith("budget: left out to fit --budget")
    assert "--phases serve --backends onnxruntime --scenarios Server" in rec.reason
    assert {r.key() for r in ran} | {r.key() for r in skips} == {
        (("mlp", "serve") + (b, "fp32", k["scenario"], k["mode"], k["batching"]))
        for b in ("eager", "onnxruntime", "noop") for k in serve.row_keys(list(SERVE_SCENARIOS))}


# --- the phase keeps to its share: a fake clock, a fake LoadGen, a fake backend of known service time ---------------

class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Known(Backend):
    """A fake backend: the same logits for every sample."""

    name = "eager"

    def bind(self, x):
        return lambda: x

    def predict(self, x):
        logits = torch.zeros(x.shape[0], 10)
        logits[:, 3] = 1.0
        return logits


B1_S, BATCH_S = 0.004, 0.02  # the fake backend's service times (batch 1, batch 64); capacity ~1,400 samples/s


def fake_loadgen(clock: FakeClock, tests: list, owners: list):
    """BackendServe.test without LoadGen: the clock advances by how long LoadGen would run the test it is handed
    (until min duration and min queries, never past max duration; Offline: its one query at the backend's rate)."""
    capacity = 64 / BATCH_S

    def test(self, settings, *parts):
        d, cap = settings.min_duration_ms / 1e3, settings.max_duration_ms / 1e3
        if settings.mode == "AccuracyOnly":
            seconds, n = settings.performance_count / capacity, settings.performance_count
        elif settings.scenario == "Offline":
            n = int(1.1 * settings.target_qps * d)
            seconds = n / capacity
        elif settings.scenario == "Server":
            seconds = min(cap, max(d, settings.min_query_count / settings.target_qps))
            n = int(seconds * settings.target_qps)
        else:
            per = B1_S if settings.samples_per_query == 1 else BATCH_S * settings.samples_per_query / 64
            seconds = min(cap, max(d, settings.min_query_count * per))
            n = int(seconds / per)
        clock.now += seconds
        tests.append((settings, seconds))
        owners.append(self.backend.name)
        met = settings.scenario != "Server" or settings.target_qps <= 0.8 * capacity
        summary = serve_logs.Summary(result="VALID", samples_per_s=n / seconds,
                                     values={"Performance constraints satisfied": "Yes" if met else "NO"})
        responses = {i: np.eye(10, dtype=np.float32)[3] for i in range(settings.performance_count)} \
            if settings.mode == "AccuracyOnly" else None
        return LoadGenRun(summary, np.full(max(n, 1), 1e6), [1], responses, seconds), "loadgen/fake"
    return test


@pytest.fixture
def fake_serve(monkeypatch):
    clock, tests, owners = FakeClock(), [], []
    monkeypatch.setattr(timing, "clock", clock)
    monkeypatch.setattr(serve_rows.BackendServe, "test", fake_loadgen(clock, tests, owners))
    monkeypatch.setattr(serve_rows.Estimate, "median_s", staticmethod(lambda predict, x, calls: B1_S if x.shape[0] == 1
                                                                       else BATCH_S * x.shape[0] / 64))
    return clock, tests, owners


def serve_backend(share_s, tmp_path):
    ctx = BenchContext(device=CPU, synthetic=True, checkpoints=None, out_dir=str(tmp_path), threads=1)
    session = ModelSession("lenet", torch.nn.Identity())
    inputs = torch.zeros(512, 1, 28, 28)
    ref = types.SimpleNamespace(batches=lambda: iter(inputs.split(256)), labels=torch.arange(512) % 10)
    data = serve_rows.ServeInputs(ref, inputs, bound_ms=50.0, bound_source="test", share_s=share_s)
    return serve_rows.BackendServe(Known(session, ctx), session, ctx, data)


@pytest.mark.parametrize("share_s", [15.0, 30.0])
def test_a_backends_tests_are_sized_to_the_share_it_was_given(share_s, fake_serve, tmp_path):
    clock, tests, owners = fake_serve
    keys = serve.row_keys(list(SERVE_SCENARIOS))
    rows = serve_backend(share_s, tmp_path).rows(keys)
    assert all(r.ok for r in rows), [r.reason for r in rows if not r.ok]
    times = serve_cost.ServiceTimes(B1_S, BATCH_S)
    assert serve_cost.rows_s(keys, times, 0.0, 512) < share_s < serve_cost.rows_s(keys, times, 1.0, 512)
    assert clock.now <= share_s  # the floors fit, the defaults do not: the tests were cut to the share
    assert any(s.shortened for s, _ in tests)  # it had to cut, and the rows say so
    server = [r for r in rows if r.scenario == "Server"]
    assert all(MIN_SEARCH_PROBES <= len([p for p in r.probes if p["role"] == "search"]) <= MAX_PROBES for r in server)
    assert all(r.settings["budget_s"] is not None for r in rows)


def test_without_a_budget_every_test_runs_its_defaults(fake_serve, tmp_path):
    clock, tests, owners = fake_serve
    rows = serve_backend(None, tmp_path).rows(serve.row_keys(list(SERVE_SCENARIOS)))
    assert all(r.ok for r in rows)
    assert not any(s.shortened for s, _ in tests)
    keys = serve.row_keys(list(SERVE_SCENARIOS))
    generous = serve_cost.rows_s(keys, serve_cost.ServiceTimes(B1_S, BATCH_S), 1.0, 512) + 1.0
    clock.now, tests[:] = 0.0, []
    serve_backend(generous, tmp_path).rows(keys)
    assert not any(s.shortened for s, _ in tests)  # a share that holds the defaults cuts nothing


def test_a_share_below_the_floors_runs_the_floors_and_never_cuts_the_query_counts(fake_serve, tmp_path):
    clock, tests, owners = fake_serve
    rows = serve_backend(0.5, tmp_path).rows(serve.row_keys(list(SERVE_SCENARIOS)))
    assert all(r.ok for r in rows)
    perf = [s for s, _ in tests if s.mode == "PerformanceOnly"]
    assert all(s.min_duration_ms == MIN_DURATION_FLOOR_MS and s.shortened for s in perf)
    assert all(s.min_query_count == (100 if s.scenario == "SingleStream" else 1 if s.scenario == "Offline" else 1000)
               for s in perf)


def test_the_cost_model_follows_loadgen_stopping_rules():
    t = serve_cost.ServiceTimes(0.004, 0.02)
    key = {"scenario": "MultiStream", "mode": "PerformanceOnly", "batching": "max_batch=8 delay_ms=0"}
    # 1,000 queries of ~6 ms outlast 4 x the floor's 250 ms: the max duration stops the test, at either flex
    assert serve_cost.key_s(key, t, 0.0, 512) < serve_cost.key_s(key, t, 1.0, 512)
    single = {"scenario": "SingleStream", "mode": "PerformanceOnly", "batching": "off"}
    fast = serve_cost.ServiceTimes(1e-5, 1e-4)
    assert serve_cost.key_s(single, fast, 1.0, 512) == pytest.approx(
        serve_cost.TEST_OVERHEAD_S + 1.5 + 1.5 / fast.query_s(1) * serve_cost.TRACE_SAMPLE_S)
    assert serve_cost.fit_flex(lambda f: 10 + 10 * f, 15.0) == pytest.approx(0.5, abs=1e-4)
    assert serve_cost.fit_flex(lambda f: 10 + 10 * f, 5.0) == 0.0
    assert serve_cost.fit_flex(lambda f: 10 + 10 * f, None) == 1.0


class PairBudget:
    """The run's budget as the phase sees it: this pair's seconds, every row kept."""

    def __init__(self, seconds: float):
        self.seconds = seconds

    def seconds_for(self, name, phase):
        return self.seconds

    def keeps(self, model, phase, label):
        return True


def test_the_phase_splits_its_seconds_between_backends_and_keeps_within_them(fake_serve, monkeypatch, tmp_path):
    clock, tests, owners = fake_serve
    inputs = torch.zeros(512, 1, 28, 28)
    ref = types.SimpleNamespace(batches=lambda: iter(inputs.split(256)), labels=torch.arange(512) % 10)
    monkeypatch.setattr(serve.accuracy, "reference", lambda session, ctx: ref)
    monkeypatch.setattr(serve, "BACKENDS", {"eager": Known, "noop": type("KnownToo", (Known,), {"name": "noop"})})
    ctx = BenchContext(device=CPU, synthetic=True, checkpoints=None, out_dir=str(tmp_path), threads=1,
                       backends=["eager", "noop"], server_latency_ms=50.0, prices=fake_prices(["lenet"]))
    ctx.budget = PairBudget(30.0)
    rows = serve.ServePhase().run(ModelSession("lenet", torch.nn.Identity()), ctx)
    assert len(rows) == 12 and all(r.ok for r in rows), [r.reason for r in rows if not r.ok]
    assert clock.now <= 30.0 and any(s.shortened for s, _ in tests)
    first = {r.backend: r.settings["budget_s"] for r in rows if r.scenario == "SingleStream"}
    assert 0 < first["eager"] <= 15.0 + 1e-9  # half of the pair's seconds (both backends priced alike)
    assert owners == sorted(owners)  # eager's tests, then noop's
    eager_s = sum(seconds for (_, seconds), owner in zip(tests, owners) if owner == "eager")
    assert first["noop"] <= 30.0 - eager_s + 1e-9  # the second backend gets what the first one left
