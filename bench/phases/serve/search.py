"""The Server scenario's search: the highest Poisson arrival rate whose p99 latency stays within the bound, found by
a bisection of short LoadGen performance runs (every probe kept, so the knee can be drawn).

The search is pure: ``probe(rate)`` runs one test and says whether LoadGen found the bound met. It doubles the rate
from ``start`` until a probe fails (or halves it until one passes), then bisects geometrically between the highest
passing and the lowest failing rate until they are within ``tolerance`` of each other or ``max_probes`` are spent.
The answer is the highest PROBED rate that met the bound, never an interpolation; the bracket above it (the lowest
failing rate) says how far the truth may lie above it.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

MAX_PROBES = 5
TOLERANCE = 0.15  # stop once the lowest failing rate is within 15% of the highest passing one
CHECK_FACTOR = 1.5  # the probe above the reported rate that should show the bound broken


@dataclass
class ServeProbe:
    """One Server performance run: what was offered and what LoadGen measured (a dict in ServeRecord.probes)."""

    target_qps: float
    met_bound: bool = False  # LoadGen's "Performance constraints satisfied" (its p99 within the bound)
    p99_ms: float | None = None  # from LoadGen's per-query latencies (None with fewer than 1,000 queries)
    loadgen_p99_ms: float | None = None  # LoadGen's own figure, from its summary
    samples_per_s: float | None = None
    n_queries: int = 0
    mean_batch: float | None = None
    loadgen_result: str | None = None
    role: str = "search"  # "search" | "check" (CHECK_FACTOR x the reported rate)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ServeProbe:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass
class SearchResult:
    best: ServeProbe | None  # the highest probed rate that met the bound
    failed_above: float | None  # the lowest failing rate above it
    probes: list[ServeProbe]


def next_rate(rate: float, lo: float | None, hi: float | None) -> float:
    """Double while nothing failed, halve while nothing passed, else the geometric middle of the bracket."""
    if hi is None:
        return rate * 2
    if lo is None:
        return rate / 2
    return math.sqrt(lo * hi)


def search_max_rate(probe: Callable[[float], ServeProbe], start: float, *, max_probes: int = MAX_PROBES,
                    tolerance: float = TOLERANCE, floor: float = 1.0, ceiling: float = math.inf) -> SearchResult:
    """Bisect on the offered rate (queries/s) with ``probe``; no rate below ``floor`` or above ``ceiling`` is
    probed (the search stops there)."""
    if not start > 0:
        raise ValueError(f"the search needs a positive start rate, not {start}")
    probes: list[ServeProbe] = []
    lo = hi = None
    rate = start
    while len(probes) < max_probes and floor <= rate <= ceiling:
        result = probe(rate)
        probes.append(result)
        if result.met_bound:
            lo = rate if lo is None else max(lo, rate)
        else:
            hi = rate if hi is None else min(hi, rate)
        if lo is not None and hi is not None and hi <= lo * (1 + tolerance):
            break
        rate = next_rate(rate, lo, hi)
    best = max((p for p in probes if p.met_bound), key=lambda p: p.target_qps, default=None)
    above = [p.target_qps for p in probes if not p.met_bound and (best is None or p.target_qps > best.target_qps)]
    return SearchResult(best, min(above) if above else None, probes)


def check_rate(result: SearchResult) -> float | None:
    """The rate of the check probe, CHECK_FACTOR x the reported one, always run (even when a failing probe of the
    search lies below it) so every Server row shows the bound broken above its answer; None without an answer."""
    return None if result.best is None else result.best.target_qps * CHECK_FACTOR
