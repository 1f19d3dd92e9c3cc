"""The budget's planner on fake costs (what is dropped, in which order; that the plan fits; the re-fit as the run goes),
the skipped-for-budget rows and their command, the pulse's wording, the results-folder lock and the staged run
folder. No test here reads the clock: every clock is a stand-in."""
from __future__ import annotations

import io
import os
import subprocess
import sys

import pytest
import torch
from helpers import run_main

from bench import plan
from bench.context import BenchContext
from bench.phases import PHASES
from bench.report.staging import STAGE_MARK, promote, recover, stage_dir
from bench.runner.lock import LockHeld, RunLock, lock_path
from bench.runner.progress import Progress
from bench.schedule import rows as schedule_rows
from bench.schedule.budget import (
    MIN_PRICED_S,
    TIER_BACKEND,
    TIER_CORE,
    TIER_DUP_BATCH,
    TIER_LADDER,
    TIER_SCALE,
    TIER_VARIANT,
    TIER_WEIGHT,
    Budget,
    RowCost,
    drop_order,
    fit,
    loss_per_second,
    need_s,
)
from bench.schedule.pricing import ModelPrices, Prices


def row(model, phase, label, floor, full=None, tier=TIER_CORE, groups=(), **kw):
    return RowCost(model, phase, label, floor, floor if full is None else full, tier, tuple(groups), **kw)


# ---------------------------------------------------------------------------------------------------------------
# fit: what is kept, what goes first


def test_a_plan_that_fits_keeps_every_row_and_grants_the_flexible_seconds_in_proportion():
    rows = [row("a", "train", "x", 10, 30), row("a", "infer", "y", 5, 15)]
    got = fit(rows, {}, 60.0)
    assert not got.dropped and got.flex == 1.0  # full size fits: nothing shrinks
    got = fit(rows, {}, 25.0)
    assert not got.dropped and got.floor_s == 15 and got.full_s == 45
    assert got.flex == pytest.approx((25 - 15) / (45 - 15))  # fewer windows and calls before fewer rows
    assert need_s(got.kept, {}, got.flex, lambda r: 1.0) == pytest.approx(25.0)


def test_rows_go_by_least_loss_per_second_saved_until_the_floors_fit_then_what_still_fits_comes_back():
    rows = [row("m", "train", "compute", 10, tier=TIER_CORE), row("m", "train", "fused", 4, tier=TIER_LADDER),
            row("m", "train", "compute channels_last", 3, tier=TIER_VARIANT),
            row("m", "train", "compute compile=default", 6, tier=TIER_VARIANT),
            row("m", "scale", "procs=2", 8, tier=TIER_SCALE), row("m", "infer", "onnxruntime b=64", 2,
                                                                     tier=TIER_DUP_BATCH),
            row("m", "infer", "onnxruntime b=1", 1, tier=TIER_BACKEND)]
    order = [r.label for r in drop_order(rows, {})]
    # 4 ** tier / seconds: the core compute row (1024 / 10 s) goes before the 1 s backend row (256 / 1 s)
    assert order == ["compute compile=default", "compute channels_last", "procs=2", "onnxruntime b=64",
                     "fused", "compute", "onnxruntime b=1"]
    assert [loss_per_second(r, {}) for r in drop_order(rows, {})] == sorted(loss_per_second(r, {}) for r in rows)
    got = fit(rows, {}, 20.0)  # floors 34 s: drop the variants (9 s), then scale (8 s): 17 s fits ...
    assert [r.label for r in got.dropped] == ["compute compile=default", "procs=2"]  # ... and channels_last's 3 s
    assert got.floor_s == pytest.approx(20.0)  # come back into the room scale's drop freed
    assert [r.label for r in got.kept] == [r.label for r in rows if r in got.kept]  # in planned order


def test_a_row_of_an_earlier_tier_outlasts_a_later_one_only_when_it_is_more_than_tier_weight_times_cheaper():
    dear_core = row("m", "train", "compute", 80.0, tier=TIER_CORE)
    cheap = row("m", "infer", "onnxruntime b=1", 80.0 / TIER_WEIGHT / 2, tier=TIER_BACKEND)
    dear = row("m", "infer", "openvino b=1", 80.0 / TIER_WEIGHT * 2, tier=TIER_BACKEND)
    assert [r.label for r in drop_order([dear_core, cheap, dear], {})] == ["openvino b=1", "compute",
                                                                             "onnxruntime b=1"]
    tiny = row("m", "infer", "noop b=1", 0.01, tier=TIER_VARIANT)  # priced below MIN_PRICED_S: no bargain
    assert loss_per_second(tiny, {}) == pytest.approx(1 / MIN_PRICED_S)


def test_an_undroppable_row_stays_even_when_nothing_fits():
    rows = [row("m", "model", "", 50, droppable=False), row("m", "train", "compute", 5)]
    got = fit(rows, {}, 10.0)
    assert [r.label for r in got.kept] == [""] and got.flex == 0.0


def test_a_shared_cost_is_paid_once_and_saved_only_when_its_last_row_goes():
    groups = {"m onnx export": 20.0}
    rows = [row("m", "infer", "onnxruntime b=1", 1, groups=["m onnx export"], tier=TIER_BACKEND),
            row("m", "parity", "parity", 1, groups=["m onnx export"])]
    assert need_s(rows, groups, 0.0, lambda r: 1.0) == pytest.approx(22.0)  # not 42: one export
    got = fit(rows, groups, 21.5)
    assert [r.label for r in got.dropped] == ["onnxruntime b=1"] and got.floor_s == pytest.approx(21.0)


# ---------------------------------------------------------------------------------------------------------------
# Budget: the fitted plan as the run goes (fake clocks)


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_the_budget_refits_with_measured_prices_and_drops_what_no_longer_fits():
    clock = Clock()
    rows = [row("a", "train", "compute", 10), row("b", "train", "compute", 10),
            row("b", "train", "compute channels_last", 10, tier=TIER_VARIANT)]
    budget = Budget(40.0, rows, {}, clock=clock, elapsed=clock)
    assert not budget.dropped and budget.eta_s() == pytest.approx(30.0)
    assert budget.start(("a", "train")) == pytest.approx(10.0)
    clock.now = 20.0  # "a" took twice its price: this machine is slower than priced
    budget.finish(("a", "train"))
    assert budget.ratio("train") == pytest.approx(2.0)
    assert budget.eta_s() == pytest.approx(40.0)  # b's 20 s of prices, corrected: 40 s, more than the 20 s left
    budget.start(("b", "train"))
    assert not budget.keeps("b", "train", "compute channels_last") and budget.keeps("b", "train", "compute")
    assert budget.seconds_for("b", "train") == pytest.approx(20.0)  # its price, corrected by the ratio
    assert [r.label for r in budget.dropped_in(("b", "train"))] == ["compute channels_last"]
    # what each pair was given when it started, not its price corrected by its own overrun (a's would read 20 s)
    assert budget.granted == {("a", "train"): pytest.approx(10.0), ("b", "train"): pytest.approx(20.0)}


def test_the_eta_counts_the_running_pair_and_the_reserve():
    clock = Clock()
    budget = Budget(100.0, [row("a", "infer", "eager b=1", 10), row("b", "infer", "eager b=1", 10)], {},
                    reserve_s=5.0, clock=clock, elapsed=clock)
    assert budget.eta_s() == pytest.approx(25.0)
    budget.start(("a", "infer"))
    clock.now = 4.0
    assert budget.eta_s() == pytest.approx(6.0 + 10.0 + 5.0)
    clock.now = 30.0  # an overrun never makes the running pair's rest negative
    assert budget.eta_s() == pytest.approx(15.0)
    summary = budget.summary()
    assert summary["planned_rows"] == 2 and summary["dropped_rows"] == 0 and summary["reserve_s"] == 5.0


# ---------------------------------------------------------------------------------------------------------------
# The real phases' prices on fake costs: the default plan is priced, fits, and drops in the written order


def fake_prices(models, step_s=0.05, call_s=0.002):
    return Prices(models={m: ModelPrices(build_s=0.5, train_step_s=step_s, forward_s={1: call_s, 64: call_s * 20,
                                                                                      512: call_s * 150},
                                         sample_s=call_s / 2) for m in models}, torchrun_s=6.0)


def cpu_context(models, **kw) -> BenchContext:
    ctx = BenchContext(device=torch.device("cpu"), models=list(models), phases=["train", "infer", "parity", "scale"],
                       backends=["eager", "compile", "onnxruntime", "onnxruntime-int8:int8"], threads=2,
                       train_variants=[{"channels_last": True}, {"compile": "default"}], synthetic=True,
                       budget_s=120.0, **kw)
    return ctx


def test_the_default_phases_price_every_planned_row_and_a_tight_budget_drops_variants_and_scale_first():
    ctx = cpu_context(["mlp", "alexnet_mnist"])
    phases = [PHASES[p] for p in ctx.phases]
    rows, groups, reserve = schedule_rows.priced_rows(ctx, phases, fake_prices(ctx.models, step_s=0.8))
    for m in ctx.models:
        for p in phases:
            assert sum(r.pair == (m, p.name) for r in rows) == p.planned_rows(m, ctx)  # one price per planned row
    assert all(r.full_s >= r.floor_s >= 0 for r in rows)
    available = need_s(rows, groups, 0.0, lambda r: 1.0) * 0.7
    got = fit(rows, groups, available)
    assert got.dropped and got.floor_s <= available
    assert got.dropped[0].tier == TIER_VARIANT  # what a user loses least goes first
    assert all(r.tier == TIER_SCALE for r in got.dropped if r.phase == "scale")
    order = drop_order(rows, groups)
    assert [order.index(r) for r in got.dropped] == sorted(order.index(r) for r in got.dropped)
    # maximal: no dropped row would still fit beside the kept ones
    assert all(need_s([*got.kept, r], groups, 0.0, lambda r: 1.0) > available for r in got.dropped)


def test_a_dropped_row_is_a_skipped_row_saying_budget_its_seconds_and_its_command():
    ctx = cpu_context(["lenet"])
    phases = [PHASES[p] for p in ctx.phases]
    rows, groups, reserve = schedule_rows.priced_rows(ctx, phases, fake_prices(ctx.models))
    ctx.budget = Budget(1.0, rows, groups, elapsed=lambda: 0.0, clock=lambda: 0.0)  # nothing droppable fits
    dropped = ctx.budget.dropped_in(("lenet", "infer"))
    assert dropped
    recs = schedule_rows.budget_skips(ctx, PHASES["infer"], dropped)
    rec = next(r for r in recs if r.backend == "onnxruntime" and r.batch_size == 1)
    assert rec.status == "skipped" and rec.reason.startswith("budget: left out to fit --budget ")
    assert "needs ~" in rec.reason
    assert ("`python -m bench.run --device cpu --models lenet --phases infer --backends onnxruntime --batch-sizes 1 "
            "--synthetic --threads 2 --budget none`") in rec.reason
    lines = schedule_rows.plan_lines(ctx.budget, ctx)
    assert lines[0].startswith("plan: ") and "ETA" in lines[0] and "lenet: measure train 0/" in lines[1]


# ---------------------------------------------------------------------------------------------------------------
# The pulse: what runs inside a phase, and the priced ETA


def test_the_pulse_says_what_runs_inside_the_round_robin_and_the_priced_eta():
    stream, activity = io.StringIO(), ["round 3 of 5-9, 9 rows in the round"]
    progress = Progress({("alexnet_mnist", "train"): 9}, {("alexnet_mnist", "train"): 1.0}, models=1,
                        budget_s=120.0, stream=stream, tty=False, pulse_s=3600, clock=lambda: 80.0,
                        detail=lambda: activity[0], eta=lambda: 250.0)
    progress.start("alexnet_mnist", "train")
    assert progress.status() == ("alexnet_mnist train (0s): round 3 of 5-9, 9 rows in the round; 0/10 rows, "
                                 "ETA 4m10s")
    progress.finish("alexnet_mnist", "train")
    activity[0] = "pricing lenet"
    assert progress.status() == "pricing lenet; 0/10 rows, ETA 4m10s"
    progress.close()


def test_the_round_robin_says_each_round():
    from bench.phases.train.phase import RowPlan, TimedRow, time_rows

    heard = []
    rows = [TimedRow(RowPlan(name), lambda: 8, None, step_s=1.0) for name in ("a", "b")]
    time_rows(rows, lambda: None, quick=True, say=heard.append)
    assert heard[0].startswith("sizing windows") and heard[1:] == [f"round {k} of 3, 2 rows in the round"
                                                                   for k in (1, 2, 3)]


# ---------------------------------------------------------------------------------------------------------------
# One run per results folder


def test_a_second_run_is_refused_while_the_first_holds_the_folder(tmp_path):
    dev = str(tmp_path / "cpu")
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        import psutil

        with open(lock_path(dev), "w") as f:  # what the other run wrote: its pid and start time
            f.write(f"{holder.pid} {psutil.Process(holder.pid).create_time()}\n")
        with pytest.raises(LockHeld, match=rf"another bench.run \(pid {holder.pid}\) is writing {dev}/") as err:
            RunLock(dev).acquire()
        assert err.value.exit_code == 2
    finally:
        holder.communicate(b"")


def test_a_stale_lock_left_by_a_killed_run_is_taken_over_and_released(tmp_path):
    dev = str(tmp_path / "cpu")
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    with open(lock_path(dev), "w") as f:
        f.write(f"{int(gone.stdout)} 12345.0\n")  # that process has exited
    with RunLock(dev) as lock:
        assert lock.took_over == int(gone.stdout)
        assert open(lock_path(dev)).read().split()[0] == str(os.getpid())
    assert not os.path.exists(lock_path(dev))
    with open(lock_path(dev), "w") as f:  # a live pid started at another time: a reused pid, also stale
        f.write(f"{os.getppid()} 1.0\n")
    with RunLock(dev):
        pass


def test_the_driver_says_the_lock_in_one_line_and_exits_2_before_measuring(tmp_path, capsys):

    out = tmp_path / "res"
    out.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        import psutil

        (out / "cpu.lock").write_text(f"{holder.pid} {psutil.Process(holder.pid).create_time()}\n")
        rc = run_main(["--device", "cpu", "--synthetic", "--models", "mlp", "--out", str(out), "--budget", "none"],
                      phases={"train": PHASES["train"]}, probe=lambda ctx, env: pytest.fail("measured"))
    finally:
        holder.communicate(b"")
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and err == [f"error: another bench.run (pid {holder.pid}) is writing {out / 'cpu'}/"]
    assert sorted(os.listdir(out)) == ["cpu.lock"]


# ---------------------------------------------------------------------------------------------------------------
# The staged folder


def test_a_completed_stage_replaces_the_complete_run_and_earlier_incomplete_ones(tmp_path):
    dev = tmp_path / "cpu"
    dev.mkdir()
    (dev / "results.json").write_text("old")
    first = stage_dir(str(dev))
    second = stage_dir(str(dev))
    assert first != second and STAGE_MARK in first and os.path.isdir(second)
    open(os.path.join(second, "results.json"), "w").write("new")
    promote(second, str(dev))
    assert (dev / "results.json").read_text() == "new" and sorted(os.listdir(tmp_path)) == ["cpu"]


def test_a_promotion_cut_short_is_recovered(tmp_path):
    dev = tmp_path / "cpu"
    aside = tmp_path / "cpu.replaced-999"
    aside.mkdir()
    (aside / "results.json").write_text("complete")
    recover(str(dev))  # killed between moving the old run aside and moving the new one in: the old one comes back
    assert (dev / "results.json").read_text() == "complete" and not aside.exists()
    aside.mkdir()
    recover(str(dev))  # killed after the new one moved in: the aside copy is dropped
    assert not aside.exists() and (dev / "results.json").exists()


def test_a_row_dropped_at_plan_time_comes_back_when_the_run_goes_faster_than_priced():
    clock = Clock()
    rows = [row("a", "train", "compute", 20), row("b", "train", "compute", 20),
            row("b", "train", "compute channels_last", 20, tier=TIER_VARIANT)]
    budget = Budget(50.0, rows, {}, clock=clock, elapsed=clock)
    assert not budget.keeps("b", "train", "compute channels_last")  # 60 s of floors in 50 s
    budget.start(("a", "train"))
    clock.now = 5.0  # a quarter of its price
    budget.finish(("a", "train"))
    budget.start(("b", "train"))
    assert budget.keeps("b", "train", "compute channels_last") and not budget.dropped_in(("b", "train"))
    assert budget.summary()["dropped_at_plan"] == 1 and budget.summary()["dropped_rows"] == 0


# ---------------------------------------------------------------------------------------------------------------
# A re-run interrupted or killed at several points: the previous complete run stays whole

DRIVER = '''
import sys, time
from helpers import run_main
from bench.phases.base import Phase
from bench.schedule.pricing import ModelPrices, Prices
from bench.records import TrainRecord

class Slow(Phase):
    name, record_type = "train", TrainRecord
    def planned_rows(self, name, ctx):
        return 1
    def run(self, session, ctx):
        time.sleep(float(sys.argv[2]))
        return [TrainRecord(model=session.name, device="cpu", row="compute", batch_size=8, samples_per_s=float(sys.argv[3]))]

prices = lambda ctx, phases, calibration, say=None, import_s=None: Prices(
    models={m: ModelPrices(build_s=0.0, train_step_s=0.01) for m in ctx.models})
sys.exit(run_main(["--device", "cpu", "--synthetic", "--models", "mlp,lenet,cifar_cnn", "--out", sys.argv[1],
                   "--checkpoints", sys.argv[1], "--budget", "600"], phases={"train": Slow()},
                  probe=lambda ctx, env: None, pricer=prices))
'''


@pytest.mark.slow
@pytest.mark.parametrize("signal_name, marker", [("SIGINT", "bench: "), ("SIGINT", "[2/6]"), ("SIGKILL", "plan: "),
                                                  ("SIGKILL", "[4/6]"), ("SIGKILL", "[6/6]")])
def test_a_rerun_stopped_at_any_point_leaves_the_previous_complete_run_whole(tmp_path, signal_name, marker):
    import json
    import signal
    import time

    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    out = tmp_path / "res"
    out.mkdir()
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([repo, os.path.join(repo, "tests")])}
    first = subprocess.run([sys.executable, str(script), str(out), "0", "1"], cwd=repo, env=env, capture_output=True,
                           text=True, timeout=600)
    assert first.returncode == 0, first.stderr
    complete = (out / "cpu" / "results.json").read_bytes()
    proc = subprocess.Popen([sys.executable, str(script), str(out), "0.5", "2"], cwd=repo, env=env,
                            stderr=subprocess.PIPE, text=True)
    for line in proc.stderr:
        if marker in line:
            break
    proc.send_signal(getattr(signal, signal_name))
    proc.communicate(timeout=60)
    assert proc.returncode in (130, -signal.SIGKILL) or (marker == "[6/6]" and proc.returncode == 0)
    time.sleep(0.1)
    data = json.loads((out / "cpu" / "results.json").read_text())
    if proc.returncode == 0:  # it finished before the signal: the new complete run replaced the old one whole
        assert data["env"]["complete"] and all(r.get("samples_per_s") in (None, 2.0) for r in data["records"])
    else:
        assert (out / "cpu" / "results.json").read_bytes() == complete  # the complete run, byte for byte
        staged = [p for p in os.listdir(out) if p.startswith("cpu.incomplete-")]
        assert len(staged) <= 1
        for folder in staged:  # the stopped run: readable, INCOMPLETE, listed in the index
            path = out / folder / "results.json"
            if path.exists():
                assert json.loads(path.read_text())["env"]["complete"] is False
                assert folder in (out / "README.md").read_text()
    third = subprocess.run([sys.executable, str(script), str(out), "0", "3"], cwd=repo, env=env, capture_output=True,
                           text=True, timeout=600)  # the next run trips on nothing the stopped one left
    assert third.returncode == 0, third.stderr
    assert sorted(p for p in os.listdir(out) if not p.endswith(".lock")) == ["README.md", "cpu"]


def test_the_env_block_reads_a_cgroup_quota_that_cpu_count_ignores(tmp_path):
    from bench.runner.env import cgroup_cpu

    (tmp_path / "cpu.max").write_text("150000 100000\n")
    (tmp_path / "cpuset.cpus.effective").write_text("0-3\n")
    got = cgroup_cpu(str(tmp_path))
    assert got["quota_cpus"] == 1.5 and got["cpuset"] == "0-3"
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert cgroup_cpu(str(tmp_path))["quota_cpus"] is None


def test_a_backend_with_one_precision_answers_to_its_name_and_an_unknown_one_is_unknown():
    from zoo.errors import UserError

    assert plan.pick_backends("onnxruntime-int8,eager", torch.device("cpu"), quick=False)[0] == [
        "onnxruntime-int8:int8", "eager"]
    with pytest.raises(UserError, match="unknown backend 'warp9'"):
        plan.pick_backends("warp9", torch.device("cpu"), quick=False)
