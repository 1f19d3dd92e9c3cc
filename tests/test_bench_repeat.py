"""bench.runner.repeat: --repeat N runs N processes (here in this process, through a launch seam, on fake phases), each on
its share of the budget, models reversed every second process, one-off phases once; their rows are merged by key
with samples_per_repeat, summary fields recomputed over every sample, a row that failed in any process stays failed
and names it, and the calibration probes are merged like rows."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
from helpers import run_main

from bench import run
from bench.context import BenchContext
from bench.phases.base import Phase
from bench.records import InferRecord, ModelRecord, ParityRecord, RunEnv, TrainRecord, not_ok
from bench.runner import repeat

CALLS: list[list[str]] = []


class FakeInfer(Phase):
    """Per process k (counted in CALLS), eager takes 1 + k ms a call and onnxruntime half of it."""

    name, record_type = "infer", InferRecord

    def planned_rows(self, name, ctx):
        return 2

    def run(self, session, ctx):
        k = len(CALLS) - 1
        if session.name == "lenet" and k == 1 and os.environ.get("FAIL_SECOND"):
            raise RuntimeError("boom")
        return [InferRecord(model=session.name, device="cpu", backend=b, batch_size=1, n_calls=4,
                            latencies_ms=[(1.0 + k) * f] * 4, p50_ms=(1.0 + k) * f) for b, f in
                (("eager", 1.0), ("onnxruntime", 0.5))]

    def failed(self, session, ctx, exc):
        return [not_ok(InferRecord, session.name, "cpu", exc, backend=b, batch_size=1)
                for b in ("eager", "onnxruntime")]


class FakeParity(Phase):
    name, record_type = "parity", ParityRecord

    def planned_rows(self, name, ctx):
        return 1

    def run(self, session, ctx):
        return [ParityRecord(model=session.name, device="cpu", parity_ok=True)]


PHASES = {"infer": FakeInfer(), "parity": FakeParity()}


def probe(ctx, env):
    env.calibration = {"method": "test", "probes": {"matmul": {"samples_ms": [float(len(CALLS))] * 3}}}


def launch(argv):
    CALLS.append(argv)
    return run_main(argv, phases=PHASES, probe=probe)


@pytest.fixture(autouse=True)
def _seam(monkeypatch):
    CALLS.clear()
    monkeypatch.setattr(repeat, "launch_process", launch)
    monkeypatch.delenv("FAIL_SECOND", raising=False)


def bench(tmp_path, *argv, repeat_n: int = 3):
    out = str(tmp_path / "res")
    args = ["--device", "cpu", "--synthetic", "--out", out, "--checkpoints", str(tmp_path), "--phases",
            "infer,parity", "--models", "mlp,lenet", "--budget", "30", *argv]
    parser = run.build_parser()
    from bench.plan import make_context

    ctx, _ = make_context(parser.parse_args(args), PHASES)
    code = repeat.run_repeated(ctx, PHASES, args, "python -m bench.run ...", repeat_n)
    return code, json.load(open(os.path.join(out, "cpu", "results.json")))


def test_three_processes_merge_into_one_run(tmp_path):
    code, data = bench(tmp_path)
    assert code == 0 and len(CALLS) == 3
    # each process: its own folder, a third of the budget, models reversed every second one, parity only once
    assert [c[c.index("--models", 12) + 1] for c in CALLS] == ["mlp,lenet", "lenet,mlp", "mlp,lenet"]
    assert all(c[c.index("--budget", 12) + 1] == "10" and c[c.index("--repeat") + 1] == "1" for c in CALLS)
    assert "--phases" not in CALLS[0][12:] and CALLS[1][-2:] == ["--phases", "infer"]
    assert len({c[c.index("--out", 12) + 1] for c in CALLS}) == 3
    env, recs = data["env"], data["records"]
    assert env["repeat"] == 3 and env["complete"] and env["budget_s"] == 30
    assert len(env["notes"]["repeat"]["per_process"]) == 3
    eager = next(r for r in recs if r["model"] == "mlp" and r.get("backend") == "eager")
    assert eager["latencies_ms"] == [1.0] * 4 + [2.0] * 4 + [3.0] * 4 and eager["samples_per_repeat"] == [4, 4, 4]
    assert eager["n_calls"] == 12 and eager["p50_ms"] == 2.0 and eager["max_ms"] == 3.0
    ort = next(r for r in recs if r["model"] == "mlp" and r.get("backend") == "onnxruntime")
    assert ort["speedup_vs_eager"] == pytest.approx(2.0)
    assert [r["phase"] for r in recs if r["model"] == "mlp"] == ["model", "infer", "infer", "parity"]
    cal = env["calibration"]["probes"]["matmul"]
    assert cal["samples_ms"] == [1.0] * 3 + [2.0] * 3 + [3.0] * 3 and cal["samples_per_repeat"] == [3, 3, 3]
    assert "taken in each of 3 processes" in env["calibration"]["method"]


def test_a_row_that_failed_in_one_process_is_failed_and_names_it(tmp_path, monkeypatch):
    monkeypatch.setenv("FAIL_SECOND", "1")
    code, data = bench(tmp_path)
    assert code == 1
    lenet = [r for r in data["records"] if r["model"] == "lenet" and r["phase"] == "infer"]
    assert lenet and all(r["status"] == "failed" for r in lenet)
    assert [r["reason"] for r in lenet] == ["process 2 of 3: RuntimeError: boom"] * 2
    mlp = [r for r in data["records"] if r["model"] == "mlp" and r["phase"] == "infer"]
    assert [r["samples_per_repeat"] for r in mlp] == [[4, 4, 4]] * 2


def test_merge_rows_keeps_one_off_rows_and_pools_sampled_ones():
    a = TrainRecord(model="m", row="fast", batch_size=8, window_rates=[100.0, 110.0])
    b = TrainRecord(model="m", row="fast", batch_size=8, window_rates=[200.0])
    merged = repeat.merge_rows([(0, a), (1, b)], 2)
    assert merged.window_rates == [100.0, 110.0, 200.0] and merged.samples_per_repeat == [2, 1]
    assert a.window_rates == [100.0, 110.0] and not a.samples_per_repeat  # the inputs are left alone
    skipped = not_ok(InferRecord, "m", "cpu", "no onnxruntime", status="skipped", backend="onnxruntime")
    assert repeat.merge_rows([(0, skipped)], 3) == skipped
    one_off = ModelRecord(model="m")
    assert repeat.merge_rows([(0, one_off), (1, ModelRecord(model="m"))], 2) is one_off
    env, recs = repeat.merge_runs([(RunEnv(complete=True), [a]), (RunEnv(complete=False), [b])], 2)
    assert env.repeat == 2 and not env.complete and recs[0].samples_per_s == 110.0 and recs[0].windows == 3


def test_child_argv_without_a_budget_and_with_one_process_left():
    ctx = BenchContext(device=__import__("torch").device("cpu"), models=["mlp"], phases=["infer"], budget_s=None)
    argv = repeat.child_argv(["--models", "mlp"], ctx, 0, 3, "/x", ["infer"])
    assert argv == ["--models", "mlp", "--repeat", "1", "--out", "/x", "--models", "mlp"]


def test_repeat_count_defaults_and_refuses_zero():
    assert run.repeat_count(None, False) == repeat.DEFAULT_REPEAT
    assert run.repeat_count(None, True) == repeat.QUICK_REPEAT == 1
    assert run.repeat_count(4, True) == 4
    with pytest.raises(Exception, match="--repeat must be a positive integer, not 0"):
        run.repeat_count(0, False)


def test_an_interrupted_repeat_keeps_the_processes_done_and_says_incomplete(tmp_path, monkeypatch):
    def interrupted(argv):
        if len(CALLS) == 1:
            raise KeyboardInterrupt  # Ctrl-C while process 2 runs: it wrote nothing
        return launch(argv)

    monkeypatch.setattr(repeat, "launch_process", interrupted)
    code, data = bench(tmp_path)
    assert code == 130 and len(CALLS) == 1
    assert data["env"]["repeat"] == 1 and not data["env"]["complete"]
    eager = next(r for r in data["records"] if r["model"] == "mlp" and r.get("backend") == "eager")
    assert eager["latencies_ms"] == [1.0] * 4 and eager["samples_per_repeat"] == []


def test_five_processes_write_this_machines_noise_profile_beside_the_results_and_in_the_cache(tmp_path, monkeypatch):
    from bench.analysis import noise

    monkeypatch.setenv(noise.CACHE_ENV, str(tmp_path / "cache"))
    code, data = bench(tmp_path, "--models", "mlp", repeat_n=5)
    assert code == 0 and len(CALLS) == 5
    beside = noise.load_profile(str(tmp_path / "res" / "cpu"))
    env = data["env"]
    cached = noise.load_profile(noise.cache_path(beside.machine, env["threads"]))
    assert cached.rows == beside.rows and beside.processes == 5 and beside.threads == env["threads"]
    eager = beside.prior(("mlp", "infer", "eager", 1, "fp32"))
    # process k took 1 + k ms a call: the variance of log(1..5) over 4 degrees of freedom
    assert eager.df == 4 and eager.variance == pytest.approx(np.var(np.log([1, 2, 3, 4, 5]), ddof=1))
    assert beside.prior(("calibration", "matmul")).df == 4  # the machine check's probes are profiled too
    assert beside.prior(("mlp", "parity")) is None  # a one-off row has no processes to spread


def test_fewer_than_five_processes_write_no_profile(tmp_path, monkeypatch):
    from bench.analysis import noise

    monkeypatch.setenv(noise.CACHE_ENV, str(tmp_path / "cache"))
    bench(tmp_path, "--models", "mlp", repeat_n=4)
    assert not (tmp_path / "res" / "cpu" / noise.PROFILE_FILE).exists() and not (tmp_path / "cache").exists()
