"""zoo.tune: every configuration the tuner may choose trains the same model (to float tolerance), the probe leaves
the caller's model, RNG and precision alone, compile is only probed when the run can pay for it, and the choice is
plain data that survives a checkpoint's weights-only load."""
from __future__ import annotations

import copy
import dataclasses
import io
import time

import pytest
import torch

import zoo
import zoo.execution
import zoo.tune as tune
from zoo.engine import StepOptions, train_step
from zoo.tune import Candidate, TuneChoice, autotune, build_tuned, eager_candidates, untuned


def _batch(name: str, n: int, seed: int = 0):
    spec = zoo.get_spec(name)
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, *spec.input_shape, generator=g), torch.randint(0, spec.num_classes, (n,), generator=g)


def _model(name: str):
    torch.manual_seed(0)
    return zoo.get_model(name)


def _train(choice, model, name: str, steps: int = 5):
    spec = zoo.get_spec(name)
    net, optimizer, opts = build_tuned(choice, model, spec.recipe, "cpu")
    for i in range(steps):
        train_step(net, optimizer, *_batch(name, 16, seed=i), opts)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_every_eager_candidate_trains_to_the_untuned_weights():
    # channels_last convolutions and the fused/foreach kernels reorder float sums: equal to tolerance, not bitwise.
    base = _model("lenet")
    x, _ = _batch("lenet", 4)
    cands = eager_candidates(base, zoo.get_spec("lenet").recipe, x, "cpu")
    assert {c.channels_last for c in cands} == {False, True}
    assert {c.optimizer_impl for c in cands} == {"fused", "foreach", "forloop"}
    reference = _train(untuned(base, zoo.get_spec("lenet").recipe, "cpu"), copy.deepcopy(base), "lenet")
    for cand in cands:
        got = _train(cand, copy.deepcopy(base), "lenet")
        for key, ref in reference.items():
            assert torch.allclose(got[key], ref, rtol=1e-4, atol=1e-5), (cand.label, key)
        assert any(not torch.equal(got[k], base.state_dict()[k]) for k in got), "the steps must have trained"


@pytest.mark.slow
def test_the_compiled_choice_trains_to_the_untuned_weights():
    # What the tuner picks when compile pays (channels_last + compile for a conv model) is the same step: inductor
    # fuses and reorders float sums, so equal to tolerance. (LeNet has no dropout: compiled code draws its own masks.)
    base = _model("lenet")
    assert not any(isinstance(m, torch.nn.Dropout) for m in base.modules())
    recipe = zoo.get_spec("lenet").recipe
    reference = _train(untuned(base, recipe, "cpu"), copy.deepcopy(base), "lenet")
    choice = TuneChoice.of(dataclasses.replace(tune.default_candidate(base, recipe, "cpu"), channels_last=True,
                                               compile=tune.COMPILE_MODE))
    got = _train(choice, copy.deepcopy(base), "lenet")
    for key, ref in reference.items():
        assert torch.allclose(got[key], ref, rtol=1e-4, atol=1e-5), key
    assert any(not torch.equal(got[k], base.state_dict()[k]) for k in got), "the steps must have trained"


def test_candidates_probe_the_memory_format_before_the_optimizer_kernel():
    # A budget that holds only two candidates must compare channels_last, the setting that moves a conv model's step
    # most, not a second optimizer kernel.
    model = _model("lenet")
    recipe = zoo.get_spec("lenet").recipe
    cands = eager_candidates(model, recipe, _batch("lenet", 2)[0], "cpu")
    default = tune.default_candidate(model, recipe, "cpu")
    assert cands[0] == default
    assert cands[1] == dataclasses.replace(default, channels_last=True)
    assert [tune.changes(c, default) for c in cands] == sorted(tune.changes(c, default) for c in cands)


def test_untuned_is_contiguous_fused_uncompiled():
    model = _model("lenet")
    choice = untuned(model, zoo.get_spec("lenet").recipe, "cpu")
    assert (choice.channels_last, choice.optimizer_impl, choice.compile) == (False, "fused", None)
    net, optimizer, opts = build_tuned(choice, model, zoo.get_spec("lenet").recipe, "cpu")
    assert net is model and optimizer.defaults["fused"] and not opts.channels_last


def test_models_without_convolutions_get_no_channels_last_candidate():
    model = _model("mlp")
    cands = eager_candidates(model, zoo.get_spec("mlp").recipe, _batch("mlp", 2)[0], "cpu")
    assert not any(c.channels_last for c in cands)
    assert cands[0] == tune.default_candidate(model, zoo.get_spec("mlp").recipe, "cpu")


def test_probe_leaves_model_rng_and_precision_alone(monkeypatch):
    model = _model("mlp")
    before = copy.deepcopy(model.state_dict())
    seen = []
    real_step = tune.train_step

    def spy(net, optimizer, x, y, opts, stats=None):
        seen.append(opts.precision)
        return real_step(net, optimizer, x, y, opts, stats)

    monkeypatch.setattr(tune, "train_step", spy)
    choice = autotune(model, zoo.get_spec("mlp").recipe, *_batch("mlp", 16), "cpu", precision="bf16", budget_s=2.0)
    assert seen and set(seen) == {"bf16"}, "every probed step runs at the precision passed in"
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key])
    # Under the budget, the candidates that fit are probed (on a busy machine not all of them): only real ones.
    assert set(choice.measured) <= {c.label for c in eager_candidates(model, zoo.get_spec("mlp").recipe,
                                                                      _batch("mlp", 2)[0], "cpu")}
    assert choice.gain > 0
    *_, opts = build_tuned(choice, model, zoo.get_spec("mlp").recipe, "cpu", precision="bf16")
    assert opts.precision == "bf16"


def test_probe_restores_the_rng_so_a_tuned_run_draws_the_same_dropout_masks():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 32), torch.nn.Dropout(0.5),
                                torch.nn.Linear(32, 10))
    rng = torch.get_rng_state()
    autotune(model, zoo.get_spec("mlp").recipe, *_batch("mlp", 16), "cpu", budget_s=0.2)
    assert torch.equal(torch.get_rng_state(), rng)


def test_probe_steps_keep_the_copy_at_its_starting_weights():
    # A copy that trained on its one batch would drift into denormal gradients and slow down as it is measured.
    model = _model("lenet")
    x, y = _batch("lenet", 16)
    trial = tune.Trial(Candidate(), model, zoo.get_spec("lenet").recipe, x, y, torch.device("cpu"), "fp32")
    for _ in range(5):
        trial.step()
    for key, value in trial.net.state_dict().items():
        assert torch.equal(value, model.state_dict()[key]), key
    assert trial.optimizer.state, "the optimizer really stepped (momentum buffers exist)"


def test_compile_is_not_probed_when_the_run_is_too_short_to_pay(monkeypatch):
    def no_compile(*args, **kwargs):
        raise AssertionError("torch.compile must not run for a run this short")

    monkeypatch.setattr(tune.torch, "compile", no_compile)
    model = _model("mlp")
    recipe = zoo.get_spec("mlp").recipe
    default = tune.default_candidate(model, recipe, "cpu")
    cands = [default, Candidate(optimizer_impl="forloop"), Candidate(compile="default")]
    for steps in (None, 1):
        choice = autotune(model, recipe, *_batch("mlp", 16), "cpu", steps_planned=steps, budget_s=0.3,
                          candidates=cands)
        assert choice.compile is None and choice.compile_s is None
        assert not any("compile" in label for label in choice.measured)


def _slow_steps(monkeypatch, seconds: float) -> list:
    """Every probed step takes ``seconds`` (a stand-in for a large model on a slow machine); returns the calls."""
    calls = []

    def slow(net, optimizer, x, y, opts, stats=None):
        calls.append(1)
        time.sleep(seconds)

    monkeypatch.setattr(tune, "train_step", slow)
    return calls


def test_a_budget_too_small_for_two_candidates_leaves_the_default_unmeasured(monkeypatch):
    calls = _slow_steps(monkeypatch, 0.05)
    model = _model("lenet")
    recipe = zoo.get_spec("lenet").recipe
    choice = autotune(model, recipe, *_batch("lenet", 4), "cpu", budget_s=0.2)
    assert choice == untuned(model, recipe, "cpu") and choice.gain == 1.0 and choice.measured == {}
    assert len(calls) == 2, "the default's warm-up only: a first call and one timed step"


def test_candidates_beyond_the_budget_are_not_probed_most_likely_first(monkeypatch):
    _slow_steps(monkeypatch, 0.02)
    model = _model("lenet")
    recipe = zoo.get_spec("lenet").recipe
    cands = eager_candidates(model, recipe, _batch("lenet", 2)[0], "cpu")
    assert [tune.changes(c, cands[0]) for c in cands] == sorted(tune.changes(c, cands[0]) for c in cands)
    # Each candidate needs ~2 warm steps + 3 rounds of one step: 0.6 s holds the default and about two more.
    choice = autotune(model, recipe, *_batch("lenet", 4), "cpu", budget_s=0.6)
    assert 2 <= len(choice.measured) < len(cands)
    assert list(choice.measured) == [c.label for c in cands[:len(choice.measured)]]


def test_compile_is_not_probed_when_the_budget_cannot_hold_its_least_cost(monkeypatch):
    monkeypatch.setattr(tune.torch, "compile", lambda *a, **k: pytest.fail("the budget cannot hold a compile"))
    model = _model("mlp")
    recipe = zoo.get_spec("mlp").recipe
    # A long run, but a probe budget below COMPILE_MIN_S: the eager candidates only.
    choice = autotune(model, recipe, *_batch("mlp", 16), "cpu", steps_planned=10**9, budget_s=0.9 * tune.COMPILE_MIN_S)
    # How many eager candidates fit 1.8 s depends on the machine's speed; that compile never does is the rule.
    assert choice.compile is None and choice.compile_s is None
    assert not any("compile" in label for label in choice.measured)


def test_compile_is_not_probed_when_its_timing_stage_cannot_fit_the_budget(monkeypatch):
    monkeypatch.setattr(tune.torch, "compile", lambda *a, **k: pytest.fail("a step this slow cannot time a compile"))
    monkeypatch.setattr(tune, "COMPILE_MIN_S", 0.1)  # only the stage's fit is in question here
    _slow_steps(monkeypatch, 0.05)  # 8 steps of 0.05 s need 0.4 s: more than 0.4 x a 0.5 s budget
    model = _model("mlp")
    recipe = zoo.get_spec("mlp").recipe
    choice = autotune(model, recipe, *_batch("mlp", 4), "cpu", steps_planned=10**9, budget_s=0.5)
    assert choice.compile is None and choice.compile_s is None
    assert tune.compile_stage_fits(0.05, 1.0) and not tune.compile_stage_fits(0.05, 0.99)


def test_compile_pays_only_when_planned_steps_save_more_than_it_costs():
    # 100 vs 125 samples/s at batch 10: 0.1 s vs 0.08 s per step, 0.02 s saved per step; a 30 s compile needs 1500 steps.
    assert not tune.compile_pays(100.0, 125.0, 30.0, 1499, 10)
    assert tune.compile_pays(100.0, 125.0, 30.0, 1501, 10)
    assert not tune.compile_pays(100.0, 90.0, 0.0, 10**9, 10), "a slower compiled step never pays"


def test_compile_probe_reports_its_cost_and_a_no_faster_compile_needs_a_real_gain(monkeypatch):
    monkeypatch.setattr(tune.torch, "compile", lambda net, mode=None: net)  # 'compiled' = the same model
    monkeypatch.setattr(tune, "COMPILE_MIN_S", 0.5)  # a 'compile' this cheap fits a short test's budget
    _slow_steps(monkeypatch, 0.0)  # steps that cost nothing: a loaded machine's step time cannot decide the stage
    model = _model("mlp")
    recipe = zoo.get_spec("mlp").recipe
    choice = autotune(model, recipe, *_batch("mlp", 16), "cpu", steps_planned=10**9, budget_s=1.5,
                      candidates=[tune.default_candidate(model, recipe, "cpu"), Candidate(compile="default")])
    assert "contiguous/fused/compile" in choice.measured and choice.compile_s is not None
    assert "contiguous/fused (compile stage)" in choice.measured
    if choice.compile:  # the same speed: chosen only on a noisy win above MIN_GAIN
        assert choice.gain > tune.MIN_GAIN


def test_choice_round_trips_through_dict_and_a_weights_only_load():
    choice = TuneChoice(channels_last=True, optimizer_impl="foreach", compile="default",
                        gain=1.25, measured={"contiguous/fused": 100.0, "channels_last/foreach": 125.0},
                        compile_s=3.5)
    assert TuneChoice.from_dict(choice.to_dict()) == choice
    buf = io.BytesIO()
    torch.save({"tune": choice.to_dict()}, buf)
    buf.seek(0)
    loaded = torch.load(buf, weights_only=True)
    assert TuneChoice.from_dict(loaded["tune"]) == choice
    assert choice.label == "channels_last/foreach/compile"


def test_from_dict_names_what_is_wrong():
    with pytest.raises(ValueError, match="unknown field"):
        TuneChoice.from_dict({"channels_last": True, "precision": "bf16"})
    with pytest.raises(ValueError, match="optimizer_impl"):
        TuneChoice.from_dict({"optimizer_impl": "magic"})


def test_step_options_keep_the_precision_the_caller_passed():
    model = _model("lenet")
    for precision in ("fp32", "bf16"):
        *_, opts = build_tuned(TuneChoice(channels_last=True), copy.deepcopy(model), zoo.get_spec("lenet").recipe,
                               "cpu", precision=precision)
        assert isinstance(opts, StepOptions) and opts.precision == precision and opts.channels_last


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_keeps_cudnn_benchmark_on_for_every_trial_and_the_run():
    """cuDNN's plan cache keeps the first plan per shape whatever the flag says later, so the flag is no candidate:
    on from the tuner's first trial (the default's) on, and after it."""
    model = _model("lenet")
    recipe = zoo.get_spec("lenet").recipe
    x, y = (t.cuda() for t in _batch("lenet", 64))
    cands = eager_candidates(model, recipe, x, "cuda")
    assert len(cands) == len(set(cands))  # no two candidates that differ only by the flag
    torch.backends.cudnn.benchmark = False
    seen = []
    real_step = tune.Trial.step

    def step(self):
        seen.append(torch.backends.cudnn.benchmark)
        real_step(self)

    tune.Trial.step = step
    try:
        choice = autotune(model.cuda(), recipe, x, y, "cuda", budget_s=1.0)
    finally:
        tune.Trial.step = real_step
    assert seen and all(seen) and torch.backends.cudnn.benchmark is True
    assert len(choice.measured) == len(cands)
    build_tuned(choice, copy.deepcopy(model), recipe, "cuda")
    assert torch.backends.cudnn.benchmark is True


def test_cudnn_benchmark_is_no_candidate_and_old_choices_still_load():
    model = _model("lenet")
    recipe = zoo.get_spec("lenet").recipe
    x, _ = _batch("lenet", 4)
    fields = {f.name for f in dataclasses.fields(Candidate)}
    assert "cudnn_benchmark" not in fields and "cudnn_benchmark" not in zoo.execution.IMPACT_ORDER
    assert all("cudnn" not in c.label for c in eager_candidates(model, recipe, x, "cpu"))
    old = {"channels_last": True, "optimizer_impl": "foreach", "compile": None, "cudnn_benchmark": True, "gain": 1.1}
    choice = TuneChoice.from_dict(old)  # a checkpoint written before the flag stopped being a choice
    assert (choice.channels_last, choice.optimizer_impl, choice.gain) == (True, "foreach", 1.1)
    assert "cudnn_benchmark" not in choice.to_dict()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_candidates_train_to_the_untuned_weights():
    base = _model("lenet").cuda()
    recipe = zoo.get_spec("lenet").recipe
    x, _ = _batch("lenet", 4)
    results = []
    for cand in eager_candidates(base, recipe, x.cuda(), "cuda"):
        model = copy.deepcopy(base)
        net, optimizer, opts = build_tuned(cand, model, recipe, "cuda")
        for i in range(5):
            train_step(net, optimizer, *(t.cuda() for t in _batch("lenet", 16, seed=i)), opts)
        results.append((cand.label, model.state_dict()))
    for label, state in results[1:]:
        for key, ref in results[0][1].items():
            assert torch.allclose(state[key], ref, rtol=1e-4, atol=1e-5), (label, key)


def test_a_run_too_short_to_pay_for_a_probe_keeps_the_reference_unprobed(monkeypatch):
    built = []
    real = tune.Trial.__init__

    def counting(self, cand, *args):
        built.append(cand.label)
        real(self, cand, *args)

    monkeypatch.setattr(tune.Trial, "__init__", counting)
    model = _model("lenet")
    recipe = zoo.get_spec("lenet").recipe
    choice = autotune(model, recipe, *_batch("lenet", 16), "cpu", steps_planned=4)
    assert choice == untuned(model, recipe, "cpu") and choice.measured == {} and choice.gain == 1.0
    assert built == ["contiguous/fused"], "only the reference's step time was taken"


@pytest.mark.slow
def test_reference_is_what_gain_divides_by_and_what_wins_ties(monkeypatch):
    _slow_steps(monkeypatch, 0.002)  # equal, known step times: a tie, whatever else runs on the machine
    model = _model("lenet")
    recipe = zoo.get_spec("lenet").recipe
    ref = Candidate(channels_last=True, optimizer_impl="fused")
    choice = autotune(model, recipe, *_batch("lenet", 16), "cpu", budget_s=3.0, reference=ref,
                      candidates=[ref, Candidate(channels_last=True, optimizer_impl="forloop")])
    assert list(choice.measured) == ["channels_last/fused", "channels_last/forloop"]
    assert choice.channels_last
    assert choice.gain == pytest.approx(choice.measured[choice.label] / choice.measured["channels_last/fused"])


# ---------------------------------------------------------------------------------------------------------------
# python -m zoo.train --tune


def _fake_tuner(monkeypatch, choice: TuneChoice) -> list[dict]:
    import zoo.loop

    calls = []

    def fake(model, recipe, x, y, device, **kwargs):
        calls.append(kwargs)
        return choice

    monkeypatch.setattr(zoo.loop, "autotune", fake)
    return calls


def _metrics(run_dir) -> list[dict]:
    import json

    with open(f"{run_dir}/metrics.jsonl") as f:
        return [json.loads(line) for line in f]


def test_train_stores_the_choice_and_a_resume_reuses_it_without_probing(small_cfg, monkeypatch):
    from zoo.checkpoint import load_checkpoint
    from zoo.loop import fit

    tuned = TuneChoice(channels_last=True, optimizer_impl="forloop", gain=1.3,
                       measured={"contiguous/fused": 100.0, "channels_last/forloop": 130.0})
    calls = _fake_tuner(monkeypatch, tuned)
    first = fit(small_cfg("lenet", epochs=1))
    assert len(calls) == 1 and calls[0]["precision"] == "fp32" and calls[0]["steps_planned"] == 4
    second = fit(small_cfg("lenet", epochs=2, resume=True))
    assert len(calls) == 1, "a resumed run reuses the checkpoint's choice"
    for path in (first["last"], second["last"]):
        ckpt = load_checkpoint(path)
        assert TuneChoice.from_dict(ckpt["tune"]) == tuned
        assert ckpt["optimizer"]["param_groups"][0]["foreach"] is False  # the chosen kernel ran
    assert [TuneChoice.from_dict(line["tune"]) for line in _metrics(second["run_dir"])] == [tuned, tuned]


def test_tune_off_trains_the_untuned_configuration(small_cfg, monkeypatch):
    from zoo.checkpoint import load_checkpoint
    from zoo.loop import fit

    calls = _fake_tuner(monkeypatch, TuneChoice(channels_last=True))
    out = fit(small_cfg("lenet", tune="off"))
    assert calls == []
    ckpt = load_checkpoint(out["last"])
    assert TuneChoice.from_dict(ckpt["tune"]) == untuned(_model("lenet"), zoo.get_spec("lenet").recipe, "cpu")
    assert ckpt["optimizer"]["param_groups"][0]["fused"] is True and ckpt["config"]["tune"] == "off"
    assert _metrics(out["run_dir"])[0]["tune"]["channels_last"] is False


def test_auto_on_a_run_too_short_to_pay_keeps_the_defaults(small_cfg):
    from zoo.loop import fit

    out = fit(small_cfg("lenet"))  # 4 steps: far below what a probe costs
    line = _metrics(out["run_dir"])[0]
    assert TuneChoice.from_dict(line["tune"]) == untuned(_model("lenet"), zoo.get_spec("lenet").recipe, "cpu")


def test_explicit_channels_last_and_compile_are_kept_and_not_probed(small_cfg, monkeypatch):
    from zoo.loop import fit

    calls = _fake_tuner(monkeypatch, TuneChoice(channels_last=True, optimizer_impl="foreach"))
    monkeypatch.setattr(tune.torch, "compile", lambda net, mode=None: net)
    out = fit(small_cfg("lenet", channels_last=True, compile="default"))
    assert all(c.channels_last for c in calls[0]["candidates"]) and calls[0]["probe_compile"] is False
    assert calls[0]["reference"].channels_last
    choice = TuneChoice.from_dict(_metrics(out["run_dir"])[0]["tune"])
    assert (choice.channels_last, choice.optimizer_impl, choice.compile) == (True, "foreach", "default")


def test_resume_keeps_the_run_tune_mode_and_refuses_a_different_one(small_cfg, monkeypatch):
    from zoo.errors import UserError
    from zoo.loop import fit

    calls = _fake_tuner(monkeypatch, TuneChoice(optimizer_impl="forloop"))
    fit(small_cfg("mlp", tune="off"))
    out = fit(small_cfg("mlp", epochs=2, resume=True))  # no flag: the run's own "off", no probe
    assert calls == [] and [line["tune"]["optimizer_impl"] for line in _metrics(out["run_dir"])] == ["fused"] * 2
    fit(small_cfg("lenet"))
    with pytest.raises(UserError, match="--tune off differs"):
        fit(small_cfg("lenet", epochs=2, resume=True, tune="off"))


def test_a_winner_must_beat_the_reference_in_most_rounds_not_only_in_its_median():
    def trial(rates):
        t = tune.Trial.__new__(tune.Trial)
        t.rates = rates
        return t

    ref = trial([100.0, 100.0, 100.0, 100.0, 100.0])
    lucky = trial([50.0, 50.0, 150.0, 150.0, 150.0])  # median 1.5x, but loses 2 of 5 rounds
    steady = trial([110.0, 90.0, 110.0, 110.0, 110.0])  # median 1.1x, wins 4 of 5
    assert tune.pick_fastest([ref, lucky]) is ref
    assert tune.pick_fastest([ref, steady]) is steady
    assert tune.pick_fastest([ref, trial([101.0] * 5)]) is ref, "within MIN_GAIN: the reference stays"


def test_the_probe_warms_each_window_of_several_steps_as_the_bench_rows_do(monkeypatch):
    """A window that follows another trial's runs one untimed step first (bench.phases.train.rounds does the same),
    so the probe and the row that runs its choice time steady back-to-back steps alike."""
    from zoo import tune as tune_mod

    now = [0.0]
    monkeypatch.setattr(tune_mod.time, "perf_counter", lambda: now[0])

    class Stub:
        def __init__(self):
            self.device, self.y, self.step_s, self.steps, self.rates = torch.device("cpu"), torch.zeros(4), 0.01, 1, []
            self.calls, self.timed = 0, []

        def step(self):
            self.calls += 1
            now[0] += 0.01

        def median(self):
            return sorted(self.rates)[len(self.rates) // 2]

    trials = [Stub(), Stub()]
    tune_mod.time_interleaved(trials, budget_s=0.5)
    for t in trials:
        windows = len(t.rates)
        assert t.steps > 1 and t.calls == windows * t.steps + windows  # one warm step per window
