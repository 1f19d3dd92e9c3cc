"""The headline race of the infer phase: at batch 1 and at the recipe's batch, the backends within their accuracy
budget are timed in interleaved rounds (bench.measure.race) instead of one after the other, so they are compared
under the same machine state, the clearly slower ones stop being timed, and the seconds left go to separating the
top two to ``--precision``.

Each backend is bound once at the batch size (its build, if it builds per shape, is ``compile_s`` as before), warmed
and its memory read alone, then its chunks of calls take turns with the others'. A chunk begins with one untimed
call: the previous backend's working set has just evicted this one's from the caches, and that first call measures
the switch, not the backend; so do as many more as last SWITCH_S (another runtime's thread pool may still be
spinning on the cores).
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from bench.backends.base import Backend
from bench.context import BenchContext
from bench.measure import race as racing
from bench.measure import timing
from bench.records import InferRecord

CHUNK_S = 0.1  # the most one chunk of one backend takes: short, so rounds are many and drift is shared
CHUNK_MIN_S = 0.01
ROUNDS_AIMED = 20  # a race's seconds are cut into about this many rounds of chunks
CHUNK_CALLS = 3  # a chunk's timed calls, at least (a call slower than the chunk's seconds: one call a chunk)
CHUNK_WARMUP = 1
# Each chunk's untimed calls last at least this long: the backend timed before it may leave its thread pool spinning
# for a while (OpenMP's and ONNX Runtime's workers spin before they sleep), and those cores are not yet this one's.
SWITCH_S = 0.003
MAX_WARM_CALLS = 50


@dataclass
class Lane:
    """One backend bound at the race's batch size: its timed callable and what its solo warm-up measured."""

    key: str  # the backend's selector (BACKENDS key)
    backend: Backend
    fn: Callable[[], Any]
    bind_s: float
    memory: dict[str, Any] = field(default_factory=dict)
    warm_calls: int = CHUNK_WARMUP  # untimed calls that start each of its chunks (SWITCH_S at its warm speed)


def open_lane(key: str, backend: Backend, x: torch.Tensor) -> Lane:
    """Bind ``backend`` at ``x``, warm it alone and read its memory over the warm calls (exceptions propagate: the
    caller makes the row failed or, out of memory, skipped)."""
    with torch.inference_mode(), backend.memory_tracker() as memory:
        fn, bind_s = backend.bind_timed(x)
        fn()
        backend.sync()
        if memory is not None:  # after a warm call, as a row timed alone (bench.phases.infer.measure)
            memory.reset_peak()
        t1 = timing.clock()
        for _ in range(timing.WARMUP_CALLS):
            fn()
        backend.sync()
        call_s = (timing.clock() - t1) / timing.WARMUP_CALLS
    fields: dict[str, Any] = {}
    if memory is not None and memory.peak_mb is not None:
        fields = {"peak_mem_mb": round(memory.peak_mb, 1), "mem_device": backend.memory_device().type,
                  "mem_delta_mb": round(memory.delta_mb, 1) if memory.delta_mb is not None else None}
    warm = min(MAX_WARM_CALLS, max(CHUNK_WARMUP, math.ceil(SWITCH_S / call_s))) if call_s > 0 else CHUNK_WARMUP
    return Lane(key, backend, fn, bind_s, fields, warm)


def chunk_seconds(lanes: int, budget_s: float) -> float:
    """One chunk's seconds: the race's seconds over ROUNDS_AIMED rounds of every lane, within [CHUNK_MIN_S, CHUNK_S]."""
    return min(CHUNK_S, max(CHUNK_MIN_S, budget_s / (ROUNDS_AIMED * max(lanes, 1))))


def run_race(lanes: list[Lane], budget_s: float, precision_pct: float, min_samples: int,
             seed: int = 0) -> racing.RaceResult:
    """Race the lanes for ``budget_s`` seconds (the sample rules first); samples in seconds per call."""
    by_key = {lane.key: lane for lane in lanes}
    chunk_s = chunk_seconds(len(lanes), budget_s)

    def time_chunk(key: str) -> list[float]:
        lane = by_key[key]
        with torch.inference_mode():
            return timing.sample_latencies(lane.fn, lane.backend.sync, min_calls=CHUNK_CALLS, min_seconds=chunk_s,
                                           warmup=lane.warm_calls, max_seconds=chunk_s)

    began = timing.clock()
    return racing.race(list(by_key), time_chunk, lambda: timing.clock() - began, budget_s, precision_pct,
                       min_samples, seed)


def race_fields(result: racing.RaceResult, key: str, label: Callable[[str], str],
                precision_pct: float) -> dict[str, Any]:
    """InferRecord's race fields for the lane ``key``: its place, and the interval against the leader."""
    final = {s.name: s for s in result.final}
    runner = result.runner_up
    out: dict[str, Any] = {"race_rounds": result.rounds, "race_precision_pct": precision_pct,
                           "race_target_met": result.target_met,
                           "race_reached_pct": runner.half_width_pct() if runner is not None else None}
    if key in result.dropped:
        s, conf, leader = result.dropped[key], racing.DROP_CONF, result.dropped_by[key]
        out.update(race="dropped", race_rounds=result.dropped_round[key])
    else:
        s, conf, leader = final[key], racing.CONF, result.winner
        place = [st.name for st in result.final].index(key)
        out["race"] = "winner" if place == 0 else "runner-up" if place == 1 else "raced"
        if place == 0 and runner is not None:  # the winner's margin: the runner-up's p50 over the winner's
            s, leader = runner, runner.name
    if s.name != key or key != leader:
        out.update(race_leader=label(leader), race_vs_leader=s.vs_leader, race_vs_leader_lo=s.lo,
                   race_vs_leader_hi=s.hi, race_conf=conf)
    return out


@dataclass
class Opened:
    """A prepared backend of the phase, with its accuracy columns (measured once, copied onto each of its rows)."""

    key: str  # its selector (BACKENDS key)
    backend: Backend
    prepare_s: float
    accuracy: dict[str, Any]

    @property
    def eligible(self) -> bool:
        """Whether it may win a race: its accuracy change judged within its budget (bench.model.accuracy)."""
        return self.accuracy.get("accuracy_ok") is True

    def finish(self, row: InferRecord) -> InferRecord:
        if row.ok:
            for name, value in self.accuracy.items():
                setattr(row, name, value)
        return row


def raced_sizes(name: str, ctx: BenchContext) -> set[int]:
    """The batch sizes whose backends race (the headline question H2): batch 1 and the recipe's batch."""
    return {1, ctx.train_batch_size(name)}


def row_label(backend: Backend) -> str:
    """A backend as the report names it: its name, and its precision where the name does not say it."""
    p = backend.precision
    return backend.name if p == "fp32" or p in backend.name else f"{backend.name} {p}"
