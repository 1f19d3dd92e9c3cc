"""OUT/README.md, the index over every run under OUT: a row per results.json (complete runs in OUT/<device>/,
unfinished ones in OUT/<device>.incomplete-<time>/), each readable run at a glance, and the matrix across them."""
from __future__ import annotations

import glob
import os

from bench.records import STATUSES, Record, RunEnv
from bench.report import tables
from bench.report.conditions import index_cells
from bench.report.glance import glance_lines
from bench.report.load import load_results
from zoo.atomic import atomic_write_text


def find_runs(out_root: str) -> list[str]:
    """Every results.json one or two folders below ``out_root`` (OUT/<device>/ and OUT/<name>/<device>/), sorted."""
    found = glob.glob(os.path.join(out_root, "*", "results.json"))
    found += glob.glob(os.path.join(out_root, "*", "*", "results.json"))
    return sorted(found, key=lambda p: (p.count(os.sep), p))


def _index_row(rel: str, loaded: tuple[RunEnv, list[Record]] | str, conditions: str = "") -> list[str]:
    folder = os.path.dirname(rel)
    link = f"[{folder}/summary.md]({folder}/summary.md)"
    if isinstance(loaded, str):
        return [folder, f"unreadable: {loaded}", "", "", "", "", "", "", "", link]
    env, records = loaded
    counts = " / ".join(str(sum(r.status == s for r in records)) for s in STATUSES)
    done = "?" if env.done_rows is None else env.done_rows
    planned = "?" if env.planned_rows is None else env.planned_rows
    complete = "yes" if env.complete else f"**INCOMPLETE {done}/{planned}**"
    return [env.device or folder, env.device_name, env.timestamp, env.git_commit or "",
            "**QUICK**" if env.quick else "no", complete, str(len({r.model for r in records})), counts, conditions,
            link]


def _load(path: str) -> tuple[RunEnv, list[Record]] | str:
    try:
        return load_results(path)
    except ValueError as exc:
        return str(exc)


def index_sections(loaded: dict[str, tuple[RunEnv, list[Record]] | str]) -> list[str]:
    """Each readable run at a glance, then the matrix over all of them (latency, then throughput)."""
    from bench.analysis.matrix import Run, label_runs, render

    runs = [Run(rel, *run) for rel, run in loaded.items() if not isinstance(run, str)]
    out: list[str] = []
    for run in runs:
        env = run.env
        out += [""] + glance_lines(env, run.records, f"## At a glance: {os.path.dirname(run.path)} "
                                   f"({env.device_name or '?'}, {env.device or '?'}, {env.timestamp[:10] or '?'})")
    if len(runs) >= 2:
        label_runs(runs)
        out += ["", "The matrices below put every run above side by side (`python -m bench.matrix` makes them, with "
                "a plot per model); they are regenerated whenever a run is written here."]
        for metric in ("latency", "throughput"):
            out += ["", render(runs, metric, heading="##").rstrip("\n")]
    return out


INDEX_TITLE = "# Benchmark results"
CONDITIONS_NOTE = ("the 1-minute load average at the run's start and end against its CPU count; **LOADED**: above "
                   "it, other processes shared the cores its figures were timed on; **calibration off**: a calibration "
                   "probe slower than the fastest run of the same machine here by more than their spread.")


def write_index(out_root: str, *, parent: bool = True) -> str:
    """OUT/README.md: one row per results.json found (find_runs), linking its summary; each run at a glance; and the
    matrix across them all. With ``parent``, the index one folder up is rewritten too when there is one (a run under
    results/backends/ also lands in results/README.md's matrix)."""
    loaded = {os.path.relpath(p, out_root): _load(p) for p in find_runs(out_root)}
    body = [INDEX_TITLE, "",
            "One folder per device; each holds results.json (every record), results.csv, summary.md and plots.",
            "QUICK runs used short timing windows and reduced batch sizes: use them to check the harness, not to "
            "quote numbers. INCOMPLETE runs stopped before their plan was done (interrupted, crashed or killed): rows are "
            "missing; they sit in DEVICE.incomplete-TIME/ folders beside the device's last complete run.", ""]
    if loaded:
        marks = index_cells({rel: run[0] for rel, run in loaded.items() if not isinstance(run, str)})
        body.append(tables.table([_index_row(rel, run, marks.get(rel, "")) for rel, run in loaded.items()],
                                 ["device", "device name", "timestamp (UTC)", "git commit", "quick", "complete",
                                  "models", "ok / skipped / failed", "conditions", "summary"], max_cell=None))
        body += ["", "*conditions*: " + CONDITIONS_NOTE]  # a blank line first: GFM would read it as a table row
        body += index_sections(loaded)
    else:
        body.append("_No results yet: run `python -m bench.run`._")
    path = os.path.join(out_root, "README.md")
    atomic_write_text(path, "\n".join(body) + "\n")
    up = os.path.dirname(os.path.abspath(out_root))
    if parent and up != os.path.abspath(out_root) and is_index(os.path.join(up, "README.md")):
        write_index(up, parent=False)
    return path


def is_index(path: str) -> bool:
    """A README.md that write_index wrote (its first line is the index's title)."""
    try:
        with open(path, encoding="utf-8") as f:
            return f.readline().rstrip("\n") == INDEX_TITLE
    except (OSError, UnicodeDecodeError):
        return False
