"""The rows of a priced plan: every row of the run priced on this machine (each phase's Phase.row_costs, its model's
build, the plots), the skipped record of a row the budget dropped (with the command that measures it), and the
plan's lines printed before the first measurement. The fit itself is bench.schedule.budget's."""
from __future__ import annotations

import dataclasses

from bench.context import BenchContext
from bench.phases.base import Phase
from bench.records import Record, not_ok
from bench.schedule.budget import PLOTS_LABEL, TIER_VARIANT, RowCost


def priced_rows(ctx: BenchContext, phases: list[Phase], prices) -> tuple[list[RowCost], dict[str, float], float]:
    """(rows, shared one-off costs, seconds kept back for the result files) of ctx.models x phases: each phase's
    priced rows (Phase.row_costs), each needing its model's build (saved when all of a model's rows go), and the
    plots (first to go)."""
    rows: list[RowCost] = []
    groups: dict[str, float] = {}
    for m in ctx.models:
        groups[f"{m} build"] = prices.models[m].build_s if m in prices.models else 1.0  # paid while any row stays
        for phase in phases:
            got, shared = phase.row_costs(m, ctx, prices)
            rows += [dataclasses.replace(r, groups=(*r.groups, f"{m} build")) for r in got]
            groups.update(shared)
    plots_s = prices.build("plots")
    rows.append(RowCost("", "report", PLOTS_LABEL, plots_s, plots_s, TIER_VARIANT))
    return rows, groups, prices.build("write") * (len(ctx.models) + 2)


def measure_command(ctx: BenchContext, row: RowCost) -> str:
    """The command that measures a dropped row with no budget."""
    if row.phase == "report":
        return "python -m bench.report OUT/<device>/results.json"
    args = ["python -m bench.run", "--device", str(ctx.device), "--models", row.model, "--phases", row.phase,
            *row.args, *(["--synthetic"] if ctx.synthetic else []), *(["--quick"] if ctx.quick else []),
            "--threads", str(ctx.threads), "--budget", "none"]
    return " ".join(args)


def budget_skips(ctx: BenchContext, phase: Phase, rows: list[RowCost]) -> list[Record]:
    """The skipped records of rows the budget dropped: reason ``budget``, the seconds each would need, its command."""
    out = []
    for r in rows:
        need = r.floor_s + sum(ctx.budget.groups.get(g, 0.0) for g in r.groups)
        # Said as it happened: rows go in the drop order (secondary rows first, the headlines last), so the row was
        # left out to keep rows ranked above it, not because its own seconds alone exceeded the budget.
        why = "every headline at its floor did not fit" if r.headline else \
            "the headlines and rows ranked above it first"
        reason = (f"budget: left out to fit --budget {ctx.budget_s:.0f} s ({why}); needs ~{need:.0f} s; measure it "
                  f"with `{measure_command(ctx, r)}`")
        out.append(not_ok(phase.record_type, r.model, ctx.device.type, reason, status="skipped", **r.fields))
    return out


def plan_lines(budget, ctx: BenchContext) -> list[str]:
    """The plan before the measurements: per model, the rows measured / planned per phase and the dropped ones."""
    rows = [r for r in budget.rows if r.phase != "report"]
    kept = [r for r in rows if r.name not in budget.dropped]
    s = budget.summary()
    lines = [f"plan: {len(kept)} of {len(rows)} rows fit --budget {budget.total_s:.0f} s (priced here: "
             f"{s['priced_floor_s']:.0f} s at the sample rules' floor, {s['priced_full_s']:.0f} s at full size; "
             f"measuring at {100 * budget.first.flex:.0f}% of the flexible part); ETA {budget.eta_s():.0f} s"]
    for m in ctx.models:
        counts = []
        for phase in dict.fromkeys(r.phase for r in budget.rows if r.model == m):
            mine = [r for r in budget.rows if r.pair == (m, phase)]
            counts.append(f"{phase} {sum(r.name not in budget.dropped for r in mine)}/{len(mine)}")
        gone = [r.label for r in budget.dropped.values() if r.model == m]
        lines.append(f"  {m}: measure {', '.join(counts)}" + (f"; dropped: {', '.join(gone)}" if gone else ""))
    if any(r.phase == "report" for r in budget.dropped.values()):
        lines.append("  plots: dropped (re-render them later with python -m bench.report OUT/<device>/results.json)")
    if budget.dropped:
        lines.append(f"  dropped rows are `skipped` rows with reason budget and their command; `--budget none` "
                     f"measures all {len(rows)}")
    return lines
