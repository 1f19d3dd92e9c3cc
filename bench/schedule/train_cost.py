"""The training phase's rows priced on this machine (bench.schedule.budget.RowCost), their names in the plan, and the size of
a row's train split under a budget.

A row's floor is its build (its split, its first step, a compile when it compiles, the tuner's least for ``fast``),
one steady step, the window-sizing probe and MIN_WINDOWS windows of at least one step; its full size has MAX_WINDOWS
windows of WINDOW_S (MIN_WINDOWS when one step outlasts a window). Rows on the tutorial's DataLoader also pay its
per-sample transforms. The drop order: variants first, then the ladder's middle rungs, then the rest.
"""
from __future__ import annotations

import inspect
import math
from typing import Any

import zoo
from bench.records import TRAIN_LADDER
from bench.schedule.budget import TIER_CORE, TIER_LADDER, TIER_VARIANT, RowCost
from bench.schedule.headlines import headline_of
from zoo.data import DATASETS, FastLoader

# Under a budget a row's split holds the steps its seconds can use (at least MIN_SPLIT_STEPS: building a synthetic
# AlexNet split of 400 x 512 samples took 28 s on a loaded 2-core CPU), but never so few samples that the fast loader
# would pre-transform a split it streams at full size: the row then measures the same data path.
MIN_SPLIT_STEPS = 32
PRETRANSFORM_BYTES = inspect.signature(FastLoader.__init__).parameters["precompute_bytes"].default
TUTORIAL_ROWS = ("tutorial_loop", "fused_optimizer", "no_host_read")  # on the tutorial's DataLoader
MIDDLE_RUNGS = ("fused_optimizer", "no_host_read", "fast_untuned")  # dropped before the ladder's ends
FALLBACK_STEP_S = 1.0  # a model the pricing pass could not step


def row_label(plan: Any) -> str:
    """The row's name in the run's plan: its rung and variant, as TrainRecord.describe() words them."""
    parts = [plan.row, "" if plan.precision == "fp32" else plan.precision,
             "channels_last" if plan.channels_last else "", f"compile={plan.compile}" if plan.compile else ""]
    return " ".join(p for p in parts if p)


def split_steps(name: str, ctx: Any, row_s: float | None, most: int) -> int:
    """Batches in a row's train split: ``most``, or under a budget what ``row_s`` seconds can step (the priced
    step), within [MIN_SPLIT_STEPS, most] and never below the fast loader's pre-transform line."""
    step_s = getattr((ctx.prices.models.get(name) if ctx.prices else None), "train_step_s", None)
    if row_s is None or not step_s:
        return most
    spec, bs = zoo.get_spec(name), ctx.train_batch_size(name)
    steps = max(MIN_SPLIT_STEPS, int(row_s / step_s) + 8)
    sample_bytes = 4 * math.prod(spec.input_shape)
    if DATASETS[spec.dataset][2][0] * sample_bytes > PRETRANSFORM_BYTES:  # streamed at full size: stay streamed
        steps = max(steps, PRETRANSFORM_BYTES // (sample_bytes * bs) + 1)
    return min(most, steps)


def _tier(plan: Any, index: int) -> int:
    if index >= len(TRAIN_LADDER):
        return TIER_VARIANT
    return TIER_LADDER if plan.row in MIDDLE_RUNGS else TIER_CORE


def price_rows(name: str, ctx: Any, prices: Any, plans: list, sizes: dict[str, Any]) -> tuple[list[RowCost], dict]:
    """Every row of ``plans`` priced (``sizes``: the phase's MIN_WINDOWS, MAX_WINDOWS, WINDOW_S, MIN_WINDOW_S,
    TUNE_MIN_S, TUNE_BUDGET_S, STEPS_PER_SPLIT for this run's mode)."""
    mp = prices.models.get(name)
    step_s = (mp.train_step_s if mp else None) or FALLBACK_STEP_S
    bs = ctx.train_batch_size(name)
    group = f"{name} train template"
    groups = {group: mp.build_s if mp else 1.0}
    rows = []
    for i, plan in enumerate(plans):
        s = step_s + (bs * prices.build("tutorial_sample") if plan.row in TUTORIAL_ROWS else 0.0)
        loader_s = prices.build("loader_per_1k_samples") * bs / 1000
        once = 2 * s + (prices.build_for("compile_train", name) if plan.compile else 0.0) + 3 * s  # build, steady, probe
        tune = plan.row == "fast"
        floor = once + loader_s * MIN_SPLIT_STEPS + (sizes["TUNE_MIN_S"] if tune else 0.0) + \
            sizes["MIN_WINDOWS"] * max(s, sizes["MIN_WINDOW_S"])
        windows = sizes["MIN_WINDOWS"] if s >= sizes["WINDOW_S"] else sizes["MAX_WINDOWS"]
        # H1's two rows go on in interleaved rounds to a precision (bench.phases.train.rounds): at full size as
        # many windows again, a share the budget grants headlines first; their floor stays the sample rule's.
        rounds = windows * (2 if headline_of(name, "train", plan.key_fields()) else 1)
        full = once + loader_s * sizes["STEPS_PER_SPLIT"] + (sizes["TUNE_BUDGET_S"] if tune else 0.0) + \
            rounds * max(s, sizes["WINDOW_S"])
        rows.append(RowCost(name, "train", row_label(plan), floor, max(floor, full), _tier(plan, i), (group,),
                            {"batch_size": bs, **plan.key_fields()}))
    return rows, groups
