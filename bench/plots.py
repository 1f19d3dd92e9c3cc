"""The PNG plots of a results folder: latency p50 vs batch size per backend, training throughput per data path."""
from __future__ import annotations

import contextlib
import math
import os
from typing import Any

from bench.report import LATENCY_PNG, LOADERS, TRAIN_PNG, _base_train, _ok, _ordered, _phase
from zoo.checkpoint import atomic_open


def _latency_figure(plt, records):
    infer = [r for r in _phase(records, "infer") if _ok(r) and r.get("p50_ms") and r.get("batch_size")]
    if not infer:
        return None
    models = list(dict.fromkeys(r["model"] for r in infer))
    ncols = min(3, len(models))
    fig, axes = plt.subplots(math.ceil(len(models) / ncols), ncols, figsize=(4.2 * ncols, 3.3 * math.ceil(
        len(models) / ncols)), squeeze=False,
                             layout="constrained")
    for ax, model in zip(axes.flat, models):
        mine = [r for r in infer if r["model"] == model]
        for b in dict.fromkeys((r["backend"], r.get("precision") or "fp32") for r in mine):
            pts = sorted((r["batch_size"], r["p50_ms"]) for r in mine
                         if (r["backend"], r.get("precision") or "fp32") == b)
            ax.plot(*zip(*pts), marker="o", label=b[0] if b[1] == "fp32" else f"{b[0]} {b[1]}")
        ax.set(title=model, xlabel="batch size", ylabel="p50 latency (ms)", yscale="log")
        sizes = sorted({r["batch_size"] for r in mine})
        if len(sizes) > 1:
            ax.set_xscale("log", base=2)
        ax.set_xticks(sizes, [str(b) for b in sizes])
        ax.tick_params(axis="x", which="minor", bottom=False, labelbottom=False)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(models):]:
        ax.set_visible(False)
    return fig


def _train_figure(plt, records):
    train = _base_train(records)
    if not train:
        return None
    models = list(dict.fromkeys(r["model"] for r in train))
    loaders = _ordered([r.get("loader") for r in train], LOADERS)
    width = 0.8 / len(loaders)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.4 * len(models)), 3.8))
    for i, loader in enumerate(loaders):
        vals = {r["model"]: r["samples_per_s"] for r in train if r.get("loader") == loader}
        xs = [j + (i - (len(loaders) - 1) / 2) * width for j, m in enumerate(models) if m in vals]
        ax.bar(xs, [vals[m] for m in models if m in vals], width, label=str(loader))
    ax.set_xticks(range(len(models)), models, rotation=20)
    ax.set(ylabel="training samples/s", yscale="log", title="Training throughput by data path (fp32)")
    ax.grid(True, axis="y", which="both", alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def write_plots(out_dir: str, records: list[dict[str, Any]]) -> list[str]:
    """Latency p50 vs batch size per backend (one panel per model) and training throughput per loader.

    A plot without data is not drawn, and a stale one from an earlier run is removed.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    for fname, draw in ((LATENCY_PNG, _latency_figure), (TRAIN_PNG, _train_figure)):
        path = os.path.join(out_dir, fname)
        fig = draw(plt, records)
        if fig is None:
            with contextlib.suppress(FileNotFoundError):
                os.remove(path)
            continue
        with atomic_open(path, "wb") as f:
            fig.savefig(f, format="png", dpi=110, bbox_inches="tight")
        plt.close(fig)
        written.append(path)
    return written
