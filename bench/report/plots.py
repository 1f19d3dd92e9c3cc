"""The PNG plots of a results folder, drawn from records only: latency p50 vs batch size per backend, latency vs
accuracy with the Pareto front, the training ladder, and the Server scenario's p99 against offered rate. A plot without data is not drawn and a stale one is removed.

Figures are rendered to bytes first (``render_plots``) and written afterwards (``store_plots``), so a caller can
finish every serialisation before touching the disk. Matplotlib is imported only when a plot is rendered, and through
its ``Figure`` class (Agg canvas), never pyplot: no global figure state, no display needed.
"""
from __future__ import annotations

import contextlib
import io
import math
import os

from bench.records import PERCENTILE_MIN_CALLS, InferRecord, Record, ServeRecord, TrainRecord
from bench.report.selection import (
    accuracy_batch_size,
    infer_rows,
    ladder_rows,
    models_of,
    of_type,
    pareto_front,
)
from zoo.atomic import atomic_open

LATENCY_PNG = "latency.png"
LATENCY_ACCURACY_PNG = "latency_accuracy.png"
TRAIN_LADDER_PNG = "train_ladder.png"
SERVE_KNEE_PNG = "serve_knee.png"
PLOT_FILES = (LATENCY_PNG, LATENCY_ACCURACY_PNG, TRAIN_LADDER_PNG, SERVE_KNEE_PNG)
RETIRED_FILES = ("train_throughput.png",)  # names earlier versions wrote: removed so they are not read as current


def _grid(n: int, width: float = 4.4, height: float = 3.4):
    from matplotlib.figure import Figure

    ncols = min(3, n)
    nrows = math.ceil(n / ncols)
    fig = Figure(figsize=(width * ncols, height * nrows), layout="constrained")
    axes = list(fig.subplots(nrows, ncols, squeeze=False).flat)
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, axes[:n]


def _label(rec: InferRecord) -> str:
    backend = str(rec.backend)
    return backend if rec.precision == "fp32" or rec.precision in backend else f"{backend} {rec.precision}"


def _plain_log_ticks(axis) -> None:
    """Tick labels on a log axis as plain numbers (0.4, 2) instead of powers of ten."""
    from matplotlib.ticker import FuncFormatter

    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}"))


def _latency_figure(records: list[Record]):
    rows = [r for r in of_type(records, InferRecord, ok_only=True) if r.p50_ms and r.batch_size]
    models = models_of(rows)
    if not models:
        return None
    fig, axes = _grid(len(models))
    for ax, model in zip(axes, models):
        mine = infer_rows(rows, model)
        for label in dict.fromkeys(_label(r) for r in mine):
            pts = sorted((r.batch_size, r.p50_ms) for r in mine if _label(r) == label)
            ax.plot(*zip(*pts), marker="o", label=label)
        sizes = sorted({r.batch_size for r in mine})
        ax.set(title=model, xlabel="batch size", ylabel="p50 latency per call (ms)", yscale="log")
        if len(sizes) > 1:
            ax.set_xscale("log", base=2)
        ax.set_xticks(sizes, [str(b) for b in sizes])
        ax.tick_params(axis="x", which="minor", bottom=False, labelbottom=False)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("Inference latency (p50) vs batch size")
    return fig


def _latency_accuracy_figure(records: list[Record]):
    panels = []
    for model in models_of(of_type(records, InferRecord)):
        rows = infer_rows(records, model)
        batch = accuracy_batch_size(rows)
        pts = [r for r in rows if r.ok and r.batch_size == batch and r.accuracy is not None and r.p50_ms]
        if pts:
            panels.append((model, batch, pts))
    if not panels:
        return None
    fig, axes = _grid(len(panels))
    for ax, (model, batch, pts) in zip(axes, panels):
        for r in pts:
            ax.scatter(r.p50_ms, 100 * r.accuracy, s=30, zorder=3,
                       color="tab:red" if r.accuracy_ok is False else "tab:blue")
            ax.annotate(_label(r), (r.p50_ms, 100 * r.accuracy), fontsize=7, xytext=(3, 3),
                        textcoords="offset points")
        front = pareto_front((r.p50_ms, 100 * r.accuracy) for r in pts)
        ax.step(*zip(*front), where="post", color="tab:green", linewidth=1.5, label="Pareto front", zorder=2)
        ax.scatter(*zip(*front), s=90, facecolors="none", edgecolors="tab:green", zorder=4)
        ax.set(title=f"{model} (batch {batch})", xlabel="p50 latency per call (ms)", ylabel="test accuracy (%)",
               xscale="log")
        _plain_log_ticks(ax.xaxis)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("Latency vs accuracy (red: accuracy moved beyond its budget)")
    return fig


def _train_figure(records: list[Record]):
    panels = [(m, [r for r in ladder_rows(records, m) if r.ok and r.samples_per_s])
              for m in models_of(of_type(records, TrainRecord))]
    panels = [(m, rows) for m, rows in panels if rows]
    if not panels:
        return None
    fig, axes = _grid(len(panels))
    for ax, (model, rows) in zip(axes, panels):
        several = len({r.batch_size for r in rows}) > 1
        labels = [f"{r.row} b={r.batch_size}" if several else str(r.row) for r in rows]
        xs = range(len(rows))
        bars = ax.bar(xs, [r.samples_per_s for r in rows], color=["tab:gray" if r.row == "compute" else "tab:blue"
                                                                  for r in rows])
        half = [(r.samples_per_s_iqr or 0) / 2 for r in rows]
        ax.errorbar(xs, [r.samples_per_s for r in rows], yerr=half, fmt="none", ecolor="black", capsize=3)
        for bar, r in zip(bars, rows):
            if r.above_bound:
                bar.set_hatch("//")
                ax.annotate("above bound", (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center",
                            va="bottom", fontsize=7, color="tab:red")
        ax.set_xticks(list(xs), labels, rotation=30, ha="right", fontsize=8)
        ax.set(title=model, ylabel="training samples/s (median)")
        ax.grid(True, axis="y", alpha=0.3)
    fig.suptitle("Training ladder, fp32 (whisker: IQR width; grey: the compute bound)")
    return fig


def _knee_points(r: ServeRecord) -> list[tuple[float, float, bool]]:
    """(offered qps, p99 ms, rests on 1,000 queries) of a Server row's probes, by rate: LoadGen's own p99 (ours when
    its summary had none); a probe with fewer queries than a p99 needs is drawn hollow."""
    enough = PERCENTILE_MIN_CALLS[99]
    pts = [(p["target_qps"], p.get("loadgen_p99_ms") or p.get("p99_ms"), p.get("n_queries", 0) >= enough)
           for p in r.probes]
    return sorted((q, ms, full) for q, ms, full in pts if q and ms)


def _serve_figure(records: list[Record]):
    from matplotlib.ticker import NullFormatter

    rows = [r for r in of_type(records, ServeRecord, ok_only=True) if r.scenario == "Server" and r.probes]
    models = models_of(rows)
    if not models:
        return None
    fig, axes = _grid(len(models), width=6.0, height=5.2)
    for ax, model in zip(axes, models):
        mine = [r for r in rows if r.model == model]
        for r in mine:
            pts = _knee_points(r)
            if pts:
                label = f"{r.backend}{'' if r.precision == 'fp32' else ' ' + r.precision}, batching {r.batching}"
                (line,) = ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", markersize=3,
                                  linestyle="--" if r.batching == "off" else "-", label=label)
                hollow = [(q, ms) for q, ms, full in pts if not full]
                if hollow:
                    ax.scatter(*zip(*hollow), s=30, facecolors="white", edgecolors=line.get_color(), zorder=3)
        for bound in {r.settings.get("latency_bound_ms") for r in mine} - {None}:
            ax.axhline(bound, color="tab:red", linewidth=1, label=f"p99 bound {bound:g} ms")
        ax.set(title=model, xlabel="offered rate (queries/s, Poisson)", ylabel="p99 latency (ms)", xscale="log",
               yscale="log")
        _plain_log_ticks(ax.xaxis)
        ax.xaxis.set_minor_formatter(NullFormatter())  # plain labels on the decades only: minor ones overlap
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=6, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2)
    fig.suptitle("Server: p99 latency vs offered rate, every probe (hollow: fewer than 1,000 queries)")
    return fig


DRAWERS = {LATENCY_PNG: _latency_figure, LATENCY_ACCURACY_PNG: _latency_accuracy_figure,
           TRAIN_LADDER_PNG: _train_figure, SERVE_KNEE_PNG: _serve_figure}


def figures(records: list[Record]) -> dict:
    """The matplotlib figures these records have data for, keyed by file name; a plot without data is absent."""
    drawn = {name: draw(records) for name, draw in DRAWERS.items()}
    return {name: fig for name, fig in drawn.items() if fig is not None}


def render_plots(records: list[Record]) -> dict[str, bytes]:
    """PNG bytes of every plot these records have data for, keyed by file name (nothing touches the disk)."""
    pngs = {}
    for name, fig in figures(records).items():
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=110)
        pngs[name] = buf.getvalue()
    return pngs


def store_plots(out_dir: str, pngs: dict[str, bytes]) -> list[str]:
    """Write each rendered plot atomically; remove the plots (and retired plot names) this run has no data for."""
    written = []
    for name in PLOT_FILES + RETIRED_FILES:
        path = os.path.join(out_dir, name)
        if name in pngs:
            with atomic_open(path, "wb") as f:
                f.write(pngs[name])
            written.append(path)
        else:
            with contextlib.suppress(FileNotFoundError):
                os.remove(path)
    return written


# ---------------------------------------------------------------------------------------------------------------
# Across runs: bench.matrix (one bar per run and row) and bench.history (one line per row over commits)


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return buf.getvalue()


def matrix_pngs(matrix: dict, labels: list[str], metric: str) -> dict[str, bytes]:
    """Per model, grouped horizontal bars: a row of the matrix per group, a bar per run, whiskers the IQR; one panel
    per unit (ms per call, seconds to a target, samples/s), so no axis mixes two."""
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch
    from matplotlib.ticker import NullFormatter

    out = {}
    for model, rows in matrix.items():
        units = list(dict.fromkeys(r.unit for r in rows))
        sizes = [sum(r.unit == u for r in rows) for u in units]
        fig = Figure(figsize=(9, 1.0 + 0.45 * sum(sizes) * max(1, len(labels)) ** 0.5), layout="constrained")
        axes = fig.subplots(len(units), 1, squeeze=False, height_ratios=sizes)[:, 0]
        height = 0.8 / len(labels)
        for ax, unit in zip(axes, units):
            mine = [r for r in rows if r.unit == unit]
            for j, label in enumerate(labels):
                cells = [(i, r.cells[j]) for i, r in enumerate(mine) if r.cells[j].median]
                ax.barh([i + j * height for i, _ in cells], [c.median for _, c in cells], height=height,
                        xerr=[c.median * (c.spread or 0) / 2 for _, c in cells], label=label, capsize=2,
                        color=f"C{j}")
            ax.set_yticks([i + 0.4 - height / 2 for i in range(len(mine))], [f"{r.phase} {r.label}" for r in mine],
                          fontsize=7)
            ax.invert_yaxis()
            values = [c.median for r in mine for c in r.cells if c.median]
            if values and max(values) > 10 * min(values):  # a log axis only where the values span a decade
                ax.set_xscale("log")
                _plain_log_ticks(ax.xaxis)
                ax.xaxis.set_minor_formatter(NullFormatter())
            ax.set_xlabel(unit)
            ax.grid(True, axis="x", which="both", alpha=0.3)
        axes[0].legend(handles=[Patch(color=f"C{j}", label=label) for j, label in enumerate(labels)], fontsize=7)
        fig.suptitle(f"{model}: {metric} per run (median; whisker: IQR)")
        out[model] = _png(fig)
    return out


def history_pngs(series: dict, commits: list[str], metric: str) -> dict[str, bytes]:
    """Per model, one line per row over the commits (oldest left); a marked step is a red (slower) or green
    (faster) ring on the later point."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import NullFormatter

    out = {}
    for model, rows in series.items():
        fig = Figure(figsize=(10, 5), layout="constrained")
        ax = fig.subplots()
        for row in rows:
            pts = [(i, p.value) for i, p in enumerate(row.points) if p is not None and p.value]
            if not pts:
                continue
            line = ax.plot(*zip(*pts), marker="o", markersize=3, label=f"{row.phase} {row.label}")[0]
            for i, p in enumerate(row.points):
                if p is not None and p.value and p.step in ("regression", "improvement"):
                    ax.scatter([i], [p.value], s=80, facecolors="none", zorder=4,
                               edgecolors="tab:red" if p.step == "regression" else "tab:green")
            line.set_linewidth(1)
        ax.set_xticks(range(len(commits)), commits, rotation=30, ha="right", fontsize=7)
        ax.set_yscale("log")
        _plain_log_ticks(ax.yaxis)
        ax.yaxis.set_minor_formatter(NullFormatter())
        ax.set(title=f"{model}: {metric} over commits (ring: a step bench.compare's rule flags)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=6, ncol=2)
        out[model] = _png(fig)
    return out
