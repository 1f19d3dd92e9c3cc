"""One run at a glance: per model, the answers a reader of summary.md came for, each taken from a record as it is
(no figure recomputed): the tuned loop's training speed-up over the tutorial's loop, the fastest batch-1 backend
within its accuracy budget, the highest-throughput backend at the recipe's batch, and the ONNX parity verdict; then
what was skipped or failed. summary.md opens with it, and results/README.md shows it per device.
"""
from __future__ import annotations

from dataclasses import dataclass

from bench.records import InferRecord, ParityRecord, Record, RunEnv, TrainRecord
from bench.report.accuracy_text import glance_text
from bench.report.conditions import glance_line
from bench.report.selection import infer_rows, ladder_rows, models_of, of_type
from bench.report.tables import num, pct, ratio, table

HEADERS = ["model", "training: tuned loop vs tutorial loop", "fastest at batch 1 (p50 ± IQR, vs eager, accuracy delta)",
           "most samples/s at the recipe's batch (vs eager, accuracy delta)", "ONNX parity"]
NOT_OK_SHOWN = 8


@dataclass
class Glance:
    """One model's line: each cell already in words ('' when the run has no such rows)."""

    model: str
    train: str = ""
    batch1: str = ""
    throughput: str = ""
    parity: str = ""

    def cells(self) -> list[str]:
        return [self.model, self.train, self.batch1, self.throughput, self.parity]


def train_cell(records: list[Record], model: str) -> str:
    fast = [r for r in ladder_rows(records, model) if r.row == "fast"]
    if not fast:
        return ""
    r = fast[0]
    if not r.ok:
        return f"fast row {r.status}"
    base = next((t for t in ladder_rows(records, model) if t.row == "tutorial_loop" and t.batch_size == r.batch_size
                 and t.ok), None)
    spreads = [f"{name} {_rel(x.samples_per_s_iqr, x.samples_per_s)}" for name, x in (("fast", r), ("tutorial", base))
               if x is not None and _rel(x.samples_per_s_iqr, x.samples_per_s)]
    return f"{ratio(r.speedup_vs_tutorial_loop) or '?'} (b={r.batch_size}, fp32" + \
        (f"; IQR {', '.join(spreads)})" if spreads else ")")


def _rel(iqr: float | None, median: float | None) -> str:
    return pct(iqr / median) if iqr is not None and median else ""


def within_budget(rows: list[InferRecord]) -> list[InferRecord]:
    """The ok rows whose accuracy change against eager fp32 was judged within its budget."""
    return [r for r in rows if r.ok and r.accuracy_ok is True and r.p50_ms is not None]


def backend_label(r: InferRecord) -> str:
    return str(r.backend) if r.precision == "fp32" or r.precision in str(r.backend) else f"{r.backend} {r.precision}"


def _vs_eager(r: InferRecord) -> str:
    return f"{ratio(r.speedup_vs_eager)} vs eager, " if r.speedup_vs_eager is not None else ""


def _accuracy(r: InferRecord) -> str:
    return glance_text(r)


def batch1_cell(rows: list[InferRecord]) -> str:
    candidates = [r for r in within_budget(rows) if r.batch_size == 1]
    if not candidates:
        return "no batch-1 row within its accuracy budget" if any(r.batch_size == 1 for r in rows) else ""
    r = min(candidates, key=lambda r: r.p50_ms)
    spread = f" ± {_rel(r.iqr_ms, r.p50_ms)}" if _rel(r.iqr_ms, r.p50_ms) else ""
    return f"{backend_label(r)}: {num(r.p50_ms)} ms{spread}, {_vs_eager(r)}{_accuracy(r)}"


def recipe_batch(records: list[Record], model: str, rows: list[InferRecord]) -> int | None:
    """The training recipe's batch (the ladder's) when inference ran at it, else the largest batch measured."""
    sizes = {r.batch_size for r in rows if r.batch_size is not None}
    ladder = [r.batch_size for r in ladder_rows(records, model) if r.batch_size in sizes]
    return ladder[0] if ladder else max(sizes, default=None)


def throughput_cell(records: list[Record], model: str, rows: list[InferRecord]) -> str:
    batch = recipe_batch(records, model, rows)
    candidates = [r for r in within_budget(rows) if r.batch_size == batch and r.samples_per_s is not None]
    if not candidates:
        return "" if batch is None else f"no row at b={batch} within its accuracy budget"
    r = max(candidates, key=lambda r: r.samples_per_s)
    return f"{backend_label(r)}: {num(r.samples_per_s)} samples/s at b={batch}, {_vs_eager(r)}{_accuracy(r)}"


def parity_cell(records: list[Record], model: str) -> str:
    rows = [r for r in of_type(records, ParityRecord) if r.model == model]
    if not rows:
        return ""
    r = rows[0]
    if not r.ok:
        return f"**{r.status}**"
    verdict = {True: "PASS", False: "**FAIL**", None: "not judged"}[r.parity_ok]
    diff = f" (max abs diff {r.max_abs_diff:.1e}, tolerance {r.tolerance:g})" if r.max_abs_diff is not None else ""
    return verdict + diff


def glance(records: list[Record]) -> list[Glance]:
    out = []
    for model in models_of(r for r in records if isinstance(r, (TrainRecord, InferRecord, ParityRecord))):
        rows = infer_rows(records, model)
        out.append(Glance(model, train_cell(records, model), batch1_cell(rows), throughput_cell(records, model, rows),
                          parity_cell(records, model)))
    return out


def not_ok_lines(env: RunEnv, records: list[Record]) -> list[str]:
    """What was skipped or failed (at most NOT_OK_SHOWN rows named), and the precisions left out of the plan."""
    bad = [r for r in records if not r.ok]
    lines = [f"- {r.status}: {r.model} {r.phase} {r.describe()}".rstrip() + f": {r.reason or 'no reason recorded'}"
             for r in bad[:NOT_OK_SHOWN]]
    if len(bad) > NOT_OK_SHOWN:
        lines.append(f"- and {len(bad) - NOT_OK_SHOWN} more (see *Failed and skipped*)")
    lines += [f"- precision {p} left out of the plan: {why}" for p, why in env.skipped_precisions.items()]
    return lines or ["- nothing was skipped or failed"]


def glance_lines(env: RunEnv, records: list[Record], heading: str = "## At a glance") -> list[str]:
    """The at-a-glance section: the table, then what was skipped or failed; [] for a run with no such rows."""
    rows = glance(records)
    if not rows:
        return []
    return [heading, "",
            "Each cell is a record's own figure: training rows are the `fast` rung's speed-up over `tutorial_loop` "
            "(medians of timed windows); inference rows are the fastest p50 / highest samples/s among rows whose "
            "accuracy stayed within its budget against eager fp32 (*vs eager* divides medians).", "",
            table([g.cells() for g in rows], HEADERS), *provenance_lines(records), "", glance_line(env), "",
            "Skipped or failed:", "",
            *not_ok_lines(env, records)]


def provenance_lines(records: list[Record]) -> list[str]:
    """A warning naming the models whose accuracy cells rest on random weights or synthetic data."""
    models = models_of(r for r in of_type(records, InferRecord) if r.weights == "random" or r.data == "synthetic")
    if not models:
        return []
    return ["", f"> {', '.join(models)}: random weights or synthetic data: agreement, not accuracy (each cell says how "
                "often a backend's argmax agrees with eager fp32 on these inputs, not how well the model classifies)."]
