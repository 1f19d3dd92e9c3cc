"""Result files from typed records: results.json, results.csv, summary.md and the plots (the OUT/README.md index:
bench.report.index; the staged run folder: bench.report.staging).

Reads records (bench.records) only, never measures and never recomputes a field a record holds. Re-render a run's
files after changing this module with ``python -m bench.report OUT/<device>/results.json``.
"""
from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import os
import sys
from typing import Any

from bench.profile.section import profile_section
from bench.records import (
    PERCENTILE_MIN_CALLS,
    RECORD_TYPES,
    SCHEMA_VERSION,
    THROUGHPUT_DEFINITION,
    Record,
    RunEnv,
)
from bench.report import infer_tables, overview, serve_tables, tables
from bench.report import plots as plotting
from bench.report.glance import glance_lines
from bench.report.index import write_index
from bench.report.load import load_results
from bench.report.samples import pack
from bench.report.schema import results_from_json
from zoo.atomic import atomic_write_text

FILES = ("results.json", "results.csv", "summary.md")
USAGE = "usage: python -m bench.report OUT/<device>/results.json [...]"


# ---------------------------------------------------------------------------------------------------------------
# results.json


def _clean(value: Any) -> Any:
    """Strict-JSON values: NaN/inf become null (they mean "not measured"), numpy scalars become Python ones."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", None) == 0:
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _record_dict(rec: Record) -> dict[str, Any]:
    """A record as JSON; a raw-sample list keeps only its finite samples (NaN or inf is no measurement), a long one
    stored as its values' counts per process (bench.report.samples: every sample kept)."""
    data = rec.to_dict()
    for f in dataclasses.fields(rec):
        if str(f.type) == "list[float]" and isinstance(data.get(f.name), (list, tuple)):
            finite = [v for v in data[f.name] if not (isinstance(v, float) and not math.isfinite(v))]
            data[f.name] = pack(finite, getattr(rec, "samples_per_repeat", None))
    return data


def results_payload(env: RunEnv, records: list[Record]) -> dict[str, Any]:
    """The results.json object of a run (strict-JSON clean): what write_results writes and load_results reads."""
    return _clean({"schema_version": SCHEMA_VERSION, "env": env.to_dict(), "records": [_record_dict(r) for r in records]})


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
    """One row per record of a ``results_payload`` (already strict-JSON clean); dict cells as JSON."""
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


def header_lines(env: RunEnv) -> list[str]:
    """The title and the INCOMPLETE / QUICK banners: what a reader must know before any figure."""
    lines = [title(env), ""]
    if not env.complete:
        lines += [f"> **{incomplete_label(env)}: the run stopped before its plan was done (interrupted, out of "
                  "budget, or crashed). Rows missing below were never measured; they are not failures.**", ""]
    if env.quick:
        lines += ["> **QUICK RUN: short timing windows and reduced batch sizes; these numbers check the harness, "
                  "they are not measurements to quote.**", ""]
    return lines


def env_section(env: RunEnv) -> list[str]:
    """The settings table: where, when and how the run was made (rows: records, as overview.row_counts counts)."""
    threads = f"{env.threads or '?'} torch threads of {env.cpu_count or '?'} CPUs"
    skipped = "; ".join(f"{p}: {why}" for p, why in env.skipped_precisions.items())
    rows = [["device", f"{env.device_name} ({env.device})"], ["torch", env.torch], ["torchvision", env.torchvision],
            ["onnxruntime", env.onnxruntime], ["CUDA", env.cuda], ["python", env.python], ["platform", env.platform],
            ["CPU capability", env.cpu_capability], ["threads", threads], ["memory", tables.num(env.memory_gb, " GB")],
            ["clock", env.clock], ["maths policy", tables.inline(env.maths)],
            ["calibration (1 thread)", _calibration_cell(env.calibration)], ["measured peaks", _peaks_cell(env.peaks)],
            ["harness floor per call", tables.floor_cell(env.harness_floor)],
            ["git commit", env.git_commit], ["timestamp (UTC)", env.timestamp],
            ["command", f"`{env.command}`" if env.command else None], ["wall time", tables.seconds(env.wall_s)],
            ["budget", tables.seconds(env.budget_s)], ["quick", "YES" if env.quick else "no"],
            ["rows done", f"{env.done_rows} of {env.planned_rows} planned" if env.planned_rows is not None else None],
            ["complete", "yes" if env.complete else f"**{incomplete_label(env)}**"],
            ["skipped precisions", skipped],
            ["budget plan", _budget_cell(env)],
            ["notes", _settings({k: v for k, v in env.notes.items() if k not in OWN_NOTES})],
            ["data and weights", _provenance_cell(env.provenance)]]
    lines = ["## Settings", "", tables.table([r for r in rows if r[1] not in (None, "")], ["setting", "value"])]
    methods = [f"- {k.replace('_method', '')}: {v}" for k, v in env.peaks.items() if k.endswith("_method")]
    if methods:
        lines += ["", "How the peaks were measured:", "", *methods]
    return lines + _phase_time_section(env)


def _provenance_cell(provenance: dict[str, Any]) -> str:
    """Per model: its data (real, from which folder, or synthetic) and weights (which checkpoint, or random)."""
    parts = []
    for model, p in provenance.items():
        subset = f" ({p['data_subset']})" if p.get("data_subset") else ""
        data = f"real{subset} from {p.get('data_dir')}" if p.get("data") == "real" else p.get("data") or "?"
        weights = p.get("checkpoint") if p.get("weights") == "checkpoint" else p.get("weights") or "?"
        parts.append(f"{model}: data {data}, weights {weights}")
    return "; ".join(parts)


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
    # The rows kept and dropped are counted once, in the "rows" setting (overview.row_counts): not again here.
    return (f"priced here: {tables.num(b.get('priced_floor_s'), ' s')} at the sample rules' floor, "
            f"{tables.num(b.get('priced_full_s'), ' s')} at full size; pricing pass "
            f"{tables.num(prices.get('pricing_s'), ' s')}{first}")


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _calibration_cell(cal: dict[str, Any]) -> str:
    probes = cal.get("probes") or {}
    return "; ".join(f"{p.get('what', name)}: {tables.num(p.get('median_ms'))} ms median"
                     for name, p in probes.items() if isinstance(p, dict))


def _peaks_cell(peaks: dict[str, Any]) -> str:
    physical = peaks.get("physical") if isinstance(peaks.get("physical"), dict) else {}
    derived = set(physical.get("flops_per_s") or {})  # precisions whose divisor is the physical peak, not a probe
    cells = [f"{k.replace('_flops_per_s', '')} {tables.num(v / 1e9)} GFLOP/s"
             + (" (physical)" if k.replace("_flops_per_s", "") in derived else "")
             for k, v in peaks.items() if k.endswith("_flops_per_s") and isinstance(v, (int, float))]
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
            "**% of peak**: achieved FLOP/s (counted FLOPs x samples/s) over the peak above (the physical peak where the hardware gives one; above 100% the kernels do fewer FLOPs than counted).",
            "- **Comparing runs**: `python -m bench.compare A/results.json B/results.json` matches rows by key and "
            "calls a change real only when it is larger than the rows' spread.",
            f"- **Sample rules**: a figure resting on fewer than {tables.LOW_N_CALLS} calls or {tables.LOW_N_WINDOWS} "
            "windows reads `X (low n: N)`, without a spread: too few samples for one."]


def render_summary(env: RunEnv, records: list[Record], plot_files: list[str] | tuple[str, ...] = ()) -> str:
    """The Markdown summary of one run; ``plot_files`` are the PNG names written beside it. Its first screen is the
    answers (the glance) and the run in a few lines; the full tables follow, then settings, method and every skipped
    or failed row. No line outside a table is over overview.MAX_LINE characters."""
    glance = glance_lines(env, records)
    out = header_lines(env) + (glance + [""] if glance else []) + overview.run_lines(env, records)
    for section in (infer_tables.infer_section, tables.train_section, tables.parity_section, tables.scale_section,
                    tables.tta_section, serve_tables.serve_section, tables.zoo_section):
        lines = section(records)
        if lines:
            out += [""] + lines
    out += [""] + env_section(env) + [""] + method_section(env) + [""] + tables.not_ok_section(records)
    if plot_files:
        out += ["", "## Plots", "", *(f"![{name}]({name})" for name in plot_files)]
    return "\n".join(overview.wrap_prose("\n".join(out).split("\n"))) + "\n"


# ---------------------------------------------------------------------------------------------------------------
# Files


def profile_markdown(out_dir: str) -> str:
    """bench.run --profile's section (bench.profile.section) after the tables, when the run has profiles."""
    lines = profile_section(out_dir)
    return "\n" + "\n".join(lines) + "\n" if lines else ""


def write_results(out_dir: str, env: RunEnv, records: list[Record], *, plots: bool = True) -> list[str]:
    """Write results.json, results.csv, summary.md (and, with ``plots``, the PNGs) into ``out_dir``, each atomically.

    Everything is serialised (plots rendered) before the first file is touched: a value that cannot be written
    raises here and the previous files stay whole. results.json goes first, so the other files can always be
    re-rendered from it. Without ``plots`` the summary links no plot and existing PNGs are left as they are.
    """
    payload = results_payload(env, records)
    try:
        results_from_json(payload)  # what is written must load back: never a file the strict loader refuses
    except ValueError as exc:
        raise ValueError(f"results not written, they would not load back: {exc}") from None
    pngs = plotting.render_plots(records) if plots else {}
    texts = {"results.json": json.dumps(payload, indent=1, allow_nan=False) + "\n",
             "results.csv": csv_text(payload, records),
             "summary.md": render_summary(env, records, list(pngs)) + profile_markdown(out_dir)}
    written = []
    for name, body in texts.items():
        path = os.path.join(out_dir, name)
        atomic_write_text(path, body)
        written.append(path)
    if plots:
        written += plotting.store_plots(out_dir, pngs)
    return written


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
