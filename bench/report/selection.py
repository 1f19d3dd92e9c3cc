"""Which records a table or a plot shows, and in what order: shared by bench.report.tables and bench.report.plots so that a table
and the plot drawn from the same rows always agree. Selection only: nothing here formats, draws or computes a figure.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TypeVar

from bench.records import BACKEND_NAMES, PRECISIONS, TRAIN_LADDER, InferRecord, Record, TrainRecord

R = TypeVar("R", bound=Record)


def of_type(records: Iterable[Record], cls: type[R], *, ok_only: bool = False) -> list[R]:
    """The records of one type (one phase), in the order the run wrote them; ``ok_only`` drops failed and skipped."""
    return [r for r in records if isinstance(r, cls) and (r.ok or not ok_only)]


def ordered(values: Iterable, order: Sequence) -> list:
    """The distinct ``values``: those named in ``order`` first, in that order, then the rest as first seen."""
    present = list(dict.fromkeys(values))
    return [v for v in order if v in present] + [v for v in present if v not in order]


def models_of(records: Iterable[Record]) -> list[str]:
    """Model names in the order the run measured them."""
    return list(dict.fromkeys(r.model for r in records))


def is_variant(rec: TrainRecord) -> bool:
    """A training row that changes the execution (precision, memory format, torch.compile), not the data path. The
    ladder's compute row runs the fast rung's choice (its ``tuned``; its fields say which): a rung, not a variant."""
    if rec.row == "compute" and rec.tuned and rec.precision == "fp32":
        return False
    return rec.precision != "fp32" or rec.channels_last or rec.compile is not None


def ladder_rows(records: Iterable[Record], model: str) -> list[TrainRecord]:
    """One model's plain fp32 ladder rows (any status), in TRAIN_LADDER order, then by batch size."""
    rows = [r for r in of_type(records, TrainRecord) if r.model == model and not is_variant(r)]
    rank = {name: i for i, name in enumerate(TRAIN_LADDER)}
    return sorted(rows, key=lambda r: (r.batch_size or 0, rank.get(r.row, len(rank)), str(r.row)))


def variant_rows(records: Iterable[Record]) -> list[TrainRecord]:
    """Every precision / channels_last / compile training row (any status), grouped by model."""
    rows = [r for r in of_type(records, TrainRecord) if is_variant(r)]
    models = models_of(rows)
    rank = {name: i for i, name in enumerate(TRAIN_LADDER)}
    prec = {name: i for i, name in enumerate(PRECISIONS)}
    return sorted(rows, key=lambda r: (models.index(r.model), rank.get(r.row, len(rank)), prec.get(r.precision, 9),
                                       r.channels_last, r.compile or "", r.batch_size or 0))


def infer_rows(records: Iterable[Record], model: str) -> list[InferRecord]:
    """One model's inference rows (any status): by backend in BACKEND_NAMES order, precision, then batch size."""
    rows = [r for r in of_type(records, InferRecord) if r.model == model]
    backends = ordered((r.backend for r in rows), BACKEND_NAMES)
    prec = {name: i for i, name in enumerate(PRECISIONS)}
    return sorted(rows, key=lambda r: (backends.index(r.backend), prec.get(r.precision, 9), r.batch_size or 0))


def accuracy_batch_size(rows: Iterable[InferRecord]) -> int | None:
    """The batch size whose ok rows carry accuracy most often (ties: the larger batch): the one batch size a
    latency-vs-accuracy view compares backends at, since latency depends on the batch and accuracy does not."""
    counts: dict[int, int] = {}
    for r in rows:
        if r.ok and r.accuracy is not None and r.p50_ms is not None and r.batch_size is not None:
            counts[r.batch_size] = counts.get(r.batch_size, 0) + 1
    if not counts:
        return None
    return max(counts, key=lambda b: (counts[b], b))


def pareto_front(points: Iterable[tuple[float, float]]) -> list[tuple[float, float]]:
    """The (latency, accuracy) points no other point beats on both (lower latency and higher accuracy), by latency."""
    front: list[tuple[float, float]] = []
    for latency, accuracy in sorted(points, key=lambda p: (p[0], -p[1])):
        if not front or accuracy > front[-1][1]:
            front.append((latency, accuracy))
    return front
