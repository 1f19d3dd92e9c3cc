"""The questions a run answers first, declared once: everything else a run measures is secondary.

Per model a reader opens the results to learn three things, so those rows are the run's headlines:
- H1: how much faster the shared loop trains than the tutorial's own loop: the training ladder's two ends,
  ``fast`` over ``tutorial_loop`` (a ratio means something only with both ends: they are one bundle).
- H2: which backend to deploy at batch 1 and at the recipe's batch: the inference rows of the default backends at
  those two batch sizes.
- H3: whether the ONNX export is right: the parity rows.

The scheduler (bench.schedule.budget) plans every headline before any secondary row, drops a bundle's rows together
and gives unused seconds to the headlines first; the train phase measures H1 to a precision (bench.phases.train.rounds).
Other modules ask here (``headline_of``, ``is_headline``, ``headline_pairs``) rather than re-stating the rule.
"""
from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, replace
from typing import Any

H1_PAIR = ("tutorial_loop", "fast")  # (baseline, answer): the ratio is fast / tutorial_loop
H2_BACKENDS = ("eager", "compile", "onnxruntime", "onnxruntime-int8", "openvino")  # CPU's default plan
QUESTIONS = {"H1": "shared loop vs tutorial loop (fast / tutorial_loop)",
             "H2": "fastest backend at batch 1 and at the recipe's batch",
             "H3": "ONNX export parity"}
DEFAULT_PRECISION_PCT = 5.0  # --precision: a headline ratio's (H1's, H2's top two) 95% interval within +-this percent


@dataclass(frozen=True)
class Headline:
    """One row's place among the questions: which question and the bundle its rows are kept or dropped in."""

    question: str  # "H1", "H2" or "H3"
    bundle: str  # rows with the same bundle are kept or dropped together


def _is_plain_train(fields: Mapping[str, Any]) -> bool:
    return fields.get("precision", "fp32") == "fp32" and not fields.get("channels_last") and not fields.get("compile")


def headline_of(model: str, phase: str, fields: Mapping[str, Any], *, recipe_batch: int | None = None,
                backends: Collection[str] | None = None) -> Headline | None:
    """The headline a row answers (None: a secondary row). ``fields`` are the row's record key fields;
    ``recipe_batch``: the batch H2 asks about besides 1 (None: any); ``backends``: the backends H2 races (None:
    H2_BACKENDS, backend names without their ``:precision``)."""
    if phase == "train":
        if fields.get("row") in H1_PAIR and _is_plain_train(fields):
            return Headline("H1", f"{model} H1")
        return None
    if phase == "infer":
        name = str(fields.get("backend") or "").split(":")[0]
        allowed = {b.split(":")[0] for b in (H2_BACKENDS if backends is None else backends)}
        batch = fields.get("batch_size")
        if name in allowed and (batch == 1 or recipe_batch is None or batch == recipe_batch):
            return Headline("H2", f"{model} H2 {name} b={batch}")
        return None
    if phase == "parity":
        return Headline("H3", f"{model} H3 {fields.get('backend') or ''}".strip())
    return None


def is_headline(model: str, phase: str, fields: Mapping[str, Any], **kw: Any) -> bool:
    """Whether the row answers one of the headline questions (keyword arguments: as ``headline_of``)."""
    return headline_of(model, phase, fields, **kw) is not None


def headline_pairs(model: str) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """The training rows whose ratio is a headline, as (baseline, answer) key fields: H1 for ``model``."""
    base, answer = H1_PAIR
    plain = {"precision": "fp32", "channels_last": False, "compile": None}
    return [({"row": base, **plain}, {"row": answer, **plain})]


def mark_rows(rows: list[Any], recipe_batch: Mapping[str, int], backends: Collection[str] | None = None) -> list[Any]:
    """The priced rows (bench.schedule.budget.RowCost) with their ``headline`` and ``bundle`` set: the one place the
    scheduler learns which rows are headlines. ``recipe_batch``: model -> the batch H2 asks about."""
    out = []
    for r in rows:
        got = headline_of(r.model, r.phase, r.fields, recipe_batch=recipe_batch.get(r.model), backends=backends)
        out.append(replace(r, headline=got.question, bundle=got.bundle) if got else r)
    return out
