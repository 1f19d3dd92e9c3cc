"""The training phase: every ladder row, the derived fields filled once, failures kept to their row (speed itself is
never asserted)."""
from __future__ import annotations

import contextlib
import math

import pytest
import torch

import zoo
from bench.context import BenchContext, ModelSession
from bench.measure import timing
from bench.phases.train import phase as train
from bench.phases.train import rounds
from bench.phases.train.phase import RowPlan, TimedRow, TrainPhase, derive, time_rows
from bench.records import TRAIN_LADDER, TrainRecord
from zoo import tune
from zoo.data import DATASETS


@pytest.fixture(scope="module")
def mlp_rows():
    """One quick run of the whole phase for mlp, with an extra precision, a good and a bad variant."""
    mp = pytest.MonkeyPatch()
    mp.setattr(train, "TUNE_BUDGET_S", {True: 0.3, False: 0.3})
    mp.setattr(train, "STEPS_PER_SPLIT", {True: 12, False: 12})
    ctx = BenchContext(torch.device("cpu"), quick=True, synthetic=True, checkpoints=None,
                       precisions=["fp32", "bf16"],
                       train_variants=[{"channels_last": True}, {"precision": "fp64-nonsense"}])
    session = ModelSession("mlp", torch.nn.Linear(1, 1))
    try:
        yield TrainPhase().run(session, ctx), ctx, session
    finally:
        mp.undo()


@pytest.mark.slow  # one whole-phase run (shared by these tests): seconds on a busy CPU
def test_every_ladder_row_is_present_with_its_fields(mlp_rows):
    rows, ctx, _ = mlp_rows
    assert len(rows) == TrainPhase().planned_rows("mlp", ctx)
    ladder = [r for r in rows if train.is_plain(r)]
    assert [r.row for r in ladder] == list(TRAIN_LADDER)
    for r in ladder + [rows[len(TRAIN_LADDER)]]:
        assert r.status == "ok", r.reason
        assert r.batch_size == ctx.train_batch_size("mlp") and r.data == "synthetic" and r.quick
        assert r.samples_per_s > 0 and math.isfinite(r.samples_per_s) and r.samples_per_s_iqr >= 0
        h1 = r.row in ("tutorial_loop", "fast")  # H1's two rows go on to a precision after the round-robin
        assert len(r.window_rates) == r.windows and (r.windows >= 3 if h1 else r.windows == 3)
        assert r.steps_per_window >= 1
        assert r.samples_stepped <= r.windows * r.steps_per_window * r.batch_size
        assert r.gflops_per_s > 0 and r.threads == torch.get_num_threads()
        assert r.peak_mem_mb > 0 and r.mem_delta_mb >= 0
        assert r.speedup_vs_tutorial_loop == pytest.approx(r.samples_per_s / ladder[0].samples_per_s)
    by = {r.row: r for r in ladder}
    assert by["tutorial_loop"].rung_gain is None
    for prev, cur in zip(TRAIN_LADDER, TRAIN_LADDER[1:]):
        if by[cur].same_config_as:  # the tuner kept the default: no gain between a row and itself
            assert by[cur].rung_gain is None and by[cur].same_config_as == prev
        else:
            assert by[cur].rung_gain == pytest.approx(by[cur].samples_per_s / by[prev].samples_per_s)
    assert by["fast"].target_pct == ctx.precision_pct and by["fast"].reached_pct > 0
    for name in TRAIN_LADDER[:-2]:  # the bound of the untuned rows is the fp32 compute row
        assert by[name].fraction_of_compute == pytest.approx(by[name].samples_per_s / by["compute"].samples_per_s)
    assert by["fast"].tuned and "optimizer_impl" in by["fast"].tuned
    assert by["compute"].tuned == by["fast"].tuned  # the bound runs the bounded rung's execution choice
    assert by["compute"].fraction_of_compute is None


@pytest.mark.slow  # one whole-phase run (shared by these tests): seconds on a busy CPU
def test_extra_precision_and_variant_rows_relate_to_fp32_compute(mlp_rows):
    rows, _, _ = mlp_rows
    compute = next(r for r in rows if r.row == "compute" and train.is_plain(r))
    bf16 = next(r for r in rows if r.precision == "bf16")
    cl = next(r for r in rows if r.channels_last)
    for r in (bf16, cl):
        assert r.ok and r.row == "compute"
        assert r.speedup_vs_fp32_compute == pytest.approx(r.samples_per_s / compute.samples_per_s)


@pytest.mark.slow  # one whole-phase run (shared by these tests): seconds on a busy CPU
def test_a_failing_variant_is_a_failed_row_and_the_rest_goes_on(mlp_rows):
    rows, _, _ = mlp_rows
    bad = rows[-1]
    assert bad.status == "failed" and "fp64-nonsense" in bad.reason
    assert bad.row == "compute" and bad.precision == "fp64-nonsense"
    assert sum(r.ok for r in rows) == len(rows) - 1


@pytest.mark.slow  # one whole-phase run (shared by these tests): seconds on a busy CPU
def test_the_flop_count_is_cached_for_the_session(mlp_rows):
    _, _, session = mlp_rows
    assert session.cache["train_flops_per_sample"] > 0


def _timed(step) -> TimedRow:
    return TimedRow(RowPlan("no_host_read"), step, contextlib.ExitStack())


def test_samples_stepped_counts_a_short_last_batch():
    sizes = iter([32, 32, 8] * 1000)  # a split of 72 samples at batch 32: the third batch is short
    row = _timed(lambda: next(sizes))
    row.steps_per_window = 3
    rounds._one_window(row, lambda: None)
    assert row.samples == 72 and len(row.rates) == 1


@pytest.mark.slow
def test_a_row_that_fails_while_timed_is_failed_alone():
    calls = {"n": 0}

    def flaky() -> int:
        calls["n"] += 1
        if calls["n"] > 30:
            raise RuntimeError("device lost")
        return 4

    good, bad = _timed(lambda: 4), _timed(flaky)
    time_rows([good, bad], lambda: None, quick=True)
    assert good.error is None and len(good.rates) == 3
    assert isinstance(bad.error, RuntimeError)


def _rec(row, rates, **kw) -> TrainRecord:
    rates = [float(r) for r in rates]
    return TrainRecord(model="m", device="cpu", row=row, batch_size=8, window_rates=rates,
                       samples_per_s=sorted(rates)[len(rates) // 2], windows=len(rates), **kw)


def test_above_bound_is_flagged_only_beyond_the_noise():
    compute = _rec("compute", [100, 101, 99, 100, 102, 98, 100, 101, 99])
    clearly_above = _rec("fast_untuned", [120, 121, 119, 122, 120, 118, 121, 120, 119])
    within_noise = _rec("no_host_read", [60, 140, 100, 101, 99, 130, 70, 100, 102])
    derive([compute, clearly_above, within_noise], None, {})
    assert clearly_above.above_bound and clearly_above.fraction_of_compute == pytest.approx(1.2)
    assert not within_noise.above_bound and within_noise.fraction_of_compute is not None
    assert not compute.above_bound


def test_every_rung_divides_by_one_bound_the_compute_row_that_ran_the_fast_choice():
    """ "% of compute" divided fast by the fastest compute variant and every other rung by the plain compute row, in
    one column; now every fp32 rung divides by the ladder's compute row (the one that ran the tuner's choice)."""
    ladder_compute = _rec("compute", [150] * 3, channels_last=True, tuned={"channels_last": True})
    plain_variant = _rec("compute", [100] * 3, compile="default")
    bf16 = _rec("compute", [300] * 3, precision="bf16")  # not exact: never an fp32 rung's bound
    fast = _rec("fast", [140] * 3, tuned={"channels_last": True})
    nhr = _rec("no_host_read", [75] * 3)
    derive([ladder_compute, plain_variant, bf16, fast, nhr], None, {})
    assert fast.fraction_of_compute == pytest.approx(140 / 150) and nhr.fraction_of_compute == pytest.approx(0.5)
    assert bf16.speedup_vs_fp32_compute == pytest.approx(2.0) and plain_variant.speedup_vs_fp32_compute == \
        pytest.approx(100 / 150)
    assert ladder_compute.rung_gain == pytest.approx(150 / 140)  # the ladder's last rung, though channels_last


def test_rung_gain_skips_a_failed_rung_and_pct_of_peak_uses_the_peaks():
    tut = _rec("tutorial_loop", [10] * 3)
    failed = TrainRecord(model="m", device="cpu", status="failed", reason="x", row="fused_optimizer")
    nhr = _rec("no_host_read", [20] * 3)
    derive([tut, failed, nhr], 1e9, {"fp32_flops_per_s": 100e9})
    assert nhr.rung_gain == pytest.approx(2.0) and nhr.speedup_vs_tutorial_loop == pytest.approx(2.0)
    assert nhr.gflops_per_s == pytest.approx(20.0) and nhr.pct_of_peak == pytest.approx(0.2)
    assert failed.rung_gain is None


class _Clock:
    """A stand-in clock: every step of a row advances it by ``step_s``; nothing else takes time."""

    def __init__(self, step_s: float):
        self.now, self.step_s = 0.0, step_s

    def __call__(self) -> float:
        return self.now

    def step(self) -> int:
        self.now += self.step_s
        return 4


def _clocked_rows(monkeypatch, n: int, step_s: float) -> list[TimedRow]:
    clock = _Clock(step_s)
    monkeypatch.setattr(timing, "clock", clock)
    return [_timed(clock.step) for _ in range(n)]


def test_without_a_budget_a_full_run_takes_its_usual_windows(monkeypatch):
    rows = _clocked_rows(monkeypatch, 3, 0.01)
    time_rows(rows, lambda: None, quick=False)
    assert all(r.steps_per_window == 50 and len(r.rates) == train.MAX_WINDOWS[False] for r in rows)


def test_a_small_budget_shortens_the_windows_and_their_count_but_keeps_the_minimum(monkeypatch):
    rows = _clocked_rows(monkeypatch, 3, 0.01)
    time_rows(rows, lambda: None, quick=False, budget_s=1.0)
    # 1 s over 3 rows x (5 windows + 1): ~0.056 s windows of ~6 steps, and rounds only while they fit.
    assert all(r.steps_per_window < 50 and len(r.rates) >= train.MIN_WINDOWS[False] for r in rows)
    assert all(len(r.rates) < train.MAX_WINDOWS[False] for r in rows)
    rows = _clocked_rows(monkeypatch, 3, 0.5)  # steps far slower than any budget allows: the rule still holds
    time_rows(rows, lambda: None, quick=True, budget_s=0.1)
    assert all(r.steps_per_window == 1 and len(r.rates) == train.MIN_WINDOWS[True] for r in rows)


def test_a_slow_row_is_sized_from_its_memory_step_without_another_probe(monkeypatch):
    rows = _clocked_rows(monkeypatch, 1, 0.2)
    train.steady_step(rows[0], lambda: None)
    steps_before = rows[0].step_s
    monkeypatch.setattr(rounds, "steps_for_window", lambda *a, **k: pytest.fail("probed again"))
    time_rows(rows, lambda: None, quick=False)
    assert steps_before == pytest.approx(0.2) and rows[0].steps_per_window == round(0.5 / 0.2)


class _AllocatingBuilder:
    """A RowBuilder stand-in on a fake CUDA allocator: a row holds ``kept`` MB (data, model, optimizer); its first
    step needs a one-off ``first`` MB workspace (cuDNN's algorithm search), every later step ``steady`` MB."""

    def __init__(self, alloc, kept: int, first: int, steady: int, fail_steady: bool = False):
        self.ctx = type("Ctx", (), {"device": torch.device("cuda"), "sync": staticmethod(lambda: None)})()
        self.alloc, self.kept, self.first, self.steady, self.fail_steady = alloc, kept, first, steady, fail_steady
        self.steps, self.closed = 0, []

    def build(self, plan: RowPlan) -> TimedRow:
        self.alloc.hold(self.kept)

        def step() -> int:
            if self.steps and self.fail_steady:
                raise RuntimeError("CUDA error: an illegal memory access")
            self.alloc.transient(self.first if not self.steps else self.steady)
            self.steps += 1
            return 8

        resources = contextlib.ExitStack()
        resources.callback(lambda: self.closed.append(plan.row))
        step()  # the build's own first step, as RowBuilder.build takes it
        return TimedRow(plan, step, resources)


def test_a_training_row_resets_its_peak_after_the_first_step(monkeypatch):
    """A row's peak is read over a steady step after the reset: the first step's one-off workspace is not in it, and
    what earlier rows still hold is in the total peak but not in the peak above the row's start."""
    from helpers import FakeCudaAllocator

    alloc = FakeCudaAllocator(monkeypatch)
    alloc.hold(100)  # an earlier row's model and data, still held for the round-robin windows
    builder = _AllocatingBuilder(alloc, kept=40, first=256, steady=16)
    row = train.measure_row(builder, RowPlan("compute", channels_last=True))
    assert builder.steps == 1 + train.MEMORY_STEPS  # the warm step, then the steady step(s) the peak is read over
    assert (row.peak_mem_mb, row.mem_delta_mb, row.mem_held_mb) == (156, 56, 40)  # not 396 / 296: no one-off
    assert row.step_s is not None and row.step_s >= 0  # the steady step is timed: it sizes a slow row's windows
    row.rates = [100.0] * 3
    record = train.to_record("mlp", BenchContext(torch.device("cpu"), quick=True, synthetic=True, checkpoints=None),
                             row)
    assert (record.peak_mem_mb, record.mem_delta_mb, record.mem_held_mb) == (156, 56, 40)


def test_a_row_whose_steady_step_fails_is_closed_and_failed_alone(monkeypatch):
    from helpers import FakeCudaAllocator

    builder = _AllocatingBuilder(FakeCudaAllocator(monkeypatch), kept=1, first=1, steady=1, fail_steady=True)
    with pytest.raises(RuntimeError, match="illegal memory access"):
        train.measure_row(builder, RowPlan("fast_untuned"))
    assert builder.closed == ["fast_untuned"]  # its loaders and writers do not outlive it


@pytest.mark.skipif(not __import__("sys").platform.startswith("linux"), reason="reads /proc/self")
def test_a_cpu_training_row_leaves_out_its_first_steps_one_off_allocation():
    """The same on a CPU's resident-set high-water mark: 256 MB freed by the first step are not the row's peak."""
    class Builder:
        ctx = BenchContext(torch.device("cpu"), quick=True, synthetic=True, checkpoints=None)

        def build(self, plan: RowPlan) -> TimedRow:
            scratch = torch.ones(64 * 2**20)  # 256 MB, written: resident, then freed (a first step's one-off)
            del scratch
            return TimedRow(plan, lambda: 8, contextlib.ExitStack())

    row = train.measure_row(Builder(), RowPlan("compute"))
    assert row.mem_delta_mb is not None and row.mem_delta_mb < 150, row.mem_delta_mb


@pytest.mark.slow
def test_the_phase_gives_the_tuner_and_the_windows_a_share_of_its_budget(monkeypatch):
    seen: dict[str, list] = {"tune": [], "windows": []}

    def spy_tune(model, recipe, x, y, device, **kw):
        seen["tune"].append((kw["budget_s"], kw["steps_planned"]))
        return tune.untuned(model, recipe, device)

    def spy_windows(rows, sync, *, quick, budget_s=None, say=None):
        seen["windows"].append(budget_s)
        for r in rows:
            r.rates, r.steps_per_window = [1.0, 1.0, 1.0], 1

    monkeypatch.setattr(train, "autotune", spy_tune)
    monkeypatch.setattr(rounds, "time_rows", spy_windows)
    monkeypatch.setattr(train, "TUNE_BUDGET_S", {True: 2.0, False: 10.0})
    monkeypatch.setattr(train, "STEPS_PER_SPLIT", {True: 4, False: 4})
    for budget_s in (None, 1000.0, 1.0, 30.0, 4.0):
        ctx = BenchContext(torch.device("cpu"), quick=False, synthetic=True, checkpoints=None)
        ctx.budget_for = lambda name, phase, b=budget_s: b
        TrainPhase().run(ModelSession("mlp", torch.nn.Linear(1, 1)), ctx)
    # No budget or a large one: the tuner's own cap; a small one: its share of the phase's budget, not below the floor.
    assert [b for b, _ in seen["tune"]] == [10.0, 10.0, train.TUNE_MIN_S[False], pytest.approx(train.TUNE_SHARE * 30),
                                            train.TUNE_MIN_S[False]]
    assert seen["windows"][0] is None and seen["windows"][2] < 1.0 < seen["windows"][1] < 1000.0
    # Compile may be probed (the recipe's planned steps are passed) without a budget or with one that holds a compile.
    spec = zoo.get_spec("mlp")
    planned = spec.recipe.epochs * DATASETS[spec.dataset][2][0] // spec.recipe.batch_size
    assert [steps for _, steps in seen["tune"]] == [planned, planned, None, planned, None]


def test_the_plain_compute_bound_runs_the_fast_rungs_choice_and_its_variants_do_not(monkeypatch):
    """The fast rung's tuned choice could beat an untuned bound (results/cpu: 0.64-0.94x "gains" over compute);
    the plain compute row runs the very same choice, on one batch already on the device."""
    picked = tune.TuneChoice(optimizer_impl="foreach", gain=1.1, measured={"contiguous/foreach": 1.0})
    monkeypatch.setattr(train, "autotune", lambda *a, **k: picked)
    built = []
    real = train.build_tuned
    monkeypatch.setattr(train, "build_tuned", lambda choice, *a, **k: (built.append(choice), real(choice, *a, **k))[1])
    ctx = BenchContext(torch.device("cpu"), quick=True, synthetic=True, checkpoints=None, precisions=["fp32", "bf16"])
    builder = train.RowBuilder("mlp", ctx, tune_s=0.1)
    compute_before = builder.build(RowPlan("compute"))  # no fast row yet (it failed, or is not planned): untuned
    fast = builder.build(RowPlan("fast"))
    compute = builder.build(RowPlan("compute"))
    variant = builder.build(RowPlan("compute", precision="bf16"))
    assert compute_before.tuned is None and variant.tuned is None
    assert fast.tuned == compute.tuned == picked.to_dict()
    assert built == [picked, picked]  # the fast row's build, then the compute row's, with the same choice
    for row in (compute_before, fast, compute, variant):
        assert row.step() > 0
        row.resources.close()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_training_row_leaves_out_its_first_steps_workspace():
    """On the real caching allocator: 40 MB kept, a 256 MB first-step workspace, 16 MB per steady step."""
    dev, held = torch.device("cuda"), []

    class Builder:
        ctx = BenchContext(dev, quick=True, synthetic=True, checkpoints=None)

        def build(self, plan: RowPlan) -> TimedRow:
            held.append(torch.ones(10 * 2**20, device=dev))  # 40 MB: the row's model, data and optimizer
            scratch = torch.ones(64 * 2**20, device=dev)  # the first step's one-off workspace
            del scratch
            return TimedRow(plan, lambda: torch.ones(4 * 2**20, device=dev).numel() and 8, contextlib.ExitStack())

    row = train.measure_row(Builder(), RowPlan("compute"))
    assert row.mem_delta_mb == pytest.approx(56, abs=2) and row.mem_held_mb == pytest.approx(40, abs=2)
    assert row.peak_mem_mb >= row.mem_delta_mb
