"""What summary.md says about the run as a whole, once, in one screen after the answers: how many rows, by one
definition every count in the files uses; the wall time against the budget; where the rest is. And the rule that
keeps its prose readable: no line over MAX_LINE characters outside a table.
"""
from __future__ import annotations

import textwrap
from dataclasses import dataclass

from bench.records import Record, RunEnv
from bench.report.tables import num

MAX_LINE = 200  # the longest line summary.md may have outside a table
WRAP_AT = 118  # prose is wrapped here: a line a reader can take in, with room for a list item's indent


@dataclass(frozen=True)
class RowCounts:
    """A run's rows, by the one definition every count uses (the INCOMPLETE banner's "n of m", the index, the
    settings): a row is one record, whatever its status, the per-model build record included; it is *measured* when
    its status is ok."""

    rows: int
    measured: int
    budget: int  # skipped because the budget's plan left them out
    skipped: int  # skipped for any other reason (not installed, not runnable here, out of memory)
    failed: int

    def text(self) -> str:
        parts = [f"{self.measured} measured", f"{self.budget} left out for the budget" if self.budget else "",
                 f"{self.skipped} skipped otherwise" if self.skipped else "",
                 f"{self.failed} failed" if self.failed else ""]
        return f"{self.rows} rows: " + ", ".join(p for p in parts if p)


def row_counts(records: list[Record]) -> RowCounts:
    rows = records
    budget = sum(r.status == "skipped" and (r.reason or "").startswith("budget") for r in rows)
    skipped = sum(r.status == "skipped" for r in rows) - budget
    return RowCounts(len(rows), sum(r.ok for r in rows), budget, skipped, sum(r.status == "failed" for r in rows))


def run_lines(env: RunEnv, records: list[Record]) -> list[str]:
    """The run in a few lines: its rows (one definition, stated), its wall time against its budget."""
    counts = row_counts(records)
    wall = f"wall time {num(env.wall_s, ' s')}" if env.wall_s is not None else "wall time not recorded"
    budget = f" against a budget of {num(env.budget_s, ' s')} (+15% allowed)" if env.budget_s is not None else \
        " (no budget: every row at its full size)"
    return ["## This run", "",
            f"- {counts.text()}. A row is one record (a model's build, a training rung, a backend at a batch size, "
            "...), whatever its status; every count in these files counts them so.",
            f"- {wall}{budget}.",
            "- Below: the full tables (inference, training, parity, ...), then the settings, how each figure was "
            "measured, and every skipped or failed row with its reason."]


def wrap_prose(lines: list[str]) -> list[str]:
    """Every line over MAX_LINE characters outside a table (and a code block) wrapped at WRAP_AT: a list item's
    continuation indented under its text, a quote's continued with ``> ``. Markdown renders the result unchanged."""
    out: list[str] = []
    fenced = False
    for line in lines:
        if line.startswith("```"):
            fenced = not fenced
        if fenced or len(line) <= MAX_LINE or line.lstrip().startswith("|"):
            out.append(line)
            continue
        body = line.lstrip()
        indent = line[:len(line) - len(body)]
        if body.startswith("> "):
            first = later = indent + "> "
            body = body[2:]
        elif body.startswith(("- ", "* ")):
            first, later = indent + body[:2], indent + "  "
            body = body[2:]
        else:
            first = later = indent
        out += textwrap.wrap(body, WRAP_AT, initial_indent=first, subsequent_indent=later, break_long_words=False,
                             break_on_hyphens=False)
    return out
