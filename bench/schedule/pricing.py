"""The pricing pass: what the planned rows cost on THIS machine, measured after the machine probes and before any
row, so the plan can be fitted to ``--budget`` (bench.schedule.budget.fit) and the ETA rests on this machine's speed.

Per model (``ModelPrices``): building it (seeded init), one training step at the recipe's batch and one eager forward
call per inference batch size, each the median of PRICE_CALLS timed calls after one warm call. A batch above
PRICE_MAX_BATCH (64) is timed at PRICE_MAX_BATCH and scaled by the batch ratio (per-sample cost is flat or falling with the
batch on these models, so the price errs high). The pass is short on purpose (a few seconds per model on a loaded
2-core CPU): the run corrects its prices from what finished pairs took. Per run: a torchrun start-up, priced as
TORCHRUN_IMPORTS x this process's own start-up (interpreter and imports: torchrun's launcher and each worker pay the
same again) plus a second of rendezvous, when the scale phase is planned.

One-off builds that would cost more to price than to run (torch.compile, ONNX export, int8 calibration, OpenVINO
conversion, plots) are estimated from what they do (``Prices.build_for``): a fixed part (BUILD_S, seconds seen on the
2-core CPU that made results/cpu/) plus a part that grows with the model, its parameters (BUILD_S_PER_MPARAM:
serialising, converting and quantizing weights) and the forward samples the build runs (BUILD_FORWARD_SAMPLES: int8
calibration, at this machine's measured seconds per sample). The fixed and per-parameter parts are scaled by this
machine's ``speed`` (its single-thread calibration matmul against that machine's, REF_CALIBRATION_MS). One price per
build for every model priced an MLP's int8 quantization (0.3 s) like AlexNet's (16 s): the small models' backend rows
were dropped for seconds they never cost. Every price is then corrected by what the run's finished pairs really took
(bench.schedule.budget.Budget.ratio).
"""
from __future__ import annotations

import copy
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

import zoo
from bench.context import example_batch
from bench.model.flops import zoo_flops
from bench.schedule.calibration import load_prices

PRICE_CALLS = 3  # timed calls per price (fewer when they pass PRICE_CAP_S): their median
PRICE_CAP_S = 1.0
# Priced at up to the recipes' own batch (64): per-sample cost falls steeply below it (AlexNet-MNIST's training step
# costs 84 ms a sample at batch 16, 29 at 64, 17 at 512 on a 2-core AVX2 EPYC), so scaling up from 16 priced its
# batch-512 step ~5x high and the plan dropped rows that fit; from 64 it errs ~1.7x high.
PRICE_MAX_BATCH = 64
# Machine-dependent constants (bench.schedule.calibration): seconds one-off builds took on the machine the calibration
# file names, a fixed part (the smallest model's first use in the process: imports, kernel caches), a part per million
# parameters (serialising, converting, quantizing weights) and the forward samples a build runs (int8 static
# calibration: ort_int8's 512 samples through ORT's augmented graph, ~6x a plain forward each), scaled by ``speed``.
CALIBRATION = load_prices()
REF_CALIBRATION_MS = CALIBRATION.calibration_matmul_fp32_256_ms
BUILD_S = CALIBRATION.build_s
BUILD_S_PER_MPARAM = CALIBRATION.build_s_per_mparam
BUILD_FORWARD_SAMPLES = CALIBRATION.build_forward_samples
PRICING_SHARE = 0.1  # of --budget: the most the pass spends measuring; models past it are priced from their FLOPs
TORCHRUN_IMPORTS = 2.0  # a torchrun launch starts two interpreters that import torch: the launcher and the rank
TORCHRUN_RENDEZVOUS_S = 1.0
# The interpreter's exit after the last file is written (finalising torch, ONNX Runtime, OpenVINO and Inductor) is
# part of the command's seconds too: 2.8-8.7 s here, 0.4-0.7x the process's own start-up (5.2 s after a 7.2 s
# start-up at load 1.8; 8.7 s after 21.4 s on one shared core), so the reserve holds EXIT_PER_IMPORT x that start-up.
EXIT_PER_IMPORT = 0.7
SERVE_SIZES = [1, 64]  # the serve phase's batch-1 queries and Offline batches (bench.schedule.serve_cost)


@dataclass
class ModelPrices:
    build_s: float  # the model's seeded init
    train_step_s: float | None = None  # one fast-path training step at the recipe's (or --quick's) batch
    forward_s: dict[int, float] = field(default_factory=dict)  # eager forward, per inference batch size
    sample_s: float | None = None  # one sample of an eager forward at PRICE_MAX_BATCH (accuracy passes)
    params: int = 0  # its parameters (what weight-sized builds scale with)


@dataclass
class Prices:
    """What this machine charges: per model, per run (torchrun start-up), and the one-off build factor."""

    models: dict[str, ModelPrices] = field(default_factory=dict)
    speed: float = 1.0  # this machine's single-thread time over REF_CALIBRATION_MS (2.0: half as fast)
    torchrun_s: float | None = None
    pricing_s: float = 0.0  # what the pass itself took
    estimated: list[str] = field(default_factory=list)  # models priced from their FLOPs (the pass ran out of time)

    def build(self, what: str) -> float:
        """A one-off that does not depend on the model (plots, a torchrun start-up, the tuner), on this machine."""
        return BUILD_S[what] * self.speed

    def build_for(self, what: str, model: str) -> float:
        """A model's one-off build (see the module doc): fixed + per million parameters + its forward samples."""
        mp = self.models.get(model)
        params_m = (mp.params if mp else 0) / 1e6
        forwards = BUILD_FORWARD_SAMPLES.get(what, 0) * ((mp.sample_s if mp else None) or 1e-3)
        return (BUILD_S[what] + BUILD_S_PER_MPARAM.get(what, 0.0) * params_m) * self.speed + forwards

    def to_dict(self) -> dict[str, Any]:
        return {"speed": round(self.speed, 3), "torchrun_s": self.torchrun_s and round(self.torchrun_s, 2),
                "pricing_s": round(self.pricing_s, 1), "estimated_from_flops": list(self.estimated),
                "models": {m: {k: v for k, v in asdict(p).items()} for m, p in self.models.items()}}


def median_s(fn: Callable[[], Any], calls: int = PRICE_CALLS) -> float:
    fn()  # warm: first-call costs (allocator, kernel selection) are the builds' business
    times: list[float] = []
    while len(times) < calls and sum(times) < PRICE_CAP_S:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)  # a loaded machine's one descheduled call must not price the whole plan


def speed_factor(calibration: dict[str, Any]) -> float:
    """This machine's calibration matmul median over the reference machine's, within [0.5, 20] (1.0 unknown)."""
    probe = (calibration.get("probes") or {}).get("matmul_fp32_256") or {}
    ms = probe.get("median_ms")
    return min(20.0, max(0.5, ms / REF_CALIBRATION_MS)) if isinstance(ms, (int, float)) and ms > 0 else 1.0


def price_model(name: str, ctx, train: bool, infer_sizes: list[int]) -> ModelPrices:
    """Build, one training step, one forward per batch size (scaled above PRICE_MAX_BATCH); see the module doc."""
    from zoo.engine import StepOptions, build_optimizer, train_step

    spec = zoo.get_spec(name)
    t0 = time.perf_counter()
    torch.manual_seed(ctx.seed)
    model = zoo.get_model(name, **({"pretrained": "off"} if spec.uses_pretrained else {})).to(ctx.device)
    prices = ModelPrices(build_s=time.perf_counter() - t0, params=sum(p.numel() for p in model.parameters()))
    sync = ctx.sync
    with torch.inference_mode():
        model.eval()
        for bs in sorted(set(infer_sizes) | {min(PRICE_MAX_BATCH, max(infer_sizes or [1]))}):
            b = min(bs, PRICE_MAX_BATCH)
            x = example_batch(name, b, ctx.device)
            prices.forward_s[bs] = median_s(lambda x=x: (model(x), sync())) * bs / b
        b = min(PRICE_MAX_BATCH, max(infer_sizes or [1]))
        prices.sample_s = prices.forward_s[b] / b
    if train:
        bs = ctx.train_batch_size(name)
        b = min(bs, PRICE_MAX_BATCH)
        net = copy.deepcopy(model).train()
        optimizer = build_optimizer(spec.recipe, net, fused=True)
        x, y = example_batch(name, b, ctx.device), torch.zeros(b, dtype=torch.int64, device=ctx.device)
        opts = StepOptions(ctx.device)
        prices.train_step_s = median_s(lambda: (train_step(net, optimizer, x, y, opts), sync())) * bs / b
        del net, optimizer
    return prices


def by_flops(name: str, ctx, like: tuple[str, ModelPrices]) -> ModelPrices:
    """A model priced from a measured one's seconds per FLOP (forward and training step) and build per parameter."""


    ref_name, ref = like
    (fwd, train), (ref_fwd, ref_train) = zoo_flops(name), zoo_flops(ref_name)
    f, t = fwd / ref_fwd, (train * ctx.train_batch_size(name)) / (ref_train * ctx.train_batch_size(ref_name))
    return ModelPrices(build_s=ref.build_s * max(1.0, f), train_step_s=ref.train_step_s and ref.train_step_s * t,
                       forward_s={bs: (ref.sample_s or 1e-3) * f * bs for bs in ctx.infer_batch_sizes(name)},
                       sample_s=(ref.sample_s or 1e-3) * f, params=param_count(name))


def param_count(name: str) -> int:
    """A model's parameters, counted on the meta device (no memory, no init); 0 when it cannot be built there."""
    spec = zoo.get_spec(name)
    try:
        with torch.device("meta"):
            model = zoo.get_model(name, **({"pretrained": "off"} if spec.uses_pretrained else {}))
    except Exception:  # noqa: BLE001 - a price, not a result: the per-parameter part is then left out
        return 0
    return sum(p.numel() for p in model.parameters())


def price_run(ctx, phases: list, calibration: dict[str, Any], say: Callable[[str], None] = lambda s: None,
              import_s: float | None = None) -> Prices:
    """The whole pricing pass for ctx.models x phases (what they need: train steps, forward calls, torchrun);
    ``import_s``: this process's start-up before the probes (interpreter and imports). Models are measured lightest
    first (FLOPs) for at most PRICING_SHARE of the budget; the rest are priced from the heaviest measured one."""


    t0 = time.perf_counter()
    names = {p.name for p in phases}
    prices = Prices(speed=speed_factor(calibration))
    limit_s = PRICING_SHARE * ctx.budget_s if ctx.budget_s else None
    measured: list[str] = []
    for m in sorted(ctx.models, key=lambda n: zoo_flops(n)[1] * ctx.train_batch_size(n)):
        if measured and limit_s is not None and time.perf_counter() - t0 > limit_s:
            prices.models[m] = by_flops(m, ctx, (measured[-1], prices.models[measured[-1]]))
            continue
        say(f"pricing {m}")
        try:
            prices.models[m] = price_model(m, ctx, train=bool(names & {"train", "scale"}),
                                           infer_sizes=ctx.infer_batch_sizes(m) + SERVE_SIZES * ("serve" in names))
            measured.append(m)
        except Exception:  # noqa: BLE001 - a model that cannot be priced gets the phases' fallbacks; its run says why
            prices.models[m] = ModelPrices(build_s=1.0)
    prices.estimated = [m for m in ctx.models if m not in measured]
    if "scale" in names and import_s:
        prices.torchrun_s = TORCHRUN_IMPORTS * import_s + TORCHRUN_RENDEZVOUS_S
    prices.pricing_s = time.perf_counter() - t0
    return prices


def plan_budget(ctx, env, selected: list, progress, started: float,
                import_s: float | None = None) -> None:
    """The pricing pass, the fitted plan (ctx.budget, ctx.prices) and its lines before any measurement."""
    from bench.plan import DEFAULT_BACKENDS
    from bench.schedule.budget import Budget
    from bench.schedule.headlines import mark_rows
    from bench.schedule.rows import plan_lines, priced_rows

    env.notes["prices_from"] = CALIBRATION.provenance()  # which machine's build seconds priced this run
    ctx.prices = price_run(ctx, selected, env.calibration, import_s=import_s,
                           say=lambda text: setattr(ctx, "activity", text))
    ctx.activity = None
    rows, groups, reserve_s = priced_rows(ctx, selected, ctx.prices)
    rows = mark_rows(rows, {m: ctx.train_batch_size(m) for m in ctx.models}, DEFAULT_BACKENDS.get(ctx.device.type))
    reserve_s += EXIT_PER_IMPORT * (import_s or 0.0)
    ctx.budget = Budget(ctx.budget_s, rows, groups, reserve_s=reserve_s, elapsed=lambda: time.time() - started)
    env.notes["prices"] = ctx.prices.to_dict()
    env.notes["budget"] = ctx.budget.summary()
    env.notes["first_eta_s"] = round(ctx.budget.eta_s(), 1)
    env.notes["first_eta_at_s"] = round(time.time() - started, 1)
    for line in plan_lines(ctx.budget, ctx) + headline_lines(ctx.budget):
        progress.message(line)
    progress.eta = ctx.budget.eta_s


def headline_lines(budget) -> list[str]:
    """What the plan says of the headline questions: a budget too small for every headline at its floor says so at
    the start, with the budget that would hold them."""
    need = budget.headline_budget_s()
    if need is None:
        heads = sum(1 for r in budget.rows if r.headline)
        return [f"  headlines: all {heads} headline rows planned first (H1 fast vs tutorial_loop, H2 backends at batch "
                f"1 and the recipe's, H3 parity), at {100 * budget.first.flex_headline:.0f}% of their flexible part"]
    lost = sorted(r.name for r in budget.first_dropped.values() if r.headline)
    return [f"  headlines: --budget {budget.total_s:.0f} s cannot hold every headline at its floor; {len(lost)} "
            f"headline rows dropped ({', '.join(lost[:4])}{' ...' if len(lost) > 4 else ''}); --budget {need:.0f} "
            f"would hold them all"]
