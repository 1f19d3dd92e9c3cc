"""A matrix across runs and devices: ``python -m bench.matrix RESULTS.json RESULTS.json ... [--metric latency|throughput]
[--out FILE.md] [--plots DIR]``.

Per model, one table with a column per run (labelled by the device name, device type and date of its env block) and a
row per (phase, row, backend, precision, batch): the record's median with its spread (IQR as % of the median), the
best median of the row in bold, and every other column's speed against the first column's (a ratio of medians,
> 1 = faster than the first run). ``latency``: inference p50 ms per call and time to accuracy (train s);
``throughput``: samples/s of inference, training and scaling rows. Figures are the records' own, never re-measured.
Every column after the first carries bench.compare's verdict against the first (its t interval over processes, this
machine's noise profile for one-process rows, Holm's rule over the column's rows, its machine check).
"""
from __future__ import annotations

import argparse
import math
import os
import sys
from dataclasses import dataclass, field

from bench.analysis.noise import load_profile, priors_for
from bench.analysis.verdicts import (
    DEFAULT_THRESHOLD_PCT,
    family_verdicts,
    judge,
    machine_changed,
    machine_drift,
)
from bench.cli import OneLineParser
from bench.records import (
    BACKEND_NAMES,
    PRECISIONS,
    TRAIN_LADDER,
    InferRecord,
    Record,
    RunEnv,
    ScaleRecord,
    TrainRecord,
    TtaRecord,
)
from bench.report.conditions import conditions
from bench.report.load import load_results
from bench.report.tables import num, pct, table

METRICS = ("latency", "throughput")
PHASE_ORDER = ("train", "infer", "scale", "tta")
SPREAD_NOTE = ("median ± IQR as % of the median (inference samples/s: the per-call latency IQR); **bold**: the row's "
               "best median; (Nx, verdict): speed against the first column, a ratio of medians, > 1 faster, and "
               "bench.compare's verdict on that change (a t interval over each run's processes, one-process rows "
               "judged with this machine's noise profile, Holm over the column; 'no verdict': one process and no "
               "profile, made by `python -m bench.run --repeat 5`; 'withheld': the machines differ).")


@dataclass
class Run:
    path: str
    env: RunEnv
    records: list[Record]
    label: str = ""


@dataclass
class Cell:
    """One run's figure for one row: median, spread (IQR / median), sample count; or the row's status."""

    median: float | None = None
    spread: float | None = None
    n: int | None = None
    status: str = ""  # "" = the run has no such row
    verdict: str = ""  # bench.compare's verdict against the first run's cell ("" in the first column, or unjudged)
    record: Record | None = None


@dataclass
class MatrixRow:
    model: str
    phase: str
    label: str
    unit: str
    lower_is_better: bool
    cells: list[Cell] = field(default_factory=list)

    def best(self, eligible: set[int] | None = None) -> int | None:
        """The index of the best median among the ``eligible`` runs (None: all), when at least two measured the row."""
        have = [(c.median, i) for i, c in enumerate(self.cells)
                if c.median is not None and (eligible is None or i in eligible)]
        if len(have) < 2:
            return None
        return (min(have) if self.lower_is_better else max(have))[1]

    def speed_vs_first(self, i: int) -> float | None:
        first, cell = self.cells[0].median, self.cells[i].median
        if not first or not cell:
            return None
        return first / cell if self.lower_is_better else cell / first


def _rel(iqr: float | None, median: float | None) -> float | None:
    return iqr / median if iqr is not None and median else None


def figure_of(rec: Record, metric: str) -> tuple[str, bool, Cell] | None:
    """(unit, lower is better, cell) of a record under ``metric``; None when the metric does not apply to it."""
    if not rec.ok:
        return None
    if metric == "latency" and isinstance(rec, InferRecord):
        return "ms", True, Cell(rec.p50_ms, _rel(rec.iqr_ms, rec.p50_ms), rec.n_calls, "ok", record=rec)
    if metric == "latency" and isinstance(rec, TtaRecord):
        return "train s to target", True, Cell(rec.train_s, None, 1, "ok", record=rec)
    if metric == "throughput" and isinstance(rec, InferRecord):
        return "samples/s", False, Cell(rec.samples_per_s, _rel(rec.iqr_ms, rec.p50_ms), rec.n_calls, "ok",
                                        record=rec)
    if metric == "throughput" and isinstance(rec, (TrainRecord, ScaleRecord)):
        return "samples/s", False, Cell(rec.samples_per_s, _rel(rec.samples_per_s_iqr, rec.samples_per_s),
                                        rec.windows, "ok", record=rec)
    return None


def applies(rec: Record, metric: str) -> bool:
    kinds = (InferRecord, TtaRecord) if metric == "latency" else (InferRecord, TrainRecord, ScaleRecord)
    return isinstance(rec, kinds)


def sort_key(key: tuple) -> tuple:
    """Phase, then the table order of bench.report.selection: ladder rung / backend, precision, batch."""
    phase, rest = key[1], key[2:]
    rank = PHASE_ORDER.index(phase) if phase in PHASE_ORDER else len(PHASE_ORDER)
    first = rest[0] if rest else None
    order = TRAIN_LADDER if phase == "train" else BACKEND_NAMES if phase == "infer" else ()
    head = order.index(first) if first in order else len(order)
    text = tuple("" if v is None else str(v).zfill(8) if isinstance(v, int) else str(v) for v in rest)
    prec = next((PRECISIONS.index(v) for v in rest if v in PRECISIONS), 0)
    return rank, head, prec, text


def build(runs: list[Run], metric: str) -> dict[str, list[MatrixRow]]:
    """Model -> its rows, every row with one cell per run (in the runs' order)."""
    found: dict[tuple, Record] = {}
    for run in runs:
        for rec in run.records:
            if applies(rec, metric):
                found.setdefault(rec.key(), rec)
    models = list(dict.fromkeys(k[0] for k in found))
    indexes = [{r.key(): r for r in run.records} for run in runs]
    out: dict[str, list[MatrixRow]] = {}
    for model in models:
        rows = []
        for key in sorted((k for k in found if k[0] == model), key=sort_key):
            row = None
            cells = []
            for index in indexes:
                rec = index.get(key)
                fig = figure_of(rec, metric) if rec is not None else None
                if fig is not None and row is None:
                    row = MatrixRow(model, key[1], found[key].describe(), fig[0], fig[1])
                cells.append(fig[2] if fig else Cell(status=rec.status if rec is not None else ""))
            if row is not None:
                row.cells = cells
                rows.append(row)
        if rows:
            out[model] = rows
    return out


def judge_columns(runs: list[Run], matrix: dict[str, list[MatrixRow]], threshold: float,
                  profile: str | None = None) -> None:
    """Each cell's verdict against the first run's, by bench.compare's rule, the rows of a column as one family."""
    for i, run in enumerate(runs[1:], 1):
        priors = priors_for(runs[0].env, run.env, profile)
        withheld = machine_changed(machine_drift(runs[0].env, run.env, priors), threshold)
        judged = []
        for row in (r for rows in matrix.values() for r in rows):
            first, cell = row.cells[0].record, row.cells[i].record
            change = judge(first, cell, threshold, None, priors.prior(first.key())) if first and cell else None
            if change is not None:
                judged.append((row.cells[i], change))
        family_verdicts([c for _, c in judged], threshold)
        for cell, change in judged:
            cell.verdict = "withheld" if withheld else change.verdict


def cell_text(row: MatrixRow, i: int, eligible: set[int] | None = None) -> str:
    cell = row.cells[i]
    if cell.median is None:
        return cell.status or "-"
    text = num(cell.median) + (f" ± {pct(cell.spread)}" if cell.spread is not None else "")
    if row.best(eligible) == i:
        text = f"**{text}**"
    speed = row.speed_vs_first(i) if i else None
    verdict = f", {cell.verdict}" if cell.verdict else ""
    return text + (f" ({speed:.2f}x{verdict})" if speed is not None else "")


def date_of(env: RunEnv) -> str:
    return env.timestamp[:10] if env.timestamp else "?"


def label_runs(runs: list[Run]) -> None:
    """Each run's column label: device name (device type) date, and its folder when that alone would repeat."""
    base = [f"{r.env.device_name or '?'} ({r.env.device or '?'}) {date_of(r.env)}" for r in runs]
    for run, text in zip(runs, base):
        folder = os.path.dirname(os.path.normpath(run.path))
        tail = "/".join(folder.split(os.sep)[-2:]) if folder else "."
        run.label = f"{text} [{tail}]" if base.count(text) > 1 else text


def crowned(runs: list[Run]) -> tuple[set[int] | None, str]:
    """Which runs may hold a row's bold "best", and the note that says why: a run made above its CPU count's load
    average is not raced against quiet ones (its medians are slower for a reason no backend or commit owns)."""
    loaded = [i for i, r in enumerate(runs) if conditions(r.env).loaded]
    if not loaded or len(loaded) == len(runs):
        return None, "" if not loaded else " Every run here was made above its load limit (LOADED): compare with care."
    names = ", ".join(str(i + 1) for i in loaded)
    which = f"Runs {names} were" if len(loaded) > 1 else f"Run {names} was"
    return set(range(len(runs))) - set(loaded), (f" {which} made under load (LOADED: load average above the CPU "
                                                  "count): **bold** marks the best of the other runs only.")


def run_lines(runs: list[Run]) -> list[str]:
    lines = []
    for i, r in enumerate(runs, 1):
        flags = [f for f, on in (("QUICK", r.env.quick), ("INCOMPLETE", not r.env.complete),
                                 ("LOADED", conditions(r.env).loaded)) if on]
        lines.append(f"{i}. {r.label}: `{r.path}`, commit {r.env.git_commit or '?'}, torch {r.env.torch or '?'}, "
                     f"{r.env.threads or '?'} threads{', ' + ', '.join(flags) if flags else ''}")
    return lines


def render(runs: list[Run], metric: str, plot_files: dict[str, str] | None = None, heading: str = "#",
           threshold: float = DEFAULT_THRESHOLD_PCT / 100, profile: str | None = None) -> str:
    """The matrix as Markdown: the runs, then per model its table (and its plot, when one was written)."""
    matrix = build(runs, metric)
    judge_columns(runs, matrix, threshold, profile)
    eligible, crown_note = crowned(runs)
    out = [f"{heading} Matrix: {metric} across {len(runs)} runs", "", *run_lines(runs), "",
           f"{SPREAD_NOTE} T = {threshold * 100:g}%." + crown_note]
    if not matrix:
        out += ["", f"_No row of these runs has a {metric} figure._"]
    for model, rows in matrix.items():
        body = [[r.phase, r.label, r.unit, *(cell_text(r, i, eligible) for i in range(len(runs)))] for r in rows]
        out += model_section(f"{heading}# {model}", model, body, [r.label for r in runs], plot_files)
    return "\n".join(out) + "\n"


def model_section(title: str, model: str, body: list[list], columns: list[str],
                  plot_files: dict[str, str] | None) -> list[str]:
    """One model's table of rows (phase, row, unit, then a cell per run or version) and its plot, where drawn."""
    out = ["", title, "", table(body, ["phase", "row", "unit", *columns])]
    if plot_files and model in plot_files:
        out += ["", f"![{model}]({plot_files[model]})"]
    return out


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="python -m bench.matrix", description=__doc__.split("\n\n")[0],
                epilog="Exit status: 2 on bad input (a missing or broken results file, fewer than two runs); else 0.")
    p.add_argument("paths", nargs="+", metavar="RESULTS.json", help="two or more results.json files (or folders)")
    p.add_argument("--metric", choices=METRICS, default="latency", help="latency (default) or throughput")
    p.add_argument("--out", metavar="FILE.md", help="write the Markdown here (default: stdout); PNGs go beside it")
    p.add_argument("--plots", metavar="DIR", help="write one PNG per model here (default: beside --out; none for "
                                                  "stdout)")
    p.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD_PCT, metavar="PCT",
                   help=f"T of bench.compare's rule for each column's verdicts (default {DEFAULT_THRESHOLD_PCT:g})")
    p.add_argument("--noise-profile", metavar="PATH", help="the noise profile for one-process rows (see bench.compare)")
    return p


def load_runs(paths: list[str]) -> list[Run]:
    """The runs at ``paths`` (a folder means its results.json); ValueError (one line) for the first bad one."""
    runs = []
    for path in paths:
        if os.path.isdir(path):
            path = os.path.join(path, "results.json")
        env, records = load_results(path)
        runs.append(Run(path, env, records))
    label_runs(runs)
    return runs


def write_plots(runs: list[Run], metric: str, folder: str, prefix: str) -> dict[str, str]:
    """One PNG per model under ``folder`` (matplotlib, Agg); model -> file name."""
    from bench.report.plots import matrix_pngs
    from zoo.atomic import atomic_open

    os.makedirs(folder, exist_ok=True)
    names = {}
    for model, png in matrix_pngs(build(runs, metric), [r.label for r in runs], metric).items():
        name = f"{prefix}_{metric}_{model}.png"
        with atomic_open(os.path.join(folder, name), "wb") as f:
            f.write(png)
        names[model] = name
    return names


def emit(text_for, out: str | None, plots: str | None, draw) -> None:
    """Draw the plots (beside ``out`` or into ``plots``), then write the Markdown that links them."""
    folder = plots or (os.path.dirname(os.path.abspath(out)) if out else None)
    names = draw(folder) if folder else {}
    if plots:  # links from where the Markdown is read: beside --out, else the current folder
        where = os.path.dirname(os.path.abspath(out)) if out else os.getcwd()
        rel = os.path.relpath(os.path.abspath(plots), where)
        names = {m: os.path.join(rel, n) if rel != "." else n for m, n in names.items()}
    text = text_for(names)
    if out:
        from zoo.atomic import atomic_write_text

        atomic_write_text(out, text)
        print(out)
    else:
        sys.stdout.write(text)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if len(args.paths) < 2:
            raise ValueError("give two or more results.json files to put side by side")
        if not (math.isfinite(args.threshold) and args.threshold >= 0):
            raise ValueError(f"--threshold must be a percentage >= 0, not {args.threshold:g}")
        if args.noise_profile:
            load_profile(args.noise_profile)
        runs = load_runs(args.paths)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        emit(lambda names: render(runs, args.metric, names, threshold=args.threshold / 100,
                                  profile=args.noise_profile), args.out, args.plots,
             lambda folder: write_plots(runs, args.metric, folder, "matrix"))
    except OSError as exc:
        print(f"error: cannot write the matrix: {exc.strerror or exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
