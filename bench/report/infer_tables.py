"""summary.md's "Inference latency" section: one table per model, each row a backend / precision / batch size with its
wall-clock latency and spread, accuracy against eager fp32, % of peak, setup cost and memory. A run whose rows carry
device time (CUDA rows on a stream torch can time: bench.phases.infer.device_fields) gets its columns after
samples/s; a run without (a CPU run) gets no empty columns.
"""
from __future__ import annotations

from bench.measure.timing import DEVICE_CLOCK
from bench.records import InferRecord, ModelRecord, Record
from bench.report.accuracy_text import accuracy_cell, delta_cell, measures_accuracy, why_agreement_only
from bench.report.intervals import ratio_ci
from bench.report.selection import infer_rows, models_of, of_type
from bench.report.tables import (
    LOW_N_CALLS,
    count,
    data_text,
    inline,
    model_of,
    num,
    pct,
    peak_pct,
    percentile_cell,
    sci,
    seconds,
    spread_cell,
    table,
    weights_text,
)


def _provenance(rows: list[InferRecord], m: ModelRecord | None = None) -> tuple[str, str | None]:
    weights = "/".join(sorted({r.weights for r in rows if r.weights})) or "?"
    data = "/".join(sorted({r.data for r in rows if r.data})) or "?"
    warn = None
    if m is not None and m.weights == weights and m.data == data:  # the model record says where from, in full
        weights, data = weights_text(m), data_text(m)
    if "random" in weights or "synthetic" in data:
        warn = ("> Weights are random or the data synthetic: agreement, not accuracy. *accuracy* and *delta* are left "
                "blank; *argmax agreement* and *max abs diff* say whether a backend agrees with eager fp32.")
    return f"weights {weights}, data {data}", warn


def _flag_cell(r: InferRecord) -> str:
    if not r.ok:
        return f"**{r.status}**"
    if r.accuracy_ok is False:
        # The delta column is blank on random weights or synthetic data: the flag says what moved and on what.
        moved = "" if measures_accuracy(r) or r.accuracy_delta_pts is None else \
            f" ({r.accuracy_delta_pts:+.2f} on {why_agreement_only(r)})"
        return f"**FLAG: accuracy moved more than {num(r.accuracy_budget_pts)} pts{moved}**"
    return "ok" if r.accuracy_ok else ""


INFER_HEADERS = ["backend", "precision", "batch", "p50 ms ± IQR (IQR %)", "p90 ms", "p99 ms", "n calls", "samples/s",
                 "vs eager [95% interval]", "race", "accuracy", "delta (pts) [95% paired CI]", "argmax agreement", "max abs diff", "% of peak", "setup s",
                 "peak mem MB", "flag"]
DEVICE_HEADERS = ["device p50 ms ± IQR (CUDA events on the backend's stream, no host sync between calls)",
                  "device n calls", "back-to-back samples/s (one sync at the end)"]  # after samples/s, CUDA runs only


def _infer_row(r: InferRecord, device: bool = False) -> list[str]:
    """A row of INFER_HEADERS; with ``device``, DEVICE_HEADERS' cells after samples/s (blank for a row without them:
    a backend on a stream of its own, such as ONNX Runtime's CUDA provider, or a failed row)."""
    key = [r.backend, r.precision, r.batch_size]
    extra = [spread_cell(r.device_p50_ms, r.device_iqr_ms, r.device_n_calls, LOW_N_CALLS), count(r.device_n_calls),
             num(r.back_to_back_samples_per_s)] if device else []
    if not r.ok:
        return key + [""] * (14 + len(extra)) + [_flag_cell(r)]
    agree = pct(r.argmax_agreement, 2)
    if agree and count(r.agreement_samples):
        agree += f" of {r.agreement_samples:,}"
    return key + [spread_cell(r.p50_ms, r.iqr_ms, r.n_calls, LOW_N_CALLS), percentile_cell(r.p90_ms, r.n_calls, r.max_ms, 90),
                  percentile_cell(r.p99_ms, r.n_calls, r.max_ms, 99), count(r.n_calls), num(r.samples_per_s),
                  *extra, ratio_ci(r.speedup_vs_eager, r.speedup_vs_eager_lo, r.speedup_vs_eager_hi), race_cell(r),
                  accuracy_cell(r), delta_cell(r), agree, sci(r.max_abs_diff),
                  peak_pct(r.pct_of_peak), seconds(r.compile_s), mem_cell(r), _flag_cell(r)]


def race_cell(r: InferRecord) -> str:
    """The row's place in its batch size's race (bench.measure.race): the winner's margin over the runner-up, the
    interval that dropped a row (at its level), or why it could not win; blank for a row not raced."""
    if r.race is None:
        return ""
    against = ratio_ci(r.race_vs_leader, r.race_vs_leader_lo, r.race_vs_leader_hi)
    level = f" ({pct(r.race_conf, 0)})" if r.race_conf not in (None, 0.95) else ""
    if r.race == "winner":
        return f"winner; {r.race_leader} {against} slower" if against else "winner"
    if r.race in ("runner-up", "raced", "dropped") and against:
        return f"{r.race}: {against}{level} the p50 of {r.race_leader}"
    return r.race


def mem_cell(r: InferRecord) -> str:
    """Peak memory, labelled "host" when it is another device's than the row's (ORT's CPU provider on a GPU run)."""
    text = num(r.peak_mem_mb)
    return f"{text} host" if text and r.mem_device and r.mem_device != r.device else text


def infer_section(records: list[Record]) -> list[str]:
    out: list[str] = []
    device = any(num(r.device_p50_ms) or num(r.back_to_back_samples_per_s)
                 for r in of_type(records, InferRecord))  # a CPU run's tables get no empty columns
    headers = INFER_HEADERS[:8] + DEVICE_HEADERS + INFER_HEADERS[8:] if device else INFER_HEADERS
    for model in models_of(of_type(records, InferRecord)):
        rows = infer_rows(records, model)
        provenance, warn = _provenance(rows, model_of(records, model))
        out += ["", f"### {model}: {provenance}", ""]
        if warn:
            out += [warn, ""]
        out.append(table([_infer_row(r, device) for r in rows], headers))
        notes = [f"`{r.describe() or r.backend}`: {'; '.join(x for x in (r.provider, r.note, inline(r.options)) if x)}"
                 for r in rows if r.provider or r.note or r.options]
        if notes:
            out += ["", "Notes: " + " | ".join(notes)]
    if not out:
        return []
    return ["## Inference latency", "",
            "Latency is per call for the whole batch; *vs eager* is eager fp32's p50 / this row's p50 at the same "
            "batch size, with its 95% bootstrap interval over both rows' calls; *race*: at batch 1 and the recipe's "
            "batch the backends within their accuracy budget are timed in interleaved rounds, the clearly slower "
            "dropped (99% interval wholly above 1), the top two separated to --precision; accuracy, delta and agreement are measured against eager fp32 on the same inputs; "
            "*setup s* is the one-off cost (compile, session creation, quantization, capture)." +
            (f" The wall columns sync inside every call; *device p50 ms*: {DEVICE_CLOCK}; *back-to-back samples/s*: "
             "the same number of calls issued back to back with one sync at the end (where CUDA graphs and "
             "asynchronous backends show their gain). Blank for a backend on a stream of its own (ONNX Runtime's "
             "CUDA provider)." if device else ""), *out]
