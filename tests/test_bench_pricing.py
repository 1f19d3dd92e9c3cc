"""The pricing pass's estimates of one-off builds: a fixed part scaled by the machine's speed, plus what grows with the
model (its parameters, the forward samples a build runs), so a small model's backend rows are not priced like
AlexNet's. No test reads the clock: prices are given."""
from __future__ import annotations

import pytest
import torch

import zoo
from bench.context import BenchContext
from bench.phases import PHASES
from bench.schedule import rows as schedule_rows
from bench.schedule.pricing import (
    BUILD_FORWARD_SAMPLES,
    BUILD_S,
    BUILD_S_PER_MPARAM,
    ModelPrices,
    Prices,
    param_count,
)


def prices_of(**models: tuple[int, float]) -> Prices:
    """name -> (parameters, seconds per forward sample)."""
    return Prices(models={m: ModelPrices(build_s=0.1, train_step_s=0.05, forward_s={1: s, 64: 64 * s}, sample_s=s,
                                         params=n) for m, (n, s) in models.items()}, speed=2.0)


def test_a_build_is_its_fixed_part_plus_its_parameters_both_at_this_machines_speed():
    p = prices_of(small=(200_000, 1e-4), big=(60_000_000, 1e-4))
    for what in ("onnx_export", "openvino", "int8_dynamic", "compile_infer"):
        assert p.build_for(what, "small") == pytest.approx(2.0 * (BUILD_S[what] + 0.2 * BUILD_S_PER_MPARAM[what]))
        assert p.build_for(what, "big") == pytest.approx(2.0 * (BUILD_S[what] + 60 * BUILD_S_PER_MPARAM[what]))
        assert p.build_for(what, "big") > p.build_for(what, "small")
    assert p.build_for("plots", "small") == p.build("plots") == 2.0 * BUILD_S["plots"]  # nothing model-sized


def test_int8_calibration_is_priced_from_the_models_measured_forward_cost():
    slow, fast = prices_of(m=(1_000_000, 5e-3)), prices_of(m=(1_000_000, 1e-4))
    extra = slow.build_for("int8_quantize", "m") - fast.build_for("int8_quantize", "m")
    assert extra == pytest.approx(BUILD_FORWARD_SAMPLES["int8_quantize"] * (5e-3 - 1e-4))  # not scaled by speed


def test_the_calibration_price_follows_the_backends_own_sample_count():
    ort_int8 = pytest.importorskip("bench.backends.ort_int8")
    assert BUILD_FORWARD_SAMPLES["int8_quantize"] % ort_int8.CALIBRATION_SAMPLES == 0


def test_parameters_counted_on_the_meta_device_match_a_real_build():
    for name in ("mlp", "lenet", "alexnet_transfer"):
        spec = zoo.get_spec(name)
        real = zoo.get_model(name, **({"pretrained": "off"} if spec.uses_pretrained else {}))
        assert param_count(name) == sum(p.numel() for p in real.parameters()) > 0


def test_a_small_models_backends_cost_a_fraction_of_alexnets_in_the_plan():
    ctx = BenchContext(device=torch.device("cpu"), models=["lenet", "alexnet_mnist"], phases=["infer"], threads=2,
                       backends=["eager", "onnxruntime", "onnxruntime-int8:int8", "openvino"], synthetic=True,
                       budget_s=120.0)
    prices = prices_of(lenet=(param_count("lenet"), 2e-4), alexnet_mnist=(param_count("alexnet_mnist"), 4e-3))
    _, groups, _ = schedule_rows.priced_rows(ctx, [PHASES["infer"]], prices)
    for backend in ("onnxruntime-int8:int8", "openvino"):
        small, big = groups[f"lenet infer {backend}"], groups[f"alexnet_mnist infer {backend}"]
        assert small < big / 3, (backend, small, big)
    assert groups["lenet onnx export"] < groups["alexnet_mnist onnx export"]


def test_the_reserve_holds_the_interpreters_exit_in_proportion_to_its_start_up(monkeypatch):
    from types import SimpleNamespace

    from bench.schedule.pricing import EXIT_PER_IMPORT, plan_budget

    monkeypatch.setattr("bench.schedule.pricing.price_run",
                        lambda ctx, phases, calibration, say, import_s: prices_of(lenet=(param_count("lenet"), 2e-4)))

    def run_with(import_s):
        ctx = BenchContext(device=torch.device("cpu"), models=["lenet"], phases=["infer"], threads=2,
                           backends=["eager"], synthetic=True, budget_s=120.0)
        env = SimpleNamespace(calibration={}, notes={})
        progress = SimpleNamespace(message=lambda line: None, eta=None)
        plan_budget(ctx, env, [PHASES["infer"]], progress, started=0.0, import_s=import_s)
        return ctx.budget.reserve_s

    assert run_with(10.0) - run_with(0.0) == pytest.approx(EXIT_PER_IMPORT * 10.0)


def test_a_backend_that_builds_per_shape_pays_its_build_in_every_row():
    from bench.backends import BACKENDS

    # compile runs wherever torch does (CI installs no OpenVINO, whose rows would be priced 0 as not runnable)
    ctx = BenchContext(device=torch.device("cpu"), models=["lenet"], phases=["infer"], threads=2,
                       backends=["eager", "compile"], batch_sizes=[1, 64], synthetic=True, budget_s=120.0)
    prices = prices_of(lenet=(param_count("lenet"), 2e-4))
    rows, _, _ = schedule_rows.priced_rows(ctx, [PHASES["infer"]], prices)
    floor = {r.label: r.floor_s for r in rows}
    build = prices.build_for("compile_infer", "lenet")
    for bs in (1, 64):  # a static graph per batch size, compiled in bind
        assert floor[f"compile b={bs}"] == pytest.approx(floor[f"eager b={bs}"] + build)
    per_shape = {name for name, cls in BACKENDS.items() if cls.builds_per_shape}
    assert {"compile", "openvino"} <= per_shape and not {"openvino-dynamic", "onnxruntime", "eager"} & per_shape
