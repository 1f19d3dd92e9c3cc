"""The Markdown tables of summary.md, one builder per record type. Each shows what the records hold (a derived field
such as a speedup or % of compute is the phase's value, never recomputed here) with its spread and sample count.
"""
from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

from tabulate import tabulate

from bench.records import (
    PERCENTILE_MIN_CALLS,
    TRAIN_ROWS,
    ModelRecord,
    ParityRecord,
    Record,
    ScaleRecord,
    TrainRecord,
    TtaRecord,
)
from bench.report.intervals import ratio_ci
from bench.report.selection import ladder_rows, models_of, of_type, variant_rows

# ---------------------------------------------------------------------------------------------------------------
# Cells


def _is_num(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def num(x: Any, unit: str = "") -> str:
    """About three significant figures, thousands separated; blank when not measured."""
    if not _is_num(x):
        return ""
    a = abs(x)
    text = f"{x:,.0f}" if a >= 100 else f"{x:.1f}" if a >= 10 else f"{x:.2f}" if a >= 1 else f"{x:#.3g}"
    return text + unit


def count(x: Any) -> str:
    return f"{x:,}" if _is_num(x) else ""


def pct(fraction: Any, digits: int = 1) -> str:
    return f"{100 * fraction:.{digits}f}%" if _is_num(fraction) else ""


def peak_pct(fraction: Any) -> str:
    """% of the physical peak; above 100% the row's kernels do fewer FLOPs than counted (Winograd, FFT), and say so."""
    text = pct(fraction)
    return f"{text} (fewer FLOPs than counted)" if _is_num(fraction) and fraction > 1.0 else text


def sci(x: Any) -> str:
    return f"{x:.2e}" if _is_num(x) else ""


def ratio(x: Any) -> str:
    return f"{x:.2f}x" if _is_num(x) else ""


def rung_gain_cell(r: TrainRecord) -> str:
    """The gain over the rung before, with its interval; a rung of the same configuration as the one before says so
    (no gain between a row and itself), and a tuned rung measured slower than the default says that."""
    if r.same_config_as:
        return f"= {r.same_config_as} (the tuner kept the default)"
    text = ratio_ci(r.rung_gain, r.rung_gain_lo, r.rung_gain_hi)
    if r.row == "fast" and _is_num(r.rung_gain_hi) and r.rung_gain_hi < 1.0:
        text += ": the tuner's choice measured slower than the default"
    return text


def h1_cell(r: TrainRecord) -> str:
    """vs tutorial_loop with its interval; on the fast row (H1) the precision asked and reached."""
    text = ratio_ci(r.speedup_vs_tutorial_loop, r.speedup_lo, r.speedup_hi)
    if text and _is_num(r.target_pct) and _is_num(r.reached_pct):
        text += f" (+-{r.reached_pct:.1f}%, target +-{r.target_pct:g}% {'met' if r.target_met else 'not met'})"
    return text


def seconds(x: Any) -> str:
    return num(x, " s")


def yes_no(x: Any) -> str:
    return "" if x is None else "yes" if x else "no"


def with_iqr(median: Any, iqr: Any) -> str:
    """``median ± IQR (IQR as % of the median)``: the figure and how much its samples spread."""
    if not _is_num(median):
        return ""
    if not _is_num(iqr):
        return num(median)
    rel = f" ({pct(iqr / median)})" if median else ""
    return f"{num(median)} ± {num(iqr)}{rel}"


# The sample rules a row's spread needs: a latency row at least PERCENTILE_MIN_CALLS[50] calls, a training or scaling
# row at least LOW_N_WINDOWS windows. A row on fewer is marked `low n` and its spread is not printed.
LOW_N_CALLS = PERCENTILE_MIN_CALLS[50]
LOW_N_WINDOWS = 5


def spread_cell(median: Any, iqr: Any, n: Any, least: int) -> str:
    """``with_iqr``, or ``X (low n: N)`` for a figure resting on fewer than ``least`` samples: its IQR would not
    mean what it says, so it is left out."""
    if _is_num(n) and n < least:
        return f"{num(median)} (low n: {n})" if _is_num(median) else ""
    return with_iqr(median, iqr)


def percentile_cell(value: Any, n_calls: Any, max_ms: Any, q: int) -> str:
    """The q-th percentile when the record holds one; when too few calls were timed for it, the slowest call with
    the count, so nobody reads a maximum of 30 calls as a p99."""
    if _is_num(value):
        return num(value)
    if _is_num(max_ms) and _is_num(n_calls) and n_calls < PERCENTILE_MIN_CALLS[q]:
        return f"max {num(max_ms)} (n={n_calls:,})"
    return ""


MAX_CELL = 120  # a longer cell (a command, a reason, a settings block) becomes a numbered note under its table


def table(rows: Sequence[Sequence[Any]], headers: Sequence[str], max_cell: int | None = MAX_CELL) -> str:
    """A GitHub-Markdown table; a cell over ``max_cell`` characters reads ``see [n] below`` and its text follows the
    table as note [n], so no column is stretched past a screen and nothing is cut (None: cells as long as they are,
    for the index, whose one wide cell is an unreadable file's reason)."""
    notes: list[str] = []

    def cell(v: Any) -> str:
        text = "" if v is None else str(v).replace("\n", " ")
        if max_cell is not None and len(text) > max_cell:
            notes.append(text)
            return f"see [{len(notes)}] below"
        return text.replace("|", "\\|")

    body = tabulate([[cell(v) for v in row] for row in rows], headers=list(headers), tablefmt="github",
                    disable_numparse=True)
    return body + "".join(f"\n\n[{i}] {text}" for i, text in enumerate(notes, 1))


def inline(d: dict[str, Any] | None) -> str:
    """A small dict as ``k=v, k=v`` (nested values as compact JSON)."""
    if not d:
        return ""
    return ", ".join(f"{k}={v if isinstance(v, (str, int, float, bool)) or v is None else json.dumps(v)}"
                     for k, v in d.items())


def tuned_text(choice: dict[str, Any]) -> str:
    """The tuner's choice in words, with its measured gain and each probed candidate's median samples/s."""
    parts = ["channels_last" if choice.get("channels_last") else "contiguous",
             f"{choice.get('optimizer_impl', '?')} optimizer",
             f"compile={choice['compile']}" if choice.get("compile") else "no compile"]
    if choice.get("cudnn_benchmark"):
        parts.append("cudnn.benchmark")
    text = ", ".join(parts)
    measured = choice.get("measured") or {}
    if not measured:  # nothing was timed: there is no gain to show
        why = choice.get("reason") or "no candidate fit the tuner's budget, or the run is too short to pay for a probe"
        return text + f" (the default configuration, not probed: {why})"
    if isinstance(choice.get("gain"), (int, float)):
        text += f" ({choice['gain']:.2f}x the default configuration in the tuner's probe"
        text += "; probe medians, samples/s: " + ", ".join(f"{k} {num(v)}" for k, v in measured.items()) + ")"
    return text


def floor_cell(floor: dict[str, Any] | None) -> str:
    """The harness's floor per call (RunEnv.harness_floor) as ``p50 X us ± IQR (n calls, how)``; blank when absent."""
    if not floor or not _is_num(floor.get("p50_us")):
        return ""
    spread = f" ± {num(floor['iqr_us'])}" if _is_num(floor.get("iqr_us")) else ""
    return f"p50 {num(floor['p50_us'])} us{spread} ({count(floor.get('n_calls'))} calls; {floor.get('how', '')})"


def data_text(m: ModelRecord) -> str:
    """Where a model's data came from: ``real fashionmnist from DIR`` or ``synthetic``."""
    if m.data == "real":
        what = f"{m.dataset or ''}: {m.data_subset}" if m.data_subset else m.dataset or ""
        return f"real {what} from {m.data_dir}" if m.data_dir else f"real {what}"
    if m.data == "synthetic" and (m.dataset or "").startswith("synthetic:"):  # a model with no dataset of its own
        return f"synthetic {m.dataset.split(':', 1)[1]} images"
    return f"synthetic {m.dataset or ''}-shaped" if m.data == "synthetic" else "?"


def weights_text(m: ModelRecord) -> str:
    """Where a model's weights came from: the checkpoint with its epochs and own test accuracy, or random init."""
    if m.weights != "checkpoint":
        return "random init" if m.weights == "random" else "?"
    facts = [f"{m.checkpoint_epoch} epochs" if _is_num(m.checkpoint_epoch) else "",
             f"its test acc {pct(m.checkpoint_acc, 2)}" if _is_num(m.checkpoint_acc) else ""]
    facts = [f for f in facts if f]
    return f"trained {m.checkpoint or 'checkpoint'}" + (f" ({', '.join(facts)})" if facts else "")


def model_of(records: list[Record], model: str) -> ModelRecord | None:
    return next((r for r in of_type(records, ModelRecord, ok_only=True) if r.model == model), None)


def _status_cell(rec: Record) -> str:
    return f"**{rec.status}**"


# ---------------------------------------------------------------------------------------------------------------
# Sections (each returns Markdown lines; an empty list when the run has no such records)


def zoo_section(records: list[Record]) -> list[str]:
    rows = []
    for r in of_type(records, ModelRecord, ok_only=True):
        mflops = r.flops_per_sample / 1e6 if _is_num(r.flops_per_sample) else None
        train_mflops = r.train_flops_per_sample / 1e6 if _is_num(r.train_flops_per_sample) else None
        rows.append([r.model, r.dataset, r.input_shape, count(r.params_total), count(r.params_trainable),
                     num(mflops), num(train_mflops), weights_text(r), pct(r.checkpoint_acc) or "-",
                     yes_no(r.pretrained), data_text(r)])
    if not rows:
        return []
    return ["## Zoo", "", table(rows, ["model", "dataset", "input", "params", "trainable", "MFLOPs/sample (fwd)",
                                       "MFLOPs/sample (train)", "weights", "checkpoint acc", "pretrained", "data"])]


def compute_fraction_cell(r: TrainRecord) -> str:
    """% of the compute bound; a row above the bound by more than the noise is flagged, never shown over 100%."""
    if r.above_bound:
        return "**ABOVE BOUND by more than noise** (the bound is suspect)"
    if r.row == "compute":
        return "(the bound)"
    if not _is_num(r.fraction_of_compute):
        return ""
    return "at bound (within noise)" if r.fraction_of_compute >= 1 else pct(r.fraction_of_compute)


def _windows(r: TrainRecord | ScaleRecord) -> str:
    if not _is_num(r.windows):
        return ""
    return f"{r.windows} x {r.steps_per_window:,} steps" if _is_num(r.steps_per_window) else str(r.windows)


def _ladder_table(rows: list[TrainRecord]) -> str:
    body = []
    for r in rows:
        if not r.ok:
            body.append([r.row, _status_cell(r)] + [""] * 9)
            continue
        label = " ".join([str(r.row), *(["channels_last"] * bool(r.channels_last)),
                          *([f"compile={r.compile}"] if r.compile else [])])  # what ran, as its fields say
        body.append([label, spread_cell(r.samples_per_s, r.samples_per_s_iqr, r.windows, LOW_N_WINDOWS), _windows(r), rung_gain_cell(r),
                     h1_cell(r), compute_fraction_cell(r), peak_pct(r.pct_of_peak),
                     num(r.gflops_per_s), num(r.peak_mem_mb), num(r.mem_delta_mb), num(r.mem_held_mb)])
    return table(body, ["rung", "samples/s ± IQR (IQR %)", "windows", "gain over previous rung [95% CI]",
                        "vs tutorial_loop [95% CI]",
                        "% of compute", "% of peak", "GFLOP/s", "peak mem MB", "peak above start MB",
                        "held above start MB"])


def train_section(records: list[Record]) -> list[str]:
    out: list[str] = []
    for model in models_of(of_type(records, TrainRecord)):
        rows = ladder_rows(records, model)
        for batch in dict.fromkeys(r.batch_size for r in rows):
            group = [r for r in rows if r.batch_size == batch]
            first = next((r for r in group if r.ok), group[0])
            m = model_of(records, model)
            data = data_text(m) if m is not None and m.data == first.data else first.data or "?"
            facts = [f"batch {batch}", "fp32", f"data {data}", f"{first.threads or '?'} threads"]
            if any(r.quick for r in group):
                facts.append("QUICK")
            out += ["", f"### {model}: {', '.join(facts)}", "", _ladder_table(group)]
            tuned = [f"`{r.row}`: {tuned_text(r.tuned)}" for r in group if r.tuned]
            if tuned:
                out += ["", "Tuner's choice: " + "; ".join(tuned)]
    variants = variant_rows(records)
    if variants:
        body = []
        for r in variants:
            key = [r.model, r.row, r.batch_size, r.precision, yes_no(r.channels_last), r.compile or "-"]
            if not r.ok:
                body.append(key + [_status_cell(r)] + [""] * 7)
                continue
            body.append(key + [spread_cell(r.samples_per_s, r.samples_per_s_iqr, r.windows, LOW_N_WINDOWS), _windows(r),
                               ratio(r.speedup_vs_fp32_compute), compute_fraction_cell(r), peak_pct(r.pct_of_peak),
                               seconds(r.compile_s), num(r.peak_mem_mb), num(r.mem_delta_mb)])
        out += ["", "### Execution variants", "",
                "Each row changes one execution choice of a ladder rung; *vs fp32 compute* divides its median by the "
                "ladder's compute row's median (the one bound of every rung's *% of compute*).", "",
                table(body, ["model", "rung", "batch", "precision", "channels_last", "compile",
                             "samples/s ± IQR (IQR %)", "windows", "vs fp32 compute", "% of compute", "% of peak",
                             "compile s", "peak mem MB (total)", "peak above row start MB"])]
    if not out:
        return []
    rungs = "; ".join(f"*{name}*: {text}" for name, text in TRAIN_ROWS.items())
    return ["## Training throughput", "", f"Rungs, in order: {rungs}.", *out]


def parity_section(records: list[Record]) -> list[str]:
    rows = []
    for r in of_type(records, ParityRecord, ok_only=True):
        verdict = {True: "PASS", False: "**FAIL**", None: "not judged"}[r.parity_ok]
        agree = pct(r.argmax_agreement, 2)
        if agree and _is_num(r.agreement_samples):
            agree += f" of {r.agreement_samples:,}"
        exporter = r.exporter or ""
        if r.exporter_fallback_reason:
            exporter += f" (fallback: {r.exporter_fallback_reason})"
        rows.append([r.model, r.backend, r.opset, exporter, r.checker, sci(r.max_abs_diff), sci(r.max_rel_diff),
                     sci(r.max_abs_diff_b1_b3), yes_no(r.dynamic_batch_ok), agree,
                     f"{verdict} (tolerance {r.tolerance:g})", num(r.onnx_mb), seconds(r.export_s), r.data])
    if not rows:
        return []
    return ["## ONNX parity", "",
            "Outputs of the exported model against eager PyTorch on the same inputs; PASS means the largest absolute "
            "difference is within the tolerance; *b1 vs b3* checks the dynamic batch dimension.", "",
            table(rows, ["model", "backend", "opset", "exporter", "checker", "max abs diff", "max rel diff",
                         "b1 vs b3 diff", "dynamic batch", "argmax agreement", "verdict", "ONNX MB", "export s",
                         "data"])]


def scale_section(records: list[Record]) -> list[str]:
    out: list[str] = []
    for model in models_of(of_type(records, ScaleRecord)):
        mine = [r for r in of_type(records, ScaleRecord) if r.model == model]
        if all(r.status == "skipped" for r in mine):  # a table of skipped rows says nothing *Failed and skipped* doesn't
            continue
        ideals = "; ".join(dict.fromkeys(r.ideal for r in mine if r.ideal)) or "not stated"
        body = []
        for r in sorted(mine, key=lambda r: (r.batch_size or 0, r.processes or 0)):
            key = [r.processes, r.batch_size, r.batch_size_global, r.dist_backend, r.threads_per_process]
            if not r.ok:
                body.append(key + [_status_cell(r), "", "", ""])
                continue
            body.append(key + [spread_cell(r.samples_per_s, r.samples_per_s_iqr, r.windows, LOW_N_WINDOWS), _windows(r),
                               num(r.ideal_samples_per_s), pct(r.scaling_efficiency)])
        out += ["", f"### {model}", "", f"Ideal = {ideals}; efficiency = samples/s / ideal samples/s.", "",
                table(body, ["processes", "batch/process", "global batch", "backend", "threads/process",
                             "samples/s ± IQR (IQR %)", "windows", "ideal samples/s", "efficiency"])]
    return ["## Multi-process scaling", *out] if out else []


def tta_section(records: list[Record]) -> list[str]:
    rows = []
    for r in of_type(records, TtaRecord):
        m = model_of(records, r.model)
        key = [r.model, r.row, data_text(m) if m is not None and m.data == r.data else r.data, pct(r.target_acc)]
        if not r.ok:
            rows.append(key + [_status_cell(r)] + [""] * 10)
            continue
        rows.append(key + [{True: "yes", False: "**no**"}.get(r.reached, ""), r.epochs, count(r.samples_seen),
                           seconds(r.train_s), seconds(r.eval_s), seconds(r.setup_s), seconds(r.wall_s),
                           pct(r.final_acc, 2), r.batch_size, ratio(r.speedup_vs_tutorial_loop),
                           ratio(r.wall_speedup_vs_tutorial_loop)])
    if not rows:
        return []
    return ["## Time to accuracy", "",
            "Training from scratch until the test accuracy first reaches the target; *train s* counts training steps "
            "only, evaluation is *eval s*, loaders, model and the tuner's probe are *setup s*; *wall s* is all three. "
            "*vs tutorial_loop* divides the tutorial loop's train s by this row's, *wall vs tutorial_loop* its wall s. "
            "Both rows start from the same seeded initialisation (ImageNet features for AlexNet where cached), never "
            "from a checkpoint.",
            "", table(rows, ["model", "loop", "data", "target", "reached", "epochs", "samples seen", "train s", "eval s",
                             "setup s", "wall s", "final acc", "batch", "vs tutorial_loop", "wall vs tutorial_loop"])]


def not_ok_section(records: list[Record]) -> list[str]:
    rows = [[r.model, r.phase, r.describe(), r.status, r.reason] for r in records if not r.ok]
    body = table(rows, ["model", "phase", "row", "status", "reason"]) if rows else "_nothing failed or was skipped_"
    return ["## Failed and skipped", "", body]
