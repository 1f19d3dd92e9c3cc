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

import copy
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


class _Row:
    """One training configuration being timed: its step function and its window rates."""

    def __init__(self, fields: dict[str, Any], step):
        self.fields, self.step = fields, step
        self.steps_per_window, self.rates, self.slow = 1, [], False


def _time_interleaved(rows: list[_Row], device: torch.device, batch_size: int, *, quick: bool) -> None:
    """Warm every row up, size its windows to ~0.5 s (0.15 s quick), then time the windows round-robin.

    Interleaving is what makes rows comparable on a shared machine: a slow spell (another process, a frequency
    drop) lands on every row alike instead of on whichever row happened to run then. Slow steps (AlexNet at batch
    512 on a CPU takes seconds) get no extra warm-up and five one-step windows.
    """
    for row in rows:
        synchronize(device)
        t = time.perf_counter()
        row.step()  # the first call pays one-off costs (allocator growth, kernel selection)
        synchronize(device)
        one = max(time.perf_counter() - t, 1e-6)
        if one < (0.05 if quick else 2.0):
            t = time.perf_counter()
            while time.perf_counter() - t < (0.05 if quick else 0.5):
                row.step()
            synchronize(device)
            t = time.perf_counter()
            row.step()
            synchronize(device)
            one = max(time.perf_counter() - t, 1e-6)
        row.steps_per_window = max(1, round((0.15 if quick else 0.5) / one))
        row.slow = one > 2.0
    windows = 3 if quick else 5 if any(r.slow for r in rows) else 9
    for w in range(windows):
        for row in rows[w % len(rows):] + rows[:w % len(rows)]:  # rotate: no row always runs first or last
            synchronize(device)
            t = time.perf_counter()
            for _ in range(row.steps_per_window):
                row.step()
            synchronize(device)
            row.rates.append(row.steps_per_window * batch_size / (time.perf_counter() - t))


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

    template: list[torch.nn.Module] = []

    def new_model():
        """A copy of one seeded initialisation: every row starts from the same weights (AlexNet's init is ~1 s)."""
        if not template:
            torch.manual_seed(ctx.seed)
            template.append(zoo.get_model(name, **({"pretrained": "off"} if spec.uses_pretrained else {})))
        return copy.deepcopy(template[0]).to(device).train()

    def loaders(kind: str):
        # Enough samples for the timed steps, but never the whole 60k split when a few hundred batches suffice.
        n = bs * _steps_needed(ctx.quick)
        return make_loaders(spec, loader=kind, device=device, root=ctx.data_root, synthetic=not real,
                            batch_size=bs, seed=ctx.seed, train_samples=n, test_samples=1).train

    def build_row(loader_name: str, precision: str = "fp32", channels_last: bool = False,
                  compile_mode: str | None = None) -> _Row | dict[str, Any]:
        nonlocal train_flops
        fields = dict(base, loader=loader_name, precision=precision, channels_last=channels_last, compile=compile_mode)
        try:
            model = new_model()
            if train_flops is None:
                train_flops = flops_per_sample(model, name, device, train=True)
            if channels_last:
                model = model.to(memory_format=torch.channels_last)
            # The seeds construct their optimizer with PyTorch's defaults; the shared loop takes the fused kernel.
            optimizer = build_optimizer(spec.recipe, model, fused=loader_name != "seed")
            opts = StepOptions(device, precision, channels_last)
            net = torch.compile(model, mode=None if compile_mode == "default" else compile_mode) if compile_mode else model
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
            if compile_mode:  # compile time on its own, before any timed window
                t = time.perf_counter()
                step()
                synchronize(device)
                fields["compile_s"] = time.perf_counter() - t
            else:
                step()  # fails here, not mid-measurement, if the configuration cannot run
            return _Row(fields, step)
        except torch.OutOfMemoryError:
            return failure(name, device, "train", f"out of memory at batch {bs}", status="skipped", **fields)
        except Exception as exc:  # a failing variant is recorded, the run goes on
            return failure(name, device, "train", exc, **fields)

    configs = [dict(loader_name=r) for r in rows]
    configs += [dict(loader_name="compute", precision=p) for p in precisions if p != "fp32"]
    configs += [dict(loader_name="compute", precision=v.get("precision", "fp32"),
                     channels_last=v.get("channels_last", False), compile_mode=v.get("compile"))
                for v in extra_variants]
    built = [build_row(**c) for c in configs]
    timed = [b for b in built if isinstance(b, _Row)]
    try:
        with PeakMemory(device) as mem:
            _time_interleaved(timed, device, bs, quick=ctx.quick)
        error = None
    except torch.OutOfMemoryError:
        error = f"out of memory at batch {bs}"
    except Exception as exc:
        error = exc
    for b in built:
        if not isinstance(b, _Row):
            out.append(b)
        elif error is not None:
            status = "skipped" if isinstance(error, str) else "failed"
            out.append(failure(name, device, "train", error, status=status, **b.fields))
        else:
            q1, med, q3 = np.percentile(b.rates, [25, 50, 75])
            out.append(record(name, device, "train", **b.fields, samples_per_s=float(med),
                              samples_per_s_iqr=float(q3 - q1), windows=len(b.rates),
                              steps_per_window=b.steps_per_window, peak_mem_mb=mem.peak_mb,
                              gflops_per_s=float(med) * train_flops / 1e9))

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
