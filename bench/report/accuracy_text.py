"""How an inference row's accuracy reads in the tables and the glance. An accuracy, and a change of it against
eager fp32, is shown only where it means one: trained weights (a checkpoint) on real data, the change with its paired
95% interval. With random weights or synthetic data the labels are noise to the model, so the row shows agreement
with eager fp32 (argmax agreement, max abs diff) and says so, never a "+0.04 pts" that reads like a real cost."""
from __future__ import annotations

from bench.records import InferRecord
from bench.report.tables import pct

AGREEMENT_ONLY = "agreement, not accuracy"


def measures_accuracy(r: InferRecord) -> bool:
    """Whether the row's accuracy is one: a trained checkpoint evaluated on real data."""
    return r.weights == "checkpoint" and r.data == "real"


def why_agreement_only(r: InferRecord) -> str:
    """'random weights' / 'synthetic data' / both: what makes the row's accuracy meaningless."""
    reasons = [text for bad, text in ((r.weights != "checkpoint", "random weights"),
                                      (r.data != "real", "synthetic data")) if bad]
    return " and ".join(reasons)


def interval_text(r: InferRecord) -> str:
    """' [-0.18, +0.38]' (points) when the row has its paired interval (files before it was recorded: '')."""
    if r.accuracy_delta_lo_pts is None or r.accuracy_delta_hi_pts is None:
        return ""
    return f" [{r.accuracy_delta_lo_pts:+.2f}, {r.accuracy_delta_hi_pts:+.2f}]"


def accuracy_cell(r: InferRecord) -> str:
    return pct(r.accuracy, 2) if measures_accuracy(r) else ""


def delta_cell(r: InferRecord) -> str:
    """The change in points with its paired interval, e.g. '-0.20 [-0.55, +0.12]'; blank where it means nothing."""
    if not measures_accuracy(r) or r.accuracy_delta_pts is None:
        return ""
    if r.backend == "eager" and r.precision == "fp32":  # the reference itself: no change to put an interval on
        return "reference"
    return f"{r.accuracy_delta_pts:+.2f}{interval_text(r)}"


def glance_text(r: InferRecord) -> str:
    """The glance's accuracy words for a row: its change and interval, or why it only shows agreement."""
    if r.accuracy_delta_pts is None and r.argmax_agreement is None:
        return "accuracy not measured"
    if not measures_accuracy(r):  # one reason is enough here (the table's header names both)
        why = "random weights" if r.weights != "checkpoint" else "synthetic data"
        agree = f" ({pct(r.argmax_agreement, 2)})" if r.argmax_agreement is not None else ""
        return f"{why}: {AGREEMENT_ONLY}{agree}"
    return f"{r.accuracy_delta_pts:+.2f} pts{interval_text(r)}"
