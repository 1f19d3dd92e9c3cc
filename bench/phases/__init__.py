"""Benchmark phases, registered in PHASES in the order a run measures them (train, infer, parity, scale, tta, serve).

Adding a phase is one module with a ``bench.phases.base.Phase`` subclass plus one line here.
"""
from __future__ import annotations

from bench.phases.base import Phase
from bench.phases.infer import InferPhase
from bench.phases.parity import ParityPhase
from bench.phases.scale import ScalePhase
from bench.phases.serve.phase import ServePhase
from bench.phases.train.phase import TrainPhase
from bench.phases.tta import TtaPhase

PHASES: dict[str, Phase] = {phase.name: phase for phase in (
    TrainPhase(), InferPhase(), ParityPhase(), ScalePhase(), TtaPhase(), ServePhase())}
