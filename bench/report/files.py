"""Result files from typed records: results.json, results.csv, summary.md, the plots, and the OUT/README.md index.

Reads records (bench.records) only, never measures and never recomputes a field a record holds. Re-render a run's
files after changing this module with ``python -m bench.report OUT/<device>/results.json``.
"""
from __future__ import annotations

import contextlib
import csv
import dataclasses
import datetime as dt
import glob
import io
import json
import os
import shutil
import sys
from typing import Any

from bench.records import (
    PERCENTILE_MIN_CALLS,
    RECORD_TYPES,
    STATUSES,
    THROUGHPUT_DEFINITION,
    Record,
    RunEnv,
    results_to_json,
)
from bench.report import plots as plotting
from bench.report import tables
from bench.report.load import load_results
from zoo.atomic import atomic_write_text

FILES = ("results.json", "results.csv", "summary.md")
USAGE = "usage: python -m bench.report OUT/<device>/results.json [...]"


# ---------------------------------------------------------------------------------------------------------------
# results.csv


def csv_columns(records: list[Record]) -> list[str]:
    """``phase``, then the union of the present record types' fields in declared order. Raw-sample lists
    (latencies_ms, window_rates) stay in results.json; their counts (n_calls, windows) are columns."""
    columns: dict[str, None] = {"phase": None}
    present = {type(r) for r in records}
    for cls in RECORD_TYPES.values():
        if cls in present:
            columns.update(dict.fromkeys(f.name for f in dataclasses.fields(cls)
                                         if not str(f.type).startswith("list")))
    return list(columns)


def csv_text(payload: dict[str, Any], records: list[Record]) -> str:
    """One row per record of a ``results_to_json`` payload (already strict-JSON clean); dict cells as JSON."""
    columns = csv_columns(records)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, restval="", extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in payload["records"]:
        writer.writerow({k: "" if v is None else json.dumps(v) if isinstance(v, dict) else v for k, v in row.items()})
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------------------------
# summary.md


def incomplete_label(env: RunEnv) -> str | None:
    """``INCOMPLETE (done of planned rows)`` for a run that did not finish its plan; None for a complete one."""
    if env.complete:
        return None
    done = "?" if env.done_rows is None else f"{env.done_rows:,}"
    planned = "?" if env.planned_rows is None else f"{env.planned_rows:,}"
    return f"INCOMPLETE ({done} of {planned} rows)"


def title(env: RunEnv) -> str:
    parts = [incomplete_label(env), "QUICK RUN" if env.quick else None,
             f"Benchmark on {env.device_name or '?'} ({env.device or '?'})"]
    return "# " + " - ".join(p for p in parts if p)


def _flat(d: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """Scalar leaves of a nested dict as dotted keys; raw-sample lists are left to results.json."""
    out = []
    for k, v in d.items():
        if isinstance(v, dict):
            out += _flat(v, f"{prefix}{k}.")
        elif not isinstance(v, (list, tuple)):
            out.append((f"{prefix}{k}", v))
    return out


def _measure(key: str, value: Any) -> str:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if key.endswith("flops_per_s"):
            return tables.num(value / 1e9, " GFLOP/s")
        if key.endswith("bytes_per_s"):
            return tables.num(value / 1e9, " GB/s")
        if key.endswith("_s"):
            return tables.num(value, " s")
        return tables.num(value)
    return str(value)


def _settings(d: dict[str, Any]) -> str:
    return ", ".join(f"{k} {_measure(k, v)}" for k, v in _flat(d))


def env_section(env: RunEnv) -> list[str]:
    threads = f"{env.threads or '?'} torch threads of {env.cpu_count or '?'} CPUs"
    skipped = "; ".join(f"{p}: {why}" for p, why in env.skipped_precisions.items())
    rows = [["device", f"{env.device_name} ({env.device})"], ["torch", env.torch], ["torchvision", env.torchvision],
            ["onnxruntime", env.onnxruntime], ["CUDA", env.cuda], ["python", env.python], ["platform", env.platform],
            ["CPU capability", env.cpu_capability], ["threads", threads], ["memory", tables.num(env.memory_gb, " GB")],
            ["clock", env.clock], ["maths policy", tables.inline(env.maths)],
            ["calibration (1 thread)", _calibration_cell(env.calibration)], ["measured peaks", _peaks_cell(env.peaks)],
            ["git commit", env.git_commit], ["timestamp (UTC)", env.timestamp],
            ["command", f"`{env.command}`" if env.command else None], ["wall time", tables.seconds(env.wall_s)],
            ["budget", tables.seconds(env.budget_s)], ["quick", "YES" if env.quick else "no"],
            ["rows done", f"{env.done_rows} of {env.planned_rows} planned" if env.planned_rows is not None else None],
            ["complete", "yes" if env.complete else f"**{incomplete_label(env)}**"],
            ["skipped precisions", skipped], ["budget plan", _budget_cell(env)],
            ["notes", _settings({k: v for k, v in env.notes.items() if k not in OWN_NOTES})]]
    lines = [title(env), ""]
    if not env.complete:
        lines += [f"> **{incomplete_label(env)}: the run stopped before its plan was done (interrupted, out of "
                  "budget, or crashed). Rows missing below were never measured; they are not failures.**", ""]
    if env.quick:
        lines += ["> **QUICK RUN: short timing windows and reduced batch sizes; these numbers check the harness, "
                  "they are not measurements to quote.**", ""]
    lines.append(tables.table([r for r in rows if r[1] not in (None, "")], ["setting", "value"]))
    methods = [f"- {k.replace('_method', '')}: {v}" for k, v in env.peaks.items() if k.endswith("_method")]
    if methods:
        lines += ["", "How the peaks were measured:", "", *methods]
    return lines + _phase_time_section(env)


OWN_NOTES = ("phase_s", "budget", "prices", "first_eta_s", "first_eta_at_s")  # notes with a row of their own


def _budget_cell(env: RunEnv) -> str:
    """What the budget's plan measured and left out, and its first ETA against the true end."""
    b = env.notes.get("budget") or {}
    if not b:
        return ""
    prices = env.notes.get("prices") or {}
    eta, at = env.notes.get("first_eta_s"), env.notes.get("first_eta_at_s")
    first = f"; first ETA {tables.num(eta, ' s')} after {tables.num(at, ' s')} (end at {tables.num(env.wall_s, ' s')})" \
        if _is_number(eta) and _is_number(at) else ""
    return (f"{b.get('kept_rows')} of {b.get('planned_rows')} planned rows measured, {b.get('dropped_rows')} left out "
            f"for the budget (skipped rows below, each with its command); priced here: "
            f"{tables.num(b.get('priced_floor_s'), ' s')} at the sample rules' floor, "
            f"{tables.num(b.get('priced_full_s'), ' s')} at full size; pricing pass "
            f"{tables.num(prices.get('pricing_s'), ' s')}{first}")


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _calibration_cell(cal: dict[str, Any]) -> str:
    probes = cal.get("probes") or {}
    return "; ".join(f"{p.get('what', name)}: {tables.num(p.get('median_ms'))} ms median"
                     for name, p in probes.items() if isinstance(p, dict))


def _peaks_cell(peaks: dict[str, Any]) -> str:
    cells = [f"{k.replace('_flops_per_s', '')} {tables.num(v / 1e9)} GFLOP/s" for k, v in peaks.items()
             if k.endswith("_flops_per_s") and isinstance(v, (int, float))]
    if isinstance(peaks.get("mem_bytes_per_s"), (int, float)):
        cells.append(f"memory {tables.num(peaks['mem_bytes_per_s'] / 1e9)} GB/s")
    cells += [f"{p}: not measured ({why})" for p, why in (peaks.get("skipped") or {}).items()]
    return "; ".join(cells)


def _phase_time_section(env: RunEnv) -> list[str]:
    spent = env.notes.get("phase_s") or {}
    phases = list(dict.fromkeys(ph for per_model in spent.values() for ph in per_model))
    if not phases:
        return []
    rows = [[model] + [_spent_cell(per_model.get(ph)) for ph in phases] for model, per_model in spent.items()]
    return ["", "Seconds per phase (spent / budgeted):", "", tables.table(rows, ["model", *phases])]


def _spent_cell(pair: Any) -> str:
    if not isinstance(pair, (list, tuple)) or len(pair) != 2:
        return ""
    used, budget = pair
    return f"{tables.num(used)} / {tables.num(budget) if budget is not None else '-'}"


def method_section(env: RunEnv) -> list[str]:
    p90, p99 = PERCENTILE_MIN_CALLS[90], PERCENTILE_MIN_CALLS[99]
    return ["## How these numbers were measured", "",
            f"- **Throughput**: {THROUGHPUT_DEFINITION}.",
            f"- **Clock**: {env.clock or 'not recorded'}; threads and maths policy as in the table above.",
            f"- **Percentiles**: p50 is the median call. p90 is printed only when at least {p90:,} calls were timed, "
            f"p99 only with at least {p99:,}; with fewer calls the cell shows `max X (n=N)`, the slowest of the N "
            "calls (not a percentile), or stays blank.",
            "- **Spread**: `X ± Y (Z%)` is the median X and the interquartile range Y (75th minus 25th percentile) "
            "of the raw samples (per-call latencies for inference, per-window rates for training); Z is Y as a "
            "percentage of X. Two figures closer than their IQRs are not known to differ.",
            "- **% of compute**: a training row's median over its compute bound's median (same precision and "
            "variant); a row above the bound by more than the noise is flagged, never shown above 100%. "
            "**% of peak**: achieved FLOP/s (counted FLOPs x samples/s) over the measured peak above.",
            "- **Comparing runs**: `python -m bench.compare A/results.json B/results.json` matches rows by key and "
            "calls a change real only when it is larger than the rows' spread.",
            f"- **Sample rules**: a figure resting on fewer than {tables.LOW_N_CALLS} calls or {tables.LOW_N_WINDOWS} "
            "windows reads `X (low n: N)`, without a spread: too few samples for one."]


def render_summary(env: RunEnv, records: list[Record], plot_files: list[str] | tuple[str, ...] = ()) -> str:
    """The Markdown summary of one run; ``plot_files`` are the PNG names written beside it."""
    out = env_section(env) + [""] + method_section(env)
    for section in (tables.zoo_section, tables.train_section, tables.infer_section, tables.parity_section,
                    tables.scale_section, tables.tta_section, tables.not_ok_section):
        lines = section(records)
        if lines:
            out += [""] + lines
    if plot_files:
        out += ["", "## Plots", "", *(f"![{name}]({name})" for name in plot_files)]
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------------------------------------------------------
# Files


def write_results(out_dir: str, env: RunEnv, records: list[Record], *, plots: bool = True) -> list[str]:
    """Write results.json, results.csv, summary.md (and, with ``plots``, the PNGs) into ``out_dir``, each atomically.

    Everything is serialised (plots rendered) before the first file is touched: a value that cannot be written
    raises here and the previous files stay whole. results.json goes first, so the other files can always be
    re-rendered from it. Without ``plots`` the summary links no plot and existing PNGs are left as they are.
    """
    payload = results_to_json(env, records)
    pngs = plotting.render_plots(records) if plots else {}
    texts = {"results.json": json.dumps(payload, indent=1, allow_nan=False) + "\n",
             "results.csv": csv_text(payload, records),
             "summary.md": render_summary(env, records, list(pngs))}
    written = []
    for name, body in texts.items():
        path = os.path.join(out_dir, name)
        atomic_write_text(path, body)
        written.append(path)
    if plots:
        written += plotting.store_plots(out_dir, pngs)
    return written


# ---------------------------------------------------------------------------------------------------------------
# The staged run folder: a run is written into OUT/<device>.incomplete-<UTC time>/ and moved to OUT/<device>/ when it
# completes, so OUT/<device>/ always holds the last complete run while one exists, and an interrupted, crashed or
# killed run stays readable (marked INCOMPLETE) in its own folder, listed in the index beside the complete one.

STAGE_MARK = ".incomplete-"
REPLACED_MARK = ".replaced-"


def stage_dir(dev_dir: str, when: dt.datetime | None = None) -> str:
    """A new run's folder beside ``dev_dir`` (created; a second within the same second gets a suffix)."""
    stamp = (when or dt.datetime.now(dt.timezone.utc)).strftime("%Y%m%dT%H%M%SZ")
    base = f"{os.path.normpath(dev_dir)}{STAGE_MARK}{stamp}"
    path, n = base, 1
    while os.path.exists(path):
        path, n = f"{base}-{n}", n + 1
    os.makedirs(path)
    return path


def recover(dev_dir: str) -> None:
    """Finish a promotion a kill cut short: put a replaced complete run back when OUT/<device> is missing, else drop
    it. (Call while holding the folder's lock.)"""
    for old in sorted(glob.glob(glob.escape(os.path.normpath(dev_dir)) + REPLACED_MARK + "*")):
        if not os.path.exists(dev_dir):
            os.rename(old, dev_dir)
        else:
            shutil.rmtree(old, ignore_errors=True)


def promote(stage: str, dev_dir: str) -> None:
    """The completed run in ``stage`` becomes OUT/<device>/: the previous one is moved aside, the new one renamed
    into place, then the old one and every earlier incomplete folder of this device are removed."""
    aside = f"{os.path.normpath(dev_dir)}{REPLACED_MARK}{os.getpid()}"
    if os.path.exists(dev_dir):
        os.rename(dev_dir, aside)
    os.rename(stage, dev_dir)
    shutil.rmtree(aside, ignore_errors=True)
    for old in glob.glob(glob.escape(os.path.normpath(dev_dir)) + STAGE_MARK + "*"):
        with contextlib.suppress(OSError):
            shutil.rmtree(old)


def _index_row(path: str) -> list[str]:
    folder = os.path.basename(os.path.dirname(path))
    link = f"[{folder}/summary.md]({folder}/summary.md)"
    try:
        env, records = load_results(path)
    except ValueError as exc:
        return [folder, f"unreadable: {exc}", "", "", "", "", "", "", link]
    counts = " / ".join(str(sum(r.status == s for r in records)) for s in STATUSES)
    done = "?" if env.done_rows is None else env.done_rows
    planned = "?" if env.planned_rows is None else env.planned_rows
    complete = "yes" if env.complete else f"**INCOMPLETE {done}/{planned}**"
    return [env.device or folder, env.device_name, env.timestamp, env.git_commit or "",
            "**QUICK**" if env.quick else "no", complete, str(len({r.model for r in records})), counts, link]


def write_index(out_root: str) -> str:
    """OUT/README.md: one row per OUT/<folder>/results.json present (a device's complete run in OUT/<device>/,
    an unfinished one in OUT/<device>.incomplete-<time>/), linking its summary."""
    rows = [_index_row(p) for p in sorted(glob.glob(os.path.join(out_root, "*", "results.json")))]
    body = ["# Benchmark results", "",
            "One folder per device; each holds results.json (every record), results.csv, summary.md and plots.",
            "QUICK runs used short timing windows and reduced batch sizes: use them to check the harness, not to "
            "quote numbers. INCOMPLETE runs stopped before their plan was done (interrupted, crashed or killed): rows are "
            "missing; they sit in DEVICE.incomplete-TIME/ folders beside the device's last complete run.", ""]
    if rows:
        body.append(tables.table(rows, ["device", "device name", "timestamp (UTC)", "git commit", "quick",
                                         "complete", "models", "ok / skipped / failed", "summary"]))
    else:
        body.append("_No results yet: run `python -m bench.run`._")
    path = os.path.join(out_root, "README.md")
    atomic_write_text(path, "\n".join(body) + "\n")
    return path


def main(argv: list[str] | None = None) -> int:
    """Re-render the files of existing results.json files (no measuring)."""
    paths = sys.argv[1:] if argv is None else argv
    if not paths or paths[0] in ("-h", "--help"):
        print(USAGE if paths else f"error: {USAGE}", file=sys.stdout if paths else sys.stderr)
        return 0 if paths else 2
    for path in paths:
        if os.path.isdir(path):
            path = os.path.join(path, "results.json")
        try:
            env, records = load_results(path)
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        folder = os.path.dirname(os.path.abspath(path))
        try:
            write_results(folder, env, records)
            write_index(os.path.dirname(folder))
        except OSError as exc:
            print(f"error: cannot write results under {folder}: {exc.strerror or exc}", file=sys.stderr)
            return 1
        print(os.path.join(folder, "summary.md"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
