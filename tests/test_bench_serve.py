"""The serve phase (bench.phases.serve.phase*): the dynamic batcher, the worker, the Server rate search, LoadGen's logs, the
AccuracyOnly scoring, the record schema and the skipped row. Fakes stand in for backends; no test asserts a time.
"""
from __future__ import annotations

import json
import os
import types

import numpy as np
import pytest
import torch

import bench.phases.serve.phase as serve
import zoo
from bench.backends.base import Backend
from bench.context import BenchContext, ModelSession
from bench.phases.serve import logs as serve_logs
from bench.phases.serve.rows import BackendServe, ServeInputs
from bench.phases.serve.search import CHECK_FACTOR, ServeProbe, check_rate, search_max_rate
from bench.phases.serve.settings import (
    MIN_DURATION_FLOOR_MS,
    MIN_SEARCH_PROBES,
    default_bound_ms,
    scenario_settings,
)
from bench.phases.serve.sut import BatchPolicy, DynamicBatcher, Worker, loadgen_missing
from bench.records import (
    PERCENTILE_MIN_CALLS,
    SERVE_SCENARIOS,
    RunEnv,
    ServeRecord,
)
from bench.report.files import results_payload
from bench.report.load import parse_results

CPU = torch.device("cpu")
needs_loadgen = pytest.mark.skipif(loadgen_missing() is not None, reason="mlperf_loadgen is not installed")


class Clock:
    """A fake clock: returns the queued times in turn (the last one forever) and counts its reads."""

    def __init__(self, *times: float):
        self.times, self.reads = list(times), 0

    def __call__(self) -> float:
        self.reads += 1
        return self.times.pop(0) if len(self.times) > 1 else self.times[0]


# --- the dynamic batcher ------------------------------------------------------------------------------------------

def test_batcher_cuts_the_queue_into_batches_of_at_most_max_batch_oldest_first():
    batcher = DynamicBatcher(BatchPolicy(max_batch=8))
    batcher.put(list(range(20)))
    batcher.close()
    batches = [batcher.next_batch() for _ in range(4)]
    assert batches[:3] == [list(range(8)), list(range(8, 16)), list(range(16, 20))]
    assert batches[3] is None  # closed and empty


def test_a_full_batch_goes_at_once_without_reading_the_clock_for_its_delay():
    clock = Clock(0.0)
    batcher = DynamicBatcher(BatchPolicy(max_batch=4, max_queue_delay_ms=10_000.0), clock=clock)
    batcher.put(["a", "b", "c", "d", "e"])
    reads = clock.reads
    assert batcher.next_batch() == ["a", "b", "c", "d"]
    assert clock.reads == reads  # full: no deadline was consulted, nothing waited


def test_a_partial_batch_goes_once_the_oldest_sample_has_waited_the_queue_delay():
    clock = Clock(0.0, 0.006)  # put at t=0; the batcher looks at t=6 ms, past the 5 ms delay
    batcher = DynamicBatcher(BatchPolicy(max_batch=8, max_queue_delay_ms=5.0), clock=clock)
    batcher.put([1, 2, 3])
    assert batcher.next_batch() == [1, 2, 3]


def test_batching_off_serves_one_sample_per_batch_and_says_off():
    policy = BatchPolicy(max_batch=1)
    batcher = DynamicBatcher(policy)
    batcher.put([1, 2])
    assert batcher.next_batch() == [1] and batcher.next_batch() == [2]
    assert policy.describe() == "off"
    assert BatchPolicy(32, 0.5).describe() == "max_batch=32 delay_ms=0.5"


def test_worker_answers_every_sample_with_its_own_logits_in_batches():
    inputs = torch.arange(10, dtype=torch.float32).reshape(10, 1)
    answered = {}

    def respond(batch, logits):
        for s, row in zip(batch, logits):
            answered[s.id] = row.copy()

    with Worker(lambda x: torch.cat([x, -x], 1), inputs, BatchPolicy(max_batch=4), respond) as worker:
        worker.batcher.put([types.SimpleNamespace(id=100 + i, index=i) for i in (3, 1, 4, 1, 5, 9)])
    assert {k: v.tolist() for k, v in answered.items()} == {
        100 + i: [float(i), -float(i)] for i in (3, 1, 4, 5, 9)}
    assert sum(worker.batch_sizes) == 6 and max(worker.batch_sizes) <= 4
    assert worker.error is None


def test_a_backend_that_raises_still_answers_and_the_error_is_kept():
    answered = []

    def broken(x):
        raise RuntimeError("kernel exploded")

    with Worker(broken, torch.zeros(4, 1), BatchPolicy(max_batch=2), lambda batch, _: answered.extend(batch)) as worker:
        worker.batcher.put([types.SimpleNamespace(id=i, index=i) for i in range(3)])
    assert len(answered) == 3  # LoadGen would otherwise wait forever
    assert "kernel exploded" in str(worker.error)


# --- the Server search --------------------------------------------------------------------------------------------

def fake_probe(capacity: float, seen: list):
    def probe(rate: float) -> ServeProbe:
        seen.append(rate)
        return ServeProbe(target_qps=rate, met_bound=rate <= capacity)
    return probe


@pytest.mark.parametrize("start", [30.0, 700.0, 5000.0])
def test_the_search_converges_on_a_fake_whose_capacity_is_known(start):
    seen: list = []
    result = search_max_rate(fake_probe(1000.0, seen), start, max_probes=12, tolerance=0.1)
    assert result.best is not None
    assert 1000.0 / 1.1 <= result.best.target_qps <= 1000.0
    assert result.failed_above is not None and 1000.0 < result.failed_above <= result.best.target_qps * 1.1
    assert [p.target_qps for p in result.probes] == seen  # every probe is kept, in order


def test_the_search_stops_at_its_probe_limit_and_reports_only_a_passing_probe():
    result = search_max_rate(fake_probe(1000.0, []), 10.0, max_probes=3)
    assert [p.target_qps for p in result.probes] == [10.0, 20.0, 40.0]
    assert result.best.target_qps == 40.0 and result.failed_above is None


def test_no_passing_rate_gives_no_answer_and_the_floor_stops_the_halving():
    result = search_max_rate(fake_probe(0.0, []), 100.0, max_probes=10, floor=20.0)
    assert result.best is None
    assert [p.target_qps for p in result.probes] == [100.0, 50.0, 25.0]
    assert check_rate(result) is None


def test_the_check_probe_is_one_and_a_half_times_the_answer():
    result = search_max_rate(fake_probe(1000.0, []), 600.0, max_probes=8)
    assert check_rate(result) == pytest.approx(result.best.target_qps * CHECK_FACTOR)
    with pytest.raises(ValueError):
        search_max_rate(fake_probe(1.0, []), 0.0)


# --- settings -----------------------------------------------------------------------------------------------------

def test_a_budget_cuts_durations_but_never_the_query_counts_and_says_shortened():
    full = scenario_settings("Server", 1.0, policy=BatchPolicy(32), threads=2, budget_s=None)
    cut = scenario_settings("Server", 0.0, policy=BatchPolicy(32), threads=2, budget_s=1.0)
    assert not full.shortened and cut.shortened and cut.min_duration_ms < full.min_duration_ms
    assert cut.min_duration_ms == MIN_DURATION_FLOOR_MS and cut.search_probes == MIN_SEARCH_PROBES < full.search_probes
    assert cut.min_query_count == full.min_query_count == PERCENTILE_MIN_CALLS[99]
    assert scenario_settings("SingleStream", 1.0, policy=BatchPolicy(1), threads=1,
                             budget_s=None).min_query_count == PERCENTILE_MIN_CALLS[90]
    bound, source = default_bound_ms(3.0)
    assert bound == 30.0 and "3 ms" in source
    assert default_bound_ms(0.01)[0] == 10.0  # the floor


# --- LoadGen's logs -----------------------------------------------------------------------------------------------

SUMMARY = """================================================
MLPerf Results Summary
================================================
Scenario : Server
Mode     : PerformanceOnly
Completed samples per second    : 282.74
Result is : INVALID
  Performance constraints satisfied : Yes
  Min duration satisfied : Yes
  Min queries satisfied : NO
  Early stopping satisfied: NO
Additional Stats
99.00 percentile latency (ns)   : 3399286
"""


def test_the_summary_gives_the_verdict_the_unmet_constraints_and_the_metric():
    s = serve_logs.parse_summary(SUMMARY)
    assert s.result == "INVALID" and s.unmet == ["min queries", "early stopping"]
    assert s.verdict() == "INVALID: unmet min queries, early stopping"
    assert s.met_latency is True and s.samples_per_s == 282.74 and s.p99_ns == 3399286
    offline = serve_logs.parse_summary("Samples per second: 104048\nResult is : VALID\n")
    assert offline.metric == "Samples per second" and offline.metric_value == 104048 and offline.verdict() == "VALID"


def test_a_query_lasts_until_its_last_sample_completes():
    lines = ['{"name":"Sample","cat":"default","ph":"b","pid":1,"id":0,"ts":1.0,"args":{"sample_seq":0,'
             '"query_seq":0,"sample_idx":5,"issue_start_ns":0,"complete_ns":3000}},',
             '{"name":"Sample","cat":"default","ph":"e", "pid":1,"id":0,"ts":4.0},',
             '{"name":"Sample","cat":"default","ph":"b","pid":1,"id":1,"ts":1.0,"args":{"sample_seq":1,'
             '"query_seq":0,"sample_idx":2,"issue_start_ns":0,"complete_ns":5000}},',
             '{"name":"LogDetail","ph":"X","args":{"key":""loadgen_version""}},',
             '{"name":"Sample","cat":"default","ph":"b","pid":1,"id":2,"ts":9.0,"args":{"sample_seq":2,'
             '"query_seq":1,"sample_idx":7,"issue_start_ns":10,"complete_ns":1000}},']
    assert serve_logs.query_latencies_ns(lines).tolist() == [5000.0, 1000.0]


def test_the_accuracy_log_decodes_back_into_the_logits_sent(tmp_path):
    rows = np.array([[1.5, -2.0, 0.25], [0.0, 3.0, -1.0]], dtype=np.float32)
    entries = [{"seq_id": i, "qsl_idx": 7 + i, "data": rows[i].tobytes().hex().upper()} for i in range(2)]
    path = tmp_path / "acc.json"
    path.write_text(json.dumps(entries))
    decoded = serve_logs.read_accuracy_log(str(path), classes=3)
    assert {k: v.tolist() for k, v in decoded.items()} == {7: rows[0].tolist(), 8: rows[1].tolist()}
    with pytest.raises(ValueError, match="4 expected"):
        serve_logs.read_accuracy_log(str(path), classes=4)


# --- the phase: rows, schema, skipped -----------------------------------------------------------------------------

@pytest.fixture
def ctx(tmp_path):
    return BenchContext(device=CPU, synthetic=True, checkpoints=None, out_dir=str(tmp_path), threads=1,
                        backends=["eager", "noop"])


@pytest.fixture(scope="module")
def mlp_session():
    torch.manual_seed(0)
    return ModelSession("mlp", zoo.get_model("mlp").eval())


def test_every_backend_plans_its_scenarios_server_twice_and_the_accuracy_row(ctx):
    keys = serve.row_keys(list(SERVE_SCENARIOS))
    assert [(k["scenario"], k["mode"], k["batching"] == "off") for k in keys] == [
        ("SingleStream", "PerformanceOnly", True), ("MultiStream", "PerformanceOnly", False),
        ("Server", "PerformanceOnly", False), ("Server", "PerformanceOnly", True),
        ("Offline", "PerformanceOnly", False), ("Offline", "AccuracyOnly", False)]
    assert serve.ServePhase().planned_rows("mlp", ctx) == 2 * 6
    ctx.serve_scenarios = ["Offline"]
    assert serve.ServePhase().planned_rows("mlp", ctx) == 2 * 2
    assert not serve.ServePhase.in_default and not serve.ServePhase.in_quick


def test_without_loadgen_every_row_is_skipped_with_the_install_command(ctx, mlp_session, monkeypatch):
    monkeypatch.setattr(serve, "loadgen_missing", lambda: 'mlperf_loadgen is not installed: pip install -e ".[loadgen]"')
    rows = serve.ServePhase().run(mlp_session, ctx)
    assert len(rows) == serve.ServePhase().planned_rows("mlp", ctx)
    assert {r.status for r in rows} == {"skipped"} and all('.[loadgen]' in r.reason for r in rows)
    assert {r.backend for r in rows} == {"eager", "noop"}


def test_a_serve_record_survives_results_json_with_its_key():
    rec = ServeRecord(model="mlp", device="cpu", backend="eager", scenario="Server", batching="off",
                      settings={"latency_bound_ms": 10.0, "min_duration_ms": 1000}, latencies_ms=[1.0, 2.5],
                      max_rate_qps=120.0, probes=[ServeProbe(target_qps=120.0, met_bound=True).to_dict()],
                      loadgen_result="INVALID: unmet early stopping")
    env, back = parse_results(json.dumps(results_payload(RunEnv(device="cpu"), [rec])), "results.json")
    assert back == [rec] and back[0].key() == ("mlp", "serve", "eager", "fp32", "Server", "PerformanceOnly", "off")
    assert ServeProbe.from_dict(back[0].probes[0]).met_bound is True


class FlipUnderBatching(Backend):
    """A fake backend whose predictions depend on the batch it is called with: agrees closed loop at batch 256
    (the reference batches), flips the argmax of every sample served in a smaller batch."""

    name = "eager"

    def bind(self, x):
        return lambda: x

    def predict(self, x):
        logits = torch.zeros(x.shape[0], 10)
        logits[:, 0 if x.shape[0] >= 256 else 1] = 1.0
        return logits


class Agrees(FlipUnderBatching):
    def predict(self, x):
        logits = torch.zeros(x.shape[0], 10)
        logits[:, 3] = 1.0
        return logits


def fake_inputs(n: int = 512) -> ServeInputs:
    inputs = torch.randn(n, 1, 28, 28)
    ref = types.SimpleNamespace(batches=lambda: iter(inputs.split(256)), labels=torch.arange(n) % 10)
    return ServeInputs(ref, inputs, bound_ms=10.0, bound_source="test", share_s=None)


@needs_loadgen
@pytest.mark.parametrize("cls, agrees", [(Agrees, True), (FlipUnderBatching, False)])
def test_accuracy_only_scores_what_loadgen_logged_and_fails_on_a_mismatch(cls, agrees, ctx, mlp_session):
    serving = BackendServe(cls(mlp_session, ctx), mlp_session, ctx, fake_inputs())
    key = serve.row_keys(["Offline"])[-1]
    row = serving.accuracy_row(key)
    assert row.agreement_samples == 512 and row.mode == "AccuracyOnly"
    assert row.accuracy == pytest.approx(0.1 if agrees else 0.1, abs=0.01)  # labels i % 10: one class in ten
    assert row.ok is agrees
    assert row.argmax_agreement == (1.0 if agrees else 0.0)
    if not agrees:
        assert "100% required" in row.reason
    assert (ctx.out_dir and row.loadgen_log_dir.startswith("loadgen/mlp/eager-fp32/Accuracy"))


# --- compare, the CLI, the tables ---------------------------------------------------------------------------------

def server_row(rate: float | None, failed_above: float | None, **kw) -> ServeRecord:
    probes = [ServeProbe(target_qps=rate, met_bound=True).to_dict()] if rate else []
    if failed_above:
        probes.append(ServeProbe(target_qps=failed_above, met_bound=False).to_dict())
    return ServeRecord(model="mlp", device="cpu", backend="eager", scenario="Server", batching="off",
                       max_rate_qps=rate, probes=probes, **kw)


def test_compare_divides_max_rates_with_the_searches_brackets_as_the_interval():
    from bench.analysis.compare import judge

    change = judge(server_row(1000.0, 1100.0), server_row(500.0, 550.0), 0.05, None)
    assert change.slowdown == pytest.approx(2.0)
    assert (change.lo, change.hi) == (pytest.approx(1000 / 550), pytest.approx(1100 / 500))
    # one search per run: the bracket is its resolution, not its run-to-run noise (serve is not repeated), so no
    # verdict, however far apart (bench.analysis.verdicts: one-process rows are judged only with a noise profile)
    assert change.verdict == "no verdict"
    assert judge(server_row(None, 10.0), server_row(500.0, None), 0.05, None).verdict == "inconclusive"


def test_compare_reads_serve_latencies_as_raw_samples():
    from bench.analysis.compare import judge

    a = ServeRecord(model="mlp", backend="eager", scenario="SingleStream", latencies_ms=[1.0] * 50)
    b = ServeRecord(model="mlp", backend="eager", scenario="SingleStream", latencies_ms=[2.0] * 50)
    assert judge(a, b, 0.05, None).slowdown == pytest.approx(2.0)
    accuracy = ServeRecord(model="mlp", backend="eager", scenario="Offline", mode="AccuracyOnly", accuracy=0.9)
    assert judge(accuracy, accuracy, 0.05, None) is None  # no latency to compare


@pytest.mark.parametrize("argv, message", [
    (["--scenarios", "Server,Batch"], "unknown scenario 'Batch'"),
    (["--server-latency-ms", "0"], "--server-latency-ms must be a positive number"),
])
def test_bad_serve_flags_are_one_error_line(argv, message, tmp_path, capsys):
    from bench.run import main

    code = main(["--device", "cpu", "--models", "mlp", "--phases", "serve", "--out", str(tmp_path), *argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error:") and message in err[0]


def test_scenarios_and_bound_reach_the_context(tmp_path):
    from bench.phases import PHASES
    from bench.plan import make_context
    from bench.run import build_parser

    args = build_parser().parse_args(["--device", "cpu", "--phases", "serve", "--scenarios", "Offline,SingleStream",
                                      "--server-latency-ms", "12.5", "--out", str(tmp_path)])
    ctx, _ = make_context(args, PHASES)
    assert ctx.serve_scenarios == ["SingleStream", "Offline"] and ctx.server_latency_ms == 12.5
    assert ctx.phases == ["serve"]


def test_the_serve_table_shows_each_scenario_the_batching_gain_and_the_checks():
    from bench.report.serve_tables import serve_section

    settings = {"latency_bound_ms": 10.0, "latency_bound_source": "test"}
    probes_on = [ServeProbe(400.0, True, p99_ms=5.0, loadgen_p99_ms=5.1).to_dict(),
                 ServeProbe(600.0, False, p99_ms=30.0, loadgen_p99_ms=31.0, role="check").to_dict()]
    rows = [ServeRecord(model="mlp", backend="eager", scenario="SingleStream", batching="off", p90_ms=0.5,
                        latencies_ms=[0.4] * 200, loadgen_result="VALID"),
            ServeRecord(model="mlp", backend="eager", scenario="Server", batching="max_batch=32 delay_ms=0",
                        max_rate_qps=400.0, probes=probes_on, settings=settings),
            server_row(100.0, 120.0, settings=settings),
            ServeRecord(model="mlp", backend="eager", scenario="Offline", batching="max_batch=64 delay_ms=0",
                        samples_per_s=900.0),
            ServeRecord(model="mlp", backend="eager", scenario="Offline", mode="AccuracyOnly", accuracy=0.5,
                        closed_loop_accuracy=0.5, argmax_agreement=1.0, agreement_samples=512)]
    text = "\n".join(serve_section(rows))
    assert "| eager" in text and "0.500 (VALID)" in text and "4.00x" in text  # 400 / 100
    assert "400 (< 600)" in text and "100 (< 120)" in text and "900" in text
    assert "50.00% (closed loop 50.00%)" in text and "100.00% of 512" in text
    assert "over the bound" in text and "Offline 900/s >= the Server rate" in text


def test_the_knee_plot_draws_every_probe_of_each_server_row_and_the_bound():
    from bench.report import plots

    probes = [ServeProbe(100.0, True, loadgen_p99_ms=2.0, n_queries=1000).to_dict(),
              ServeProbe(200.0, False, loadgen_p99_ms=30.0, n_queries=400).to_dict(),
              ServeProbe(150.0, True, loadgen_p99_ms=4.0, n_queries=1000).to_dict()]
    row = server_row(150.0, 200.0, settings={"latency_bound_ms": 10.0})
    row.probes = probes
    fig = plots.figures([row])[plots.SERVE_KNEE_PNG]
    ax = fig.axes[0]
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert lines["eager, batching off"].get_xdata().tolist() == [100.0, 150.0, 200.0]
    assert list(lines["p99 bound 10 ms"].get_ydata()) == [10.0, 10.0]
    assert [tuple(p) for p in ax.collections[0].get_offsets().tolist()] == [(200.0, 30.0)]  # hollow: 400 queries


@needs_loadgen
@pytest.mark.slow
def test_the_phase_runs_every_scenario_under_loadgen_end_to_end(ctx, mlp_session, monkeypatch):
    import bench.phases.serve.settings as serve_settings

    monkeypatch.setattr(serve_settings, "DURATION_MS", dict.fromkeys(SERVE_SCENARIOS, 250))
    ctx.backends, ctx.server_latency_ms = ["noop"], 50.0
    session = ModelSession("mlp", mlp_session.model)
    rows = serve.ServePhase().run(session, ctx)
    assert [(r.scenario, r.mode, r.batching) for r in rows] == [
        (k["scenario"], k["mode"], k["batching"]) for k in serve.row_keys(list(SERVE_SCENARIOS))]
    assert all(r.ok for r in rows), [r.reason for r in rows if not r.ok]
    for r in rows[:-1]:
        assert r.latencies_ms and r.loadgen_result.split(":")[0] in ("VALID", "INVALID")
        assert os.path.exists(os.path.join(ctx.out_dir, r.loadgen_log_dir, "mlperf_log_summary.txt"))
    server = [r for r in rows if r.scenario == "Server"]
    assert all(r.probes and r.settings["latency_bound_ms"] == 50.0 for r in server)
    assert {p["role"] for r in server for p in r.probes if r.max_rate_qps} <= {"search", "check"}
    assert rows[0].mean_batch == 1.0 and rows[1].mean_batch == 8.0  # SingleStream: 1 sample; MultiStream: 8
    assert rows[-1].argmax_agreement == 1.0 and rows[-1].agreement_samples == rows[-1].settings["performance_count"]
