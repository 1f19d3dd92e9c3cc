"""One run at a glance: per model, the answers a reader of summary.md came for, each taken from a record as it is
(no figure recomputed): the tuned loop's training speed-up over the tutorial's loop, the fastest batch-1 backend
within its accuracy budget, the highest-throughput backend at the recipe's batch, and the ONNX parity verdict; then
what was skipped or failed. summary.md opens with it, and results/README.md shows it per device.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from bench.measure.stats import median_ratio_ci
from bench.records import InferRecord, ParityRecord, Record, RunEnv, TrainRecord
from bench.report.accuracy_text import glance_text
from bench.report.conditions import glance_line
from bench.report.intervals import ratio_ci
from bench.report.selection import infer_rows, ladder_rows, models_of, of_type
from bench.report.tables import h1_cell, num, pct

NOT_OK_SHOWN = 8


@dataclass
class Glance:
    """One model's answers: training speed-up (H1), the backend to deploy at batch 1 and the recipe's batch (H2),
    ONNX parity (H3), each already in words ('' / [] when the run has no such rows)."""

    model: str
    train: str = ""
    backends: list[BackendAnswer] = field(default_factory=list)
    parity: str = ""

    def lines(self) -> list[str]:
        out = [f"### {self.model}", ""]
        if self.train:
            out.append(f"- training, `fast` vs `tutorial_loop`: {self.train}")
        for answer in self.backends:
            out += answer.lines()
        if self.parity:
            out.append(f"- ONNX parity: {self.parity}")
        return out


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
    return f"{h1_cell(r) or '?'} (b={r.batch_size}, fp32" + (f"; IQR {', '.join(spreads)})" if spreads else ")")


def _rel(iqr: float | None, median: float | None) -> str:
    return pct(iqr / median) if iqr is not None and median else ""


def within_budget(rows: list[InferRecord]) -> list[InferRecord]:
    """The ok rows whose accuracy change against eager fp32 was judged within its budget."""
    return [r for r in rows if r.ok and r.accuracy_ok is True and r.p50_ms is not None]


def backend_label(r: InferRecord) -> str:
    return str(r.backend) if r.precision == "fp32" or r.precision in str(r.backend) else f"{r.backend} {r.precision}"


def _vs_eager(r: InferRecord) -> str:
    if r.speedup_vs_eager is None or r.backend == "eager" and r.precision == "fp32":
        return ""
    return f", {ratio_ci(r.speedup_vs_eager, r.speedup_vs_eager_lo, r.speedup_vs_eager_hi)} vs eager"


def _accuracy(r: InferRecord) -> str:
    return glance_text(r)


def not_measured(r: InferRecord) -> str:
    """A backend that did not run at this batch, in a few words: not installed, left out for the budget, failed."""
    reason = (r.reason or "").lower()
    if r.status == "skipped" and "not installed" in reason:
        return f"{backend_label(r)} not installed"
    if r.status == "skipped" and "budget" in reason:
        return f"{backend_label(r)} left out (budget)"
    return f"{backend_label(r)} {r.status}"


@dataclass
class BackendAnswer:
    """H2 at one batch size: which backend won among the rows within their accuracy budget, over whom, by what
    margin, and what competed (measured, outside its budget, not measured and why)."""

    batch: int
    recipe: bool
    winner: InferRecord | None
    runner_up: InferRecord | None
    measured: list[str]
    others: list[str]  # not measured, or measured outside the accuracy budget (cannot win)
    dropped: list[InferRecord]

    def margin(self) -> str:
        """The runner-up's p50 over the winner's with its 95% interval: the race's, or from both rows' calls (timed
        one backend after another: the interval holds within-row noise only)."""
        w, r = self.winner, self.runner_up
        if w is None or r is None:
            return ""
        if w.race == "winner" and w.race_vs_leader is not None:
            return ratio_ci(w.race_vs_leader, w.race_vs_leader_lo, w.race_vs_leader_hi)
        if w.latencies_ms and r.latencies_ms:
            return ratio_ci(*median_ratio_ci(w.latencies_ms, r.latencies_ms)) + " (not raced: rows timed in turn)"
        return ratio_ci(r.p50_ms / w.p50_ms) + " (no interval: no raw samples)" if w.p50_ms and r.p50_ms else ""

    def lines(self) -> list[str]:
        what = f"batch {self.batch}" + (" (the recipe's)" if self.recipe else " (the largest measured)"
                                        if self.batch != 1 else "")
        others = f"; {', '.join(self.others)}" if self.others else ""
        if self.winner is None:
            return [f"- {what}: no row within its accuracy budget ({', '.join(self.measured) or 'none'} measured"
                    f"{others})"]
        w = self.winner
        figures = f"{num(w.p50_ms)} ms{_spread(w)}, {num(w.samples_per_s)} samples/s{_vs_eager(w)}, {_accuracy(w)}"
        if self.runner_up is None:  # nothing it beat: no winner is crowned
            return [f"- {what}: {backend_label(w)}: the only backend measured within its accuracy budget ({figures})",
                    f"  - competed: {', '.join(self.measured)}{others}"]
        head = f"- {what}: **{backend_label(w)}** {figures}"
        out = [head, f"  - fastest of {len(self.measured)} measured ({', '.join(self.measured)}{others}); runner-up "
                     f"{backend_label(self.runner_up)}, slower by {self.margin()}"]
        if w.race == "winner" and w.race_rounds is not None:
            met = {True: "met", False: "not met: its share of the budget was spent"}.get(w.race_target_met, "?")
            out.append(f"  - raced in {w.race_rounds} interleaved rounds; top two to +-{num(w.race_reached_pct)}% "
                       f"(target +-{num(w.race_precision_pct)}%: {met})" + "".join(map(_dropped, self.dropped)))
        return out


def _dropped(d: InferRecord) -> str:
    """A row the race dropped, with the interval (at its stated level) that dropped it."""
    level = f", {pct(d.race_conf, 0)} interval" if d.race_conf is not None else ""
    return f"; dropped {backend_label(d)}: {ratio_ci(d.race_vs_leader, d.race_vs_leader_lo, d.race_vs_leader_hi)} " \
        f"the p50 of {d.race_leader}{level}"


def _spread(r: InferRecord) -> str:
    rel = _rel(r.iqr_ms, r.p50_ms)
    return f" ± {rel}" if rel else ""


def backend_answer(rows: list[InferRecord], batch: int, recipe: bool) -> BackendAnswer | None:
    """H2 at ``batch``: the race's winner and runner-up where the rows were raced, else the two fastest p50s among
    rows within their accuracy budget; None when nothing was planned at that batch."""
    here = [r for r in rows if r.batch_size == batch]
    if not here:
        return None
    eligible = sorted(within_budget(here), key=lambda r: (r.race != "winner", r.race != "runner-up", r.p50_ms))
    measured = [backend_label(r) for r in here if r.ok and r.p50_ms is not None]
    others = [f"{backend_label(r)} " + ("accuracy not judged" if r.accuracy_ok is None else
                                        "outside its accuracy budget")
              for r in here if r.ok and r.p50_ms is not None and r not in eligible]
    others += [not_measured(r) for r in here if not r.ok]
    dropped = [r for r in here if r.race == "dropped" and r.race_vs_leader is not None]
    return BackendAnswer(batch, recipe, eligible[0] if eligible else None,
                         eligible[1] if len(eligible) > 1 else None, measured, others, dropped)


def recipe_batch(records: list[Record], model: str, rows: list[InferRecord]) -> tuple[int | None, bool]:
    """(batch, whether it is the recipe's): the training recipe's batch (the ladder's, or the batch other than 1 the
    infer phase raced at) when inference ran at it, else the largest batch measured."""
    sizes = {r.batch_size for r in rows if r.batch_size is not None}
    ladder = [r.batch_size for r in ladder_rows(records, model) if r.batch_size in sizes]
    raced = [r.batch_size for r in rows if r.race is not None and r.batch_size != 1]  # the phase raced the recipe's
    return (ladder or raced)[0] if ladder or raced else max(sizes, default=None), bool(ladder or raced)


def backend_answers(records: list[Record], model: str, rows: list[InferRecord]) -> list[BackendAnswer]:
    """H2 at batch 1 and at the recipe's batch (one answer when they are the same batch)."""
    batch, is_recipe = recipe_batch(records, model, rows)
    out = [backend_answer(rows, 1, is_recipe and batch == 1)]
    if batch is not None and batch != 1:
        out.append(backend_answer(rows, batch, is_recipe))
    return [a for a in out if a is not None]


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
        out.append(Glance(model, train_cell(records, model), backend_answers(records, model, rows),
                          parity_cell(records, model)))
    return out


def not_ok_lines(env: RunEnv, records: list[Record]) -> list[str]:
    """What was skipped or failed: the rows the budget left out as one count (each is in *Failed and skipped* with
    its command), the others named (at most NOT_OK_SHOWN), and the precisions left out of the plan."""
    bad = [r for r in records if not r.ok]
    budget = [r for r in bad if r.status == "skipped" and (r.reason or "").startswith("budget")]
    named = [r for r in bad if r not in budget]
    lines = [f"- {len(budget)} row{'' if len(budget) == 1 else 's'} left out for the budget, each listed under *Failed and skipped* with the "
             "command that measures it"] if budget else []
    lines += [f"- {r.status}: {r.model} {r.phase} {r.describe()}".rstrip() + f": {r.reason or 'no reason recorded'}"
              for r in named[:NOT_OK_SHOWN]]
    if len(named) > NOT_OK_SHOWN:
        lines.append(f"- and {len(named) - NOT_OK_SHOWN} more (see *Failed and skipped*)")
    lines += [f"- precision {p} left out of the plan: {why}" for p, why in env.skipped_precisions.items()]
    return lines or ["- nothing was skipped or failed"]


def glance_lines(env: RunEnv, records: list[Record], heading: str = "## At a glance") -> list[str]:
    """The at-a-glance section: per model its answers, then what was skipped or failed; [] for a run with none."""
    rows = glance(records)
    if not rows:
        return []
    out = [heading, "",
           "Each answer is a record's own figure with its 95% interval, `1.34x [0.95, 1.91]`; an interval holding 1.00 "
           "reads *no difference established*.",
           "Training: the `fast` rung over `tutorial_loop` (medians of timed windows). Backends: among rows within their "
           "accuracy budget against eager fp32,",
           "the fastest p50 (most samples/s), the runner-up and the margin (runner-up's p50 over the winner's).", ""]
    for g in rows:
        out += g.lines() + [""]
    return out + provenance_lines(records)[1:] + ["", glance_line(env), "", "Skipped or failed:", "",
                                                  *not_ok_lines(env, records)]


def provenance_lines(records: list[Record]) -> list[str]:
    """A warning naming the models whose accuracy cells rest on random weights or synthetic data."""
    models = models_of(r for r in of_type(records, InferRecord) if r.weights == "random" or r.data == "synthetic")
    if not models:
        return []
    return ["", f"> {', '.join(models)}: random weights or synthetic data: agreement, not accuracy (each cell says how "
                "often a backend's argmax agrees with eager fp32 on these inputs, not how well the model classifies)."]
