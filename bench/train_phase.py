"""Training throughput: the seeds' own loop against the shared loop's two loaders and the compute-only bound.

Rows (``loader``):
- ``seed``: the tutorials' loop as they wrote it: DataLoader with per-sample transforms, default memory format, and a
  host read of loss and accuracy every step (``loss.item()``, as seeds 000/001/002 do).
- ``tutorial``: the shared loop's step (no per-step host sync) fed by the same DataLoader.
- ``fast``: the shared loop's step fed by the device-resident FastLoader.
- ``compute``: the same step on one batch already on the device: what the step costs with no data path at all.
Each figure is the median over timed windows after warm-up, with the IQR across windows.
"""
from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

import zoo
from bench.common import BenchContext, PeakMemory, failure, flops_per_sample, record
from zoo.data import make_loaders
from zoo.engine import StepOptions, StepStats, build_optimizer, synchronize, train_step

LOADER_ROWS = ("seed", "tutorial", "fast", "compute")


def _batches_forever(loader) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    for epoch in itertools.count():
        yield from loader.batches(epoch)


def _host_batches_forever(loader) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """A TutorialLoader's DataLoader as the tutorials iterate it: CPU batches, the loop copies them itself."""
    for epoch in itertools.count():
        loader.sampler.set_epoch(epoch)
        yield from loader.loader


def _seed_step(model, optimizer, x, y, device) -> None:
    """The tutorials' loop body, host reads included (seed 000: loss.cpu().item() and acc every step)."""
    x, y = x.to(device), y.to(device)
    outputs = model(x)
    loss = F.cross_entropy(outputs, y)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    loss.item()
    outputs.argmax(1).eq(y).float().mean().item()


def _time_windows(step, device: torch.device, batch_size: int, *, quick: bool) -> dict[str, Any]:
    """Warm up, size windows to ~0.5 s (0.15 s quick), time them; samples/s median and IQR over windows.

    Slow steps get fewer, one-step windows: the spread across windows still shows.
    """
    synchronize(device)
    t = time.perf_counter()
    step()  # the first call pays one-off costs (allocator growth, kernel selection)
    synchronize(device)
    one = max(time.perf_counter() - t, 1e-6)
    # Warm-up by count and time, then time one more step to size the windows. Slow steps (AlexNet at batch 512
    # on a CPU takes seconds) skip it: their one-off costs are small against a step. --quick sizes from the first.
    warm_steps, warm_s = (0, 0.05) if quick else (2, 0.5)
    if one < (0.05 if quick else 2.0):
        t = time.perf_counter()
        done = 0
        while done < warm_steps or time.perf_counter() - t < warm_s:
            step()
            done += 1
        synchronize(device)
        if not quick:
            t = time.perf_counter()
            step()
            synchronize(device)
            one = max(time.perf_counter() - t, 1e-6)
    target = 0.15 if quick else 0.5
    steps = max(1, round(target / one))
    windows = 3 if quick or one > 2.0 else 7
    rates = []
    for _ in range(windows):
        synchronize(device)
        t = time.perf_counter()
        for _ in range(steps):
            step()
        synchronize(device)
        rates.append(steps * batch_size / (time.perf_counter() - t))
    q1, med, q3 = np.percentile(rates, [25, 50, 75])
    return {"samples_per_s": float(med), "samples_per_s_iqr": float(q3 - q1), "windows": windows,
            "steps_per_window": steps}


def _steps_needed(quick: bool) -> int:
    """An upper bound on steps one row consumes, to size the data split (windows * steps + warm-up)."""
    return 40 if quick else 400


def measure_training(name: str, ctx: BenchContext, *, precisions: tuple[str, ...] = ("fp32",),
                     extra_variants: tuple[dict[str, Any], ...] = (), batch_size: int | None = None,
                     rows: tuple[str, ...] = LOADER_ROWS) -> list[dict[str, Any]]:
    """Phase "train" records for one model: every row in ``rows`` at fp32, then the compute bound for each extra
    precision and each variant (e.g. ``{"channels_last": True}``, ``{"compile": "default"}``)."""
    spec = zoo.get_spec(name)
    device = ctx.device
    # --quick is a smoke run of every path: small batches, recorded in each row (never a silent change of a full run).
    bs = batch_size or (min(spec.recipe.batch_size, 32) if ctx.quick else spec.recipe.batch_size)
    real = ctx.uses_real_data(name)
    train_flops = None
    out: list[dict[str, Any]] = []
    base = {"batch_size": bs, "data": "real" if real else "synthetic", "quick": ctx.quick}

    def new_model():
        torch.manual_seed(ctx.seed)
        kwargs = {"pretrained": "off"} if spec.uses_pretrained else {}
        return zoo.get_model(name, **kwargs).to(device).train()

    def loaders(kind: str):
        # Enough samples for the timed steps, but never the whole 60k split when a few hundred batches suffice.
        n = bs * _steps_needed(ctx.quick)
        return make_loaders(spec, loader=kind, device=device, root=ctx.data_root, synthetic=not real,
                            batch_size=bs, seed=ctx.seed, train_samples=n, test_samples=1).train

    def run_row(loader_name: str, precision: str = "fp32", channels_last: bool = False,
                compile_mode: str | None = None) -> dict[str, Any]:
        nonlocal train_flops
        fields = dict(base, loader=loader_name, precision=precision, channels_last=channels_last, compile=compile_mode)
        try:
            model = new_model()
            if train_flops is None:
                train_flops = flops_per_sample(model, name, device, train=True)
            if channels_last:
                model = model.to(memory_format=torch.channels_last)
            optimizer = build_optimizer(spec.recipe, model)
            opts = StepOptions(device, precision, channels_last)
            net = model
            compile_s = None
            if compile_mode:
                net = torch.compile(model, mode=None if compile_mode == "default" else compile_mode)
            if loader_name == "seed":
                it = _host_batches_forever(loaders("tutorial"))
                step = lambda: _seed_step(net, optimizer, *next(it), device)  # noqa: E731
            else:
                stats = StepStats(device)
                if loader_name == "compute":
                    x, y = next(_batches_forever(loaders("fast")))
                    step = lambda: train_step(net, optimizer, x, y, opts, stats)  # noqa: E731
                else:
                    it = _batches_forever(loaders(loader_name))
                    step = lambda: train_step(net, optimizer, *next(it), opts, stats)  # noqa: E731
            if compile_mode:
                t = time.perf_counter()
                step()
                synchronize(device)
                compile_s = time.perf_counter() - t
            with PeakMemory(device) as mem:
                timing = _time_windows(step, device, bs, quick=ctx.quick)
            row = record(name, device, "train", **fields, **timing, peak_mem_mb=mem.peak_mb,
                         gflops_per_s=timing["samples_per_s"] * train_flops / 1e9, compile_s=compile_s)
        except torch.OutOfMemoryError:
            row = failure(name, device, "train", f"out of memory at batch {bs}", status="skipped", **fields)
        except Exception as exc:  # a failing variant is recorded, the run goes on
            row = failure(name, device, "train", exc, **fields)
        out.append(row)
        return row

    for loader_name in rows:
        run_row(loader_name)
    for precision in precisions:
        if precision != "fp32":
            run_row("compute", precision=precision)
    for variant in extra_variants:
        run_row("compute", precision=variant.get("precision", "fp32"), channels_last=variant.get("channels_last", False),
                compile_mode=variant.get("compile"))

    ok = {r["loader"]: r for r in out if r["status"] == "ok" and r["precision"] == "fp32"
          and not r["channels_last"] and not r["compile"]}
    for r in out:
        if r["status"] != "ok":
            continue
        if "seed" in ok:
            r["speedup_vs_seed"] = r["samples_per_s"] / ok["seed"]["samples_per_s"]
        if "compute" in ok and r["loader"] in ("seed", "tutorial", "fast"):
            r["fraction_of_compute"] = r["samples_per_s"] / ok["compute"]["samples_per_s"]
        if r["loader"] == "compute" and "compute" in ok and r is not ok["compute"]:
            r["speedup_vs_fp32_compute"] = r["samples_per_s"] / ok["compute"]["samples_per_s"]
    return out
