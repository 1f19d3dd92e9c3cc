"""bench.run's driver on fake phases (injected through ``tests.helpers.run_main(phases=...)``): failures recorded and the run goes
on, interrupted runs marked incomplete, threads applied and recorded, the precision plan, the budget spread,
progress lines, result-write errors, and a real Ctrl-C sent to a real run."""
from __future__ import annotations

import glob
import io
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from helpers import run_main

from bench import plan
from bench.measure import machine
from bench.phases.base import Phase
from bench.records import InferRecord, TrainRecord, not_ok
from bench.report import files as report
from bench.runner.progress import Progress
from bench.schedule import budget
from bench.schedule.budget import RowCost
from bench.schedule.pricing import ModelPrices, Prices

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEEN: dict = {}  # what the fake phases saw, per test (reset by the autouse fixture)


STEP_S = {"alexnet_mnist": 0.5}  # fake prices: one training step, per model (others 0.01 s)


def fake_prices(ctx, phases, calibration, say=None, import_s=None):
    """The pricing pass on fake costs: nothing measured."""
    return Prices(models={m: ModelPrices(build_s=0.0, train_step_s=STEP_S.get(m, 0.01), sample_s=1e-4)
                          for m in ctx.models})


class FakeTrain(Phase):
    name, record_type = "train", TrainRecord

    def planned_rows(self, name, ctx):
        return 2

    def row_costs(self, name, ctx, prices):
        s = prices.models[name].train_step_s
        return [RowCost(name, "train", row, 10 * s, 20 * s, fields={"row": row, "batch_size": 8})
                for row in ("tutorial_loop", "compute")], {}

    def run(self, session, ctx):
        SEEN.setdefault("train", []).append(dict(model=session.name, threads=torch.get_num_threads(),
                                                 precisions=list(ctx.precisions),
                                                 budget_s=ctx.budget_for(session.name, "train")))
        return [TrainRecord(model=session.name, device=ctx.device.type, row=row, batch_size=8,
                            samples_per_s=100.0 * (i + 1)) for i, row in enumerate(("tutorial_loop", "compute"))]


class FakeInfer(Phase):
    name, record_type = "infer", InferRecord
    in_quick = True

    def planned_rows(self, name, ctx):
        return len(ctx.infer_batch_sizes(name))

    def run(self, session, ctx):
        if session.name in SEEN.get("interrupt_on", ()):
            raise KeyboardInterrupt
        if session.name in SEEN.get("fail_on", ()):
            raise RuntimeError("backend exploded")
        return [InferRecord(model=session.name, device=ctx.device.type, backend="eager", batch_size=bs, n_calls=20,
                            p50_ms=0.5 * bs) for bs in ctx.infer_batch_sizes(session.name)]

    def failed(self, session, ctx, exc):
        return [not_ok(InferRecord, session.name, ctx.device.type, exc, backend="eager", batch_size=bs)
                for bs in ctx.infer_batch_sizes(session.name)]


class SlowScale(Phase):
    """Not in a quick run by default, and not in a full run either: runs only when named."""
    name, record_type = "scale", TrainRecord
    in_quick = in_default = False

    def planned_rows(self, name, ctx):
        return 1

    def run(self, session, ctx):
        return []


PHASES = {"train": FakeTrain(), "infer": FakeInfer(), "scale": SlowScale()}


@pytest.fixture(autouse=True)
def _clean_state():
    SEEN.clear()
    yield


def bench(tmp_path, *argv, phases=PHASES):
    out = str(tmp_path / "res")
    rc = run_main(["--device", "cpu", "--synthetic", "--out", out, "--checkpoints", str(tmp_path), *argv],
                  phases=phases, probe=lambda ctx, env: None, pricer=fake_prices)
    return rc, last_results(out)


def last_results(out):
    """OUT/cpu/results.json, or an unfinished run's (OUT/cpu.incomplete-TIME/) when there is one: the newest."""
    staged = sorted(glob.glob(os.path.join(out, "cpu.incomplete-*", "results.json")))
    path = staged[-1] if staged else os.path.join(out, "cpu", "results.json")
    return json.load(open(path)) if os.path.exists(path) else None


def test_a_full_run_records_every_phase_and_marks_itself_complete(tmp_path):
    rc, data = bench(tmp_path, "--models", "mlp,lenet", "--batch-sizes", "1,4")
    assert rc == 0
    env, recs = data["env"], data["records"]
    assert [(r["model"], r["phase"]) for r in recs] == [
        (m, p) for m in ("mlp", "lenet") for p in ("model", "train", "train", "infer", "infer")]
    assert env["complete"] is True and env["planned_rows"] == env["done_rows"] == 10
    assert env["command"].startswith("python -m bench.run") and env["budget_s"] == budget.DEFAULT_BUDGET_S
    assert set(env["notes"]["phase_s"]["mlp"]) == {"train", "infer"}  # scale is not a default phase


def test_a_phase_that_raises_becomes_failed_rows_and_the_run_goes_on(tmp_path):
    SEEN["fail_on"] = ("mlp",)
    rc, data = bench(tmp_path, "--models", "mlp,lenet", "--batch-sizes", "1,4")
    assert rc == 1  # results written, and the exit status says something failed
    infer = [r for r in data["records"] if r["phase"] == "infer"]
    assert [(r["model"], r["batch_size"], r["status"]) for r in infer] == [
        ("mlp", 1, "failed"), ("mlp", 4, "failed"), ("lenet", 1, "ok"), ("lenet", 4, "ok")]
    assert "RuntimeError: backend exploded" in infer[0]["reason"]
    assert data["env"]["complete"] is True


def test_debug_lets_a_phase_error_raise(tmp_path):
    SEEN["fail_on"] = ("mlp",)
    with pytest.raises(RuntimeError, match="backend exploded"):
        bench(tmp_path, "--models", "mlp", "--debug")


def test_a_broken_checkpoint_is_a_failed_model_row_and_the_next_model_runs(tmp_path):
    (tmp_path / "mlp").mkdir()
    (tmp_path / "mlp" / "best.pt").write_bytes(b"not a checkpoint")
    rc, data = bench(tmp_path, "--models", "mlp,lenet", "--phases", "infer", "--batch-sizes", "1")
    assert rc == 1
    mlp = [r for r in data["records"] if r["model"] == "mlp"]
    assert len(mlp) == 1 and mlp[0]["phase"] == "model" and mlp[0]["status"] == "failed"
    assert "CheckpointError" in mlp[0]["reason"]
    assert [r["status"] for r in data["records"] if r["model"] == "lenet"] == ["ok", "ok"]


def test_an_interrupt_keeps_what_was_measured_marked_incomplete(tmp_path, capsys):
    SEEN["interrupt_on"] = ("lenet",)
    rc, data = bench(tmp_path, "--models", "mlp,lenet,cifar_cnn", "--batch-sizes", "1")
    assert rc == 130
    env, recs = data["env"], data["records"]
    assert env["complete"] is False and env["done_rows"] < env["planned_rows"]
    assert env["done_rows"] == len(recs)
    # mlp whole, lenet up to the phase that was running (its model record and train rows), nothing of cifar_cnn
    assert [(r["model"], r["phase"]) for r in recs] == [
        ("mlp", "model"), ("mlp", "train"), ("mlp", "train"), ("mlp", "infer"),
        ("lenet", "model"), ("lenet", "train"), ("lenet", "train")]
    err = capsys.readouterr().err
    assert "Traceback" not in err and "incomplete" in err


def test_threads_are_applied_for_the_run_and_recorded(tmp_path):
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        rc, data = bench(tmp_path, "--models", "mlp", "--threads", "1", "--batch-sizes", "1")
        # main() also runs in-process: the caller's thread count (and so its float reduction order) comes back
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    assert rc == 0
    assert SEEN["train"][0]["threads"] == 1  # what torch used while the phase ran
    assert data["env"]["threads"] == 1
    rows = [r for r in data["records"] if r["phase"] in ("train", "infer")]
    assert rows and all(r["threads"] == 1 for r in rows)


def test_bf16_without_native_support_leaves_the_default_plan_with_a_reason(tmp_path, monkeypatch):
    monkeypatch.setattr(machine, "cpu_flags", lambda: {"avx2", "fma"})
    rc, data = bench(tmp_path, "--models", "mlp", "--phases", "train")
    assert rc == 0 and SEEN["train"][0]["precisions"] == ["fp32"]
    reason = data["env"]["skipped_precisions"]["bf16"]
    assert "avx512_bf16" in reason and "emulated" in reason


def test_bf16_with_native_support_stays_in_the_default_plan(tmp_path, monkeypatch):
    monkeypatch.setattr(machine, "cpu_flags", lambda: {"avx512f", "avx512_bf16"})
    rc, data = bench(tmp_path, "--models", "mlp", "--phases", "train")
    assert rc == 0 and SEEN["train"][0]["precisions"] == ["fp32", "bf16"]
    assert data["env"]["skipped_precisions"] == {}


def test_explicit_precisions_run_even_without_native_support(tmp_path, monkeypatch):
    monkeypatch.setattr(machine, "cpu_flags", lambda: set())
    rc, data = bench(tmp_path, "--models", "mlp", "--phases", "train", "--precisions", "fp32,bf16")
    assert rc == 0 and SEEN["train"][0]["precisions"] == ["fp32", "bf16"]
    assert data["env"]["skipped_precisions"] == {}


def test_quick_runs_only_quick_phases_and_named_phases_run_in_registry_order(tmp_path):
    rc, data = bench(tmp_path, "--models", "mlp", "--quick", "--phases", "scale,infer", "--batch-sizes", "1")
    assert rc == 0 and list(data["env"]["notes"]["phase_s"]["mlp"]) == ["infer", "scale"]
    rc, data = bench(tmp_path, "--models", "mlp", "--quick")
    assert list(data["env"]["notes"]["phase_s"]["mlp"]) == ["train", "infer"]
    assert data["env"]["budget_s"] == budget.QUICK_BUDGET_S and data["env"]["quick"] is True


def test_the_budget_goes_to_the_heavier_model(tmp_path):
    rc, _ = bench(tmp_path, "--models", "mlp,alexnet_mnist", "--phases", "train", "--budget", "100")
    assert rc == 0
    by_model = {s["model"]: s["budget_s"] for s in SEEN["train"]}
    assert 0 < by_model["mlp"] < by_model["alexnet_mnist"] <= 100


def test_budget_none_gives_phases_no_budget(tmp_path):
    rc, data = bench(tmp_path, "--models", "mlp", "--phases", "train", "--budget", "none")
    assert rc == 0 and SEEN["train"][0]["budget_s"] is None and data["env"]["budget_s"] is None


def test_a_results_write_error_is_one_line_exit_1_and_the_old_files_stay(tmp_path, monkeypatch, capsys):
    assert bench(tmp_path, "--models", "mlp", "--batch-sizes", "1")[0] == 0
    path = tmp_path / "res" / "cpu" / "results.json"
    before = path.read_bytes()
    capsys.readouterr()

    def disk_full(*a, **kw):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(report, "write_results", disk_full)
    rc, _ = bench(tmp_path, "--models", "lenet", "--batch-sizes", "1")
    assert rc == 1 and path.read_bytes() == before
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith(f"error: cannot write results under {tmp_path / 'res' / 'cpu'}")
    assert errors[0].endswith(": No space left on device")  # (the new run's own folder: the complete one stays)


# ---------------------------------------------------------------------------------------------------------------
# The progress lines on their own (the budget's planner: test_bench_budget.py)


def test_plain_progress_prints_rows_and_a_pulse_with_an_eta():
    stream = io.StringIO()
    progress = Progress({("mlp", "train"): 2}, {("mlp", "train"): 4.0}, models=1, budget_s=60.0, stream=stream,
                        tty=False, pulse_s=0.05)
    progress.start("mlp", "train")
    time.sleep(0.3)  # a long phase: the pulse says what runs and how long is left
    progress.rows_done([TrainRecord(model="mlp", device="cpu", row="compute", batch_size=8, samples_per_s=1234.0)])
    progress.finish("mlp", "train")
    progress.close()
    lines = stream.getvalue().splitlines()
    pulses = [line for line in lines if line.startswith("  ... ")]
    assert pulses and "mlp train" in pulses[0] and "0/3 rows" in pulses[0] and "ETA" in pulses[0]
    assert "[1/3] mlp train compute b=8 ... 1,234 samples/s" in lines


def test_terminal_progress_is_a_bar_redrawn_while_a_phase_runs():
    stream = io.StringIO()
    progress = Progress({("lenet", "infer"): 4}, {("lenet", "infer"): 1.0}, models=1, budget_s=None, stream=stream,
                        tty=True, pulse_s=0.05)
    progress.start("lenet", "infer")
    time.sleep(0.3)
    drawn = stream.getvalue()
    progress.rows_done([InferRecord(model="lenet", device="cpu", backend="eager", batch_size=1, n_calls=100,
                                    p50_ms=0.25)])
    progress.close()
    assert drawn.count("lenet infer") >= 2 and "0/5 rows" in drawn and "ETA ?" in drawn  # redrawn, no ETA yet
    assert "[1/5] lenet infer eager b=1 ... 0.25 ms p50 (100 calls)" in stream.getvalue()


# ---------------------------------------------------------------------------------------------------------------
# A real run, interrupted by a real SIGINT


def _run_until(cmd, marker: str, timeout: float):
    """Start ``cmd`` in its own process group; wait for ``marker`` on stderr; return (proc, stderr so far)."""
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, env={**os.environ, "PYTHONPATH": REPO})
    seen, deadline = [], time.monotonic() + timeout
    try:
        for line in proc.stderr:
            seen.append(line)
            if marker in line or time.monotonic() > deadline:
                break
    except BaseException:
        os.killpg(proc.pid, signal.SIGKILL)
        raise
    return proc, "".join(seen)


@pytest.mark.slow
def test_sigint_ends_a_real_run_promptly_with_130_and_results_marked_incomplete(tmp_path):
    out = tmp_path / "res"
    cmd = [sys.executable, "-m", "bench.run", "--quick", "--synthetic", "--models", "mlp", "--device", "cpu",
           "--out", str(out), "--checkpoints", str(tmp_path)]
    proc, before = _run_until(cmd, "bench: ", timeout=120)  # the header: the run has started measuring
    try:
        if proc.poll() is not None:
            pytest.skip("the run ended before it could be interrupted")
        sent = time.monotonic()
        proc.send_signal(signal.SIGINT)
        _, rest = proc.communicate(timeout=15)
        waited = time.monotonic() - sent
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail("the run did not end within 15 s of SIGINT")
    stderr = before + rest
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and waited < 15
    path = out / "cpu" / "results.json"
    if path.exists():
        data = json.loads(path.read_text())
        assert data["env"]["complete"] is False and data["env"]["done_rows"] <= data["env"]["planned_rows"]


def test_default_backends_keep_a_missing_package_as_a_row_and_leave_out_another_device(monkeypatch):
    from bench.backends import BACKENDS

    monkeypatch.setattr(BACKENDS["openvino"], "available",
                        classmethod(lambda cls, device: 'openvino is not installed: pip install -e ".[openvino]"'))
    monkeypatch.setitem(plan.DEFAULT_BACKENDS, "cpu", ("eager", "openvino", "cuda_graph"))
    backends, left_out = plan.pick_backends(None, torch.device("cpu"), quick=False)
    assert backends == ["eager", "openvino"], "a missing package stays planned: its rows say how to install it"
    assert list(left_out) == ["cuda_graph"] and "cuda" in left_out["cuda_graph"]
