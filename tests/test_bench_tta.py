"""bench.phases.tta: time to accuracy stops at the first check that reaches the target, caps its epochs, times
training, evaluation and setup apart, runs both loops over the same optimisation, and keeps a failing row from
taking the other down."""
from __future__ import annotations

import dataclasses

import pytest
import torch

import bench.phases.tta as tta
import zoo
from bench.context import BenchContext, ModelSession
from bench.records import TtaRecord
from bench.report.schema import record_from_dict
from zoo.tune import TuneChoice

CPU = torch.device("cpu")


def _stepper(calls: list, batch: int = 4):
    """A stand-in training step: records its call, 'steps' ``batch`` samples."""
    def step() -> int:
        calls.append(1)
        return batch
    return step


def test_race_stops_at_the_first_check_that_reaches_the_target():
    accs = iter([0.2, 0.5, 0.7, 0.9])
    steps = []
    out = tta.race(_stepper(steps), lambda: next(accs), target=0.7, max_epochs=9, steps_per_epoch=10, device=CPU)
    assert out["reached"] and out["final_acc"] == 0.7
    assert out["epochs"] == 3 and out["steps"] == 30 == len(steps) and out["samples_seen"] == 120
    assert out["eval_every_steps"] == 10 and out["train_s"] > 0 and out["eval_s"] > 0


def test_race_records_not_reached_when_the_epoch_cap_hits_first():
    checks = []
    out = tta.race(_stepper([]), lambda: checks.append(1) or 0.1, target=0.9, max_epochs=3, steps_per_epoch=5,
                   device=CPU)
    assert not out["reached"] and out["epochs"] == 3 and out["steps"] == 15 and len(checks) == 3


def test_long_epochs_are_checked_every_k_steps():
    assert tta.eval_every_steps(938) == 938
    assert tta.eval_every_steps(2500) == 834  # three equal slices of at most LONG_EPOCH_STEPS
    checks = []
    tta.race(_stepper([], 1), lambda: checks.append(1) or 0.0, target=1.0, max_epochs=1, steps_per_epoch=2500,
             device=CPU)
    assert len(checks) == 3  # after steps 834, 1668 and the epoch's end


def test_targets_parse_and_overrides_win_over_the_tutorial_number():
    assert tta.parse_targets(["mlp=0.7", "lenet=0.99"]) == {"mlp": 0.7, "lenet": 0.99}
    for bad in ("mlp", "mlp=high", "mlp=65"):
        with pytest.raises(ValueError, match="--tta-target"):
            tta.parse_targets([bad])
    ctx = BenchContext(device=CPU)
    assert tta.TtaPhase().target("mlp", ctx) == tta.TARGETS["mlp"]
    assert tta.TARGETS["mlp"][0] == 0.65
    ctx.tta_targets = {"mlp": 0.6}
    assert tta.TtaPhase().target("mlp", ctx)[0] == 0.6
    assert tta.TtaPhase({"mlp": 0.5}).target("mlp", ctx) == (0.5, "override (--tta-target)")


@pytest.fixture
def small_data(monkeypatch):
    """256 train / 256 test samples and a short tuner probe: the whole phase in a few seconds."""
    real = tta.make_loaders
    monkeypatch.setattr(tta, "make_loaders", lambda spec, **kw: real(spec, **kw, train_samples=256,
                                                                       test_samples=256))
    monkeypatch.setattr(tta, "TUNE_BUDGET_S", 0.3)


def _fast_mlp() -> ModelSession:
    """The MLP with a recipe that learns 256 samples in a few epochs (the quickstart's lr needs thousands of
    steps), and 2 recipe epochs: a cap of 6."""
    spec = zoo.get_spec("mlp")
    session = ModelSession("mlp", None)
    session.__dict__["spec"] = dataclasses.replace(
        spec, recipe=dataclasses.replace(spec.recipe, lr=0.05, momentum=0.9, epochs=2))
    return session


def test_phase_runs_both_loops_over_the_same_optimisation(small_data):
    ctx = BenchContext(device=CPU, synthetic=True)
    recs = tta.TtaPhase({"mlp": 0.45}).run(_fast_mlp(), ctx)
    assert [r.row for r in recs] == ["tutorial_loop", "shared_loop"]
    tut, shared = recs
    for r in recs:
        assert isinstance(r, TtaRecord) and r.ok and r.reached and r.data == "synthetic"
        assert r.target_acc == 0.45 and r.target_source == "override (--tta-target)" and r.max_epochs == 6
        assert r.samples_seen == r.steps * 64 and r.batch_size == 64
        assert r.wall_s == pytest.approx(r.setup_s + r.train_s + r.eval_s)
        assert record_from_dict(r.to_dict()) == r
    # Same init, data order and maths up to float reordering: the same epochs and nearly the same accuracy.
    assert tut.epochs == shared.epochs and tut.steps == shared.steps
    assert abs(tut.final_acc - shared.final_acc) <= 2 / 256
    assert TuneChoice.from_dict(shared.tuned).optimizer_impl in ("fused", "foreach", "forloop")
    assert shared.tune_s is not None and shared.tune_s <= shared.setup_s and tut.tuned is None
    assert shared.speedup_vs_tutorial_loop == pytest.approx(tut.train_s / shared.train_s)
    assert shared.wall_speedup_vs_tutorial_loop == pytest.approx(tut.wall_s / shared.wall_s)


def test_the_shared_loops_tuner_is_sized_by_the_tutorial_loops_steps_to_target(small_data, monkeypatch):
    seen = []
    real = tta.autotune

    def spy(*args, steps_planned=None, **kw):
        seen.append(steps_planned)
        return real(*args, steps_planned=steps_planned, **kw)

    monkeypatch.setattr(tta, "autotune", spy)
    tut, shared = tta.TtaPhase({"mlp": 0.45}).run(_fast_mlp(), BenchContext(device=CPU, synthetic=True))
    assert tut.reached and seen == [tut.steps]


def test_cap_hit_means_not_reached_and_no_speedup(small_data, monkeypatch):
    monkeypatch.setattr(tta, "EPOCH_CAP_FACTOR", 1)
    recs = tta.TtaPhase({"mlp": 1.01}).run(_fast_mlp(), BenchContext(device=CPU, synthetic=True))
    for r in recs:
        assert r.ok and r.reached is False and r.epochs == r.max_epochs == 2
        assert r.speedup_vs_tutorial_loop is None and r.wall_speedup_vs_tutorial_loop is None


def test_a_failing_row_is_recorded_and_the_other_still_runs(small_data, monkeypatch):
    def broken(*args):
        raise RuntimeError("the tutorial loop broke")

    monkeypatch.setattr(tta, "run_tutorial_loop", broken)
    tut, shared = tta.TtaPhase({"mlp": 0.45}).run(_fast_mlp(), BenchContext(device=CPU, synthetic=True))
    assert tut.status == "failed" and "the tutorial loop broke" in tut.reason and tut.row == "tutorial_loop"
    assert shared.ok and shared.reached and shared.speedup_vs_tutorial_loop is None


def test_phase_declares_itself_off_by_default():
    phase = tta.TtaPhase()
    assert phase.name == "tta" and phase.record_type is TtaRecord
    assert not phase.in_default and not phase.in_quick
    assert phase.planned_rows("mlp", BenchContext(device=CPU)) == 2
    rows = phase.failed(ModelSession("mlp", None), BenchContext(device=CPU), RuntimeError("x"))
    assert [r.row for r in rows] == ["tutorial_loop", "shared_loop"] and all(r.status == "failed" for r in rows)
