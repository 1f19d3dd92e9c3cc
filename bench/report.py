"""Result files from records: results.json, results.csv, summary.md, plots, and the OUT/README.md index.

Reads records only (the contract in bench.common), never measures. Re-render a run after changing this file with
``python -m bench.report OUT/<device>/results.json``.
"""
from __future__ import annotations

import csv
import glob
import io
import json
import math
import os
import sys
from typing import Any

from tabulate import tabulate

from zoo.checkpoint import atomic_write_text

PARITY_TOLERANCE = 1e-4
LOADERS = ("seed", "tutorial", "fast", "compute")
BACKENDS = ("eager", "compile", "onnxruntime", "onnxruntime-cuda", "cuda_graph")
LATENCY_PNG, TRAIN_PNG = "latency.png", "train_throughput.png"
FILES = ("results.json", "results.csv", "summary.md")


# ---------------------------------------------------------------------------------------------------------------
# Files


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


def csv_text(records: list[dict[str, Any]]) -> str:
    """Every record as a row; the columns are the union of the records' keys, in first-seen order."""
    columns: dict[str, None] = {}
    for rec in records:
        columns.update(dict.fromkeys(rec))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns), restval="", lineterminator="\n")
    writer.writeheader()
    for rec in records:
        writer.writerow({k: "" if v is None else v for k, v in rec.items()})
    return buf.getvalue()


def write_results(out_dir: str, env: dict[str, Any], records: list[dict[str, Any]], *, plots: bool = True
                  ) -> list[str]:
    """Write results.json, results.csv, summary.md (and the plots) into ``out_dir``, each atomically."""
    env, records = _clean(env), _clean(records)
    # Serialise everything before touching the disk: a bad value raises here and the old files stay whole.
    text = json.dumps({"env": env, "records": records}, indent=1, allow_nan=False) + "\n"
    texts = {"results.json": text, "results.csv": csv_text(records), "summary.md": render_summary(env, records)}
    written = []
    for fname, body in texts.items():
        atomic_write_text(os.path.join(out_dir, fname), body)
        written.append(os.path.join(out_dir, fname))
    if plots:
        from bench.plots import write_plots  # matplotlib only when plots are drawn

        written += write_plots(out_dir, records)
    return written


def load_results(path: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(env, records) of a results.json; ValueError with a one-line reason when it is not one."""
    try:
        with open(path) as f:
            data = json.load(f)
    except FileNotFoundError:
        raise ValueError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: cannot read it ({type(exc).__name__})") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON (line {exc.lineno}: {exc.msg})") from None
    if not isinstance(data, dict) or not isinstance(data.get("records"), list) \
            or not all(isinstance(r, dict) for r in data["records"]):
        raise ValueError(f"{path}: not a bench results file (expected {{\"env\": ..., \"records\": [...]}})")
    env = data.get("env") if isinstance(data.get("env"), dict) else {}
    return env, data["records"]


def write_index(out_root: str) -> str:
    """OUT/README.md: one row per OUT/<device>/results.json present, linking its summary."""
    rows = []
    for path in sorted(glob.glob(os.path.join(out_root, "*", "results.json"))):
        folder = os.path.basename(os.path.dirname(path))
        try:
            env, records = load_results(path)
        except ValueError as exc:
            rows.append([folder, f"unreadable: {exc}", "", "", "", "", "", ""])
            continue
        counts = {s: sum(r.get("status") == s for r in records) for s in ("ok", "skipped", "failed")}
        models = len({r.get("model") for r in records})
        rows.append([env.get("device", folder), env.get("device_name", ""), env.get("timestamp", ""),
                     env.get("git_commit") or "", "**QUICK**" if env.get("quick") else "no", models,
                     f"{counts['ok']} / {counts['skipped']} / {counts['failed']}",
                     f"[{folder}/summary.md]({folder}/summary.md)"])
    body = ["# Benchmark results", "",
            "One folder per device; each holds results.json (every record), results.csv, summary.md and plots.",
            "Runs marked QUICK used short timing windows and reduced batch sizes: use them to check the harness, "
            "not to quote numbers.", ""]
    if rows:
        body.append(tabulate(rows, headers=["device", "device name", "timestamp (UTC)", "git commit", "quick",
                                             "models", "ok / skipped / failed", "summary"],
                             tablefmt="github", disable_numparse=True))
    else:
        body.append("_No results yet: run `python -m bench.run`._")
    path = os.path.join(out_root, "README.md")
    atomic_write_text(path, "\n".join(body) + "\n")
    return path


# ---------------------------------------------------------------------------------------------------------------
# Formatting


def _num(x: Any, unit: str = "") -> str:
    """About three significant figures, thousands separated; blank for missing."""
    if x is None or isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x):
        return ""
    a = abs(x)
    text = f"{x:,.0f}" if a >= 100 else f"{x:.1f}" if a >= 10 else f"{x:.2f}" if a >= 1 else f"{x:.3g}"
    return text + unit


def _sci(x: Any) -> str:
    return f"{x:.2e}" if isinstance(x, (int, float)) and not isinstance(x, bool) else ""


def _pct(x: Any) -> str:
    return f"{100 * x:.1f}%" if isinstance(x, (int, float)) and not isinstance(x, bool) else ""


def _ok(rec: dict[str, Any]) -> bool:
    return rec.get("status", "ok") == "ok"


def _variant(rec: dict[str, Any]) -> str:
    parts = []
    if rec.get("channels_last"):
        parts.append("channels_last")
    if rec.get("compile"):
        parts.append(f"compile={rec['compile']}")
    return ", ".join(parts) or "-"


def _ordered(values, order) -> list:
    present = list(dict.fromkeys(values))
    return [v for v in order if v in present] + [v for v in present if v not in order]


def _table(rows: list[list[Any]], headers: list[str]) -> str:
    return tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True)


def _phase(records, phase):
    return [r for r in records if r.get("phase") == phase]


# ---------------------------------------------------------------------------------------------------------------
# Summary tables


def _env_block(env: dict[str, Any]) -> list[str]:
    where = f"{env.get('device_name') or '?'} ({env.get('device') or '?'})"
    title = f"# QUICK RUN - benchmark on {where}" if env.get("quick") else f"# Benchmark on {where}"
    lines = [title, ""]
    if env.get("quick"):
        lines += ["> **QUICK RUN: short timing windows and reduced batch sizes; these numbers check the harness, "
                  "they are not measurements to quote.**", ""]
    threads = f"{env.get('cpu_threads', '?')} torch threads of {env.get('cpu_count', '?')} CPUs"
    rows = [["device", where], ["torch", env.get("torch")], ["torchvision", env.get("torchvision")],
            ["onnxruntime", env.get("onnxruntime")], ["CUDA", env.get("cuda")], ["python", env.get("python")],
            ["platform", env.get("platform")], ["threads", threads], ["memory", _num(env.get("memory_gb"), " GB")],
            ["git commit", env.get("git_commit")], ["timestamp (UTC)", env.get("timestamp")],
            ["wall time", _num(env.get("wall_s"), " s")],
            ["command", f"`{env['command']}`" if env.get("command") else None],
            ["quick", "YES" if env.get("quick") else "no"]]
    return lines + [_table([[k, "" if v is None else v] for k, v in rows if v not in (None, "")], ["setting", "value"])]


def _overview(records) -> list[list[str]]:
    rows = []
    for r in _phase(records, "model"):
        if not _ok(r):
            continue
        acc = r.get("checkpoint_acc")
        rows.append([r["model"], r.get("input_shape", ""), f"{r['params_total']:,}" if "params_total" in r else "",
                     f"{r['params_trainable']:,}" if "params_trainable" in r else "",
                     _num(r["flops_per_sample"] / 1e6) if r.get("flops_per_sample") is not None else "",
                     r.get("weights", ""), _pct(acc) if acc is not None else "-",
                     "yes" if r.get("pretrained") else "no", r.get("data", "")])
    return rows


def _train_rows(records) -> list[list[str]]:
    groups: dict[tuple, dict[str, dict]] = {}
    for r in _phase(records, "train"):
        key = (r.get("model"), r.get("batch_size"), r.get("precision") or "fp32", _variant(r))
        groups.setdefault(key, {})[r.get("loader")] = r
    rows = []
    for (model, batch, precision, variant), by_loader in groups.items():
        sps = {ld: (rec.get("samples_per_s") if _ok(rec) else None) for ld, rec in by_loader.items()}
        cells = [_num(sps[ld]) if sps.get(ld) is not None else by_loader[ld].get("status", "") if ld in by_loader
                 else "" for ld in LOADERS]
        fast = by_loader.get("fast", {})
        speedup = fast.get("speedup_vs_seed") if _ok(fast) else None
        if speedup is None and sps.get("fast") and sps.get("seed"):
            speedup = sps["fast"] / sps["seed"]
        frac = fast.get("fraction_of_compute") if _ok(fast) else None
        if frac is None and sps.get("fast") and sps.get("compute"):
            frac = sps["fast"] / sps["compute"]
        rel_iqr = [rec["samples_per_s_iqr"] / rec["samples_per_s"] for rec in by_loader.values()
                   if _ok(rec) and rec.get("samples_per_s_iqr") is not None and rec.get("samples_per_s")]
        rows.append([model, batch, precision, variant, *cells, f"{speedup:.2f}x" if speedup else "",
                     _pct(frac) if frac else "", _pct(max(rel_iqr)) if rel_iqr else "",
                     _num(fast.get("gflops_per_s")) if _ok(fast) else ""])
    return rows


def _infer_rows(records) -> tuple[list[str], list[list[str]]]:
    infer = _phase(records, "infer")
    backends = _ordered([r.get("backend") for r in infer], BACKENDS)
    groups: dict[tuple, dict[str, dict]] = {}
    for r in infer:
        groups.setdefault((r.get("model"), r.get("batch_size"), r.get("precision") or "fp32"), {})[r.get("backend")] = r
    headers = ["model", "batch", "precision"]
    for b in backends:
        headers += [f"{b} p50 ms", f"{b} p99 ms", f"{b} samples/s"] + ([] if b == "eager" else [f"{b} vs eager"])
    rows = []
    for (model, batch, precision), by_backend in sorted(groups.items(), key=lambda kv: _group_order(kv[0], infer)):
        eager = by_backend.get("eager", {})
        row = [model, batch, precision]
        for b in backends:
            rec = by_backend.get(b)
            if rec is None or not _ok(rec):
                row += [rec.get("status", "") if rec else "", "", ""] + ([] if b == "eager" else [""])
                continue
            row += [_num(rec.get("p50_ms")), _num(rec.get("p99_ms")), _num(rec.get("samples_per_s"))]
            if b != "eager":
                speedup = rec.get("speedup_vs_eager")
                if speedup is None and _ok(eager) and eager.get("p50_ms") and rec.get("p50_ms"):
                    speedup = eager["p50_ms"] / rec["p50_ms"]
                row.append(f"{speedup:.2f}x" if speedup else "")
        rows.append(row)
    return headers, rows


def _group_order(key, infer):
    models = list(dict.fromkeys(r.get("model") for r in infer))
    return models.index(key[0]), key[1] if isinstance(key[1], int) else 0, str(key[2])


def _parity_rows(records) -> list[list[str]]:
    rows = []
    for r in _phase(records, "parity"):
        if not _ok(r):
            continue
        tol = r.get("tolerance") or PARITY_TOLERANCE
        ok = r.get("parity_ok")
        if ok is None and r.get("max_abs_diff") is not None:
            ok = r["max_abs_diff"] <= tol
        agree = _pct(r.get("argmax_agreement"))
        if agree and r.get("agreement_samples"):
            agree += f" of {r['agreement_samples']:,}"
        rows.append([r["model"], r.get("opset", ""), r.get("exporter", ""), _sci(r.get("max_abs_diff")),
                     _sci(r.get("max_rel_diff")), agree, ("PASS" if ok else "FAIL") + f" (<= {tol:g})",
                     _num(r.get("onnx_mb")), _num(r.get("export_s"))])
    return rows


def _scale_rows(records) -> list[list[str]]:
    return [[r["model"], r.get("processes", ""), _num(r.get("samples_per_s")), _pct(r.get("scaling_efficiency"))]
            for r in _phase(records, "scale") if _ok(r)]


def _not_ok_rows(records) -> list[list[str]]:
    rows = []
    for r in records:
        if _ok(r):
            continue
        what = r.get("loader") or r.get("backend") or ""
        if r.get("precision") not in (None, "fp32") or _variant(r) != "-":
            what = " ".join(x for x in (what, r.get("precision") or "", _variant(r).replace("-", "")) if x)
        rows.append([r.get("model", ""), r.get("phase", ""), what, r.get("batch_size", ""), r.get("status", ""),
                     r.get("reason", "")])
    return rows


HOW_TO_READ = """\
**How to read this.** Training throughput is the median samples/s over timed windows after warm-up: *seed* is the
tutorial's own loop as first written (per-step host syncs), *tutorial* the same Dataset + DataLoader feeding the shared
loop, *fast* the device-resident loader with batched transforms, and *compute* the model stepping over one batch that
is already on the device (the ceiling any data path can reach). *fast vs seed* is what the shared loop gains over the tutorial code;
*fast % of compute* says how much of that ceiling the fast loader reaches; *IQR %* is the worst relative interquartile
range among the row's measurements, i.e. how noisy it is. Inference latency is per call for a whole batch (p50 = median,
p99 = tail); samples/s = batch size / mean latency; *vs eager* = eager p50 / this backend's p50 at the same batch size.
Parity compares ONNX Runtime outputs against eager PyTorch on the same inputs; PASS means the largest absolute
difference is within the tolerance. Differences smaller than the IQR are noise: compare runs with `python -m
bench.compare`, which applies that rule."""


def render_summary(env: dict[str, Any], records: list[dict[str, Any]]) -> str:
    """The Markdown summary of one run: every table, with a note where a phase has no results."""
    out = _env_block(env)

    def section(title: str, rows: list, headers: list[str], missing: str) -> None:
        out.extend(["", f"## {title}", ""])
        out.append(_table(rows, headers) if rows else f"_{missing}_")

    section("Zoo", _overview(records), ["model", "input", "params", "trainable", "MFLOPs/sample", "weights",
                                        "checkpoint acc", "pretrained", "data"], "no model records")
    section("Training throughput (samples/s)", _train_rows(records),
            ["model", "batch", "precision", "variant", "seed loop", "tutorial", "fast", "compute-bound",
             "fast vs seed", "fast % of compute", "IQR %", "GFLOP/s (fast)"], "training phase not run")
    headers, rows = _infer_rows(records)
    section("Inference latency", rows, headers, "inference phase not run")
    section("ONNX parity", _parity_rows(records), ["model", "opset", "exporter", "max abs diff", "max rel diff",
                                                   "argmax agreement", "verdict", "ONNX MB", "export s"],
            "parity phase not run")
    if _phase(records, "scale"):
        section("Multi-process scaling", _scale_rows(records),
                ["model", "processes", "samples/s", "scaling efficiency"], "no successful scaling runs")
    section("Failed and skipped", _not_ok_rows(records), ["model", "phase", "what", "batch", "status", "reason"],
            "nothing failed or was skipped")
    plots = [f"![{name}]({name})" for name, ok in ((LATENCY_PNG, _has_latency(records)),
                                                    (TRAIN_PNG, _has_train(records))) if ok]
    if plots:
        out += ["", "## Plots", "", *plots]
    out += ["", HOW_TO_READ, ""]
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------------------------
# Plots


def _has_latency(records) -> bool:
    return any(_ok(r) and r.get("p50_ms") for r in _phase(records, "infer"))


def _base_train(records) -> list[dict]:
    return [r for r in _phase(records, "train") if _ok(r) and r.get("samples_per_s")
            and (r.get("precision") or "fp32") == "fp32" and _variant(r) == "-"]


def _has_train(records) -> bool:
    return bool(_base_train(records))


def main(argv: list[str] | None = None) -> int:
    """Re-render the files of existing results.json files (no measuring)."""
    paths = sys.argv[1:] if argv is None else argv
    if not paths:
        print("error: usage: python -m bench.report OUT/<device>/results.json [...]", file=sys.stderr)
        return 2
    for path in paths:
        try:
            env, records = load_results(path)
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        folder = os.path.dirname(os.path.abspath(path))
        write_results(folder, env, records)
        write_index(os.path.dirname(folder))
        print(os.path.join(folder, "summary.md"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
