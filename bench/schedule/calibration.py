"""The machine-dependent constants of the prices, read from a calibration file that names the machine it came from.

What a one-off build costs (compile, ONNX export, int8 calibration, an OpenVINO model, the plots) and what the serve
phase's hand-off costs cannot be measured before the run without paying them; they are seconds seen on one machine,
scaled to this one by the calibration matmul's ratio (bench.schedule.pricing.speed_factor). They live in a JSON file,
not in code, so that each figure says where it was measured: bench/schedule/reference_prices.json ships with the
project; TORCH_ZOO_BENCH_PRICES=FILE (same keys) prices a run from a file measured on another machine. Every run
records which file and machine priced it (env.notes.prices_from).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

from zoo.errors import UserError

REFERENCE_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "reference_prices.json")
ENV_VAR = "TORCH_ZOO_BENCH_PRICES"


@dataclass(frozen=True)
class PriceCalibration:
    machine: str  # where the figures were measured, in words
    calibration_matmul_fp32_256_ms: float  # that machine's calibration probe: what `speed` divides by
    source: str  # which runs the figures come from
    path: str
    build_s: dict[str, float] = field(default_factory=dict)
    build_s_per_mparam: dict[str, float] = field(default_factory=dict)
    build_forward_samples: dict[str, float] = field(default_factory=dict)
    serve: dict[str, float] = field(default_factory=dict)

    def provenance(self) -> dict[str, Any]:
        return {"file": self.path, "machine": self.machine, "calibration_ms": self.calibration_matmul_fp32_256_ms}


def load_prices(path: str | None = None) -> PriceCalibration:
    """The calibration at ``path`` (default: $TORCH_ZOO_BENCH_PRICES, else the reference file); UserError (one line)
    for a file that is missing, not JSON, or lacks a key."""
    path = path or os.environ.get(ENV_VAR) or REFERENCE_FILE
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        return PriceCalibration(machine=str(data["machine"]),
                                calibration_matmul_fp32_256_ms=float(data["calibration_matmul_fp32_256_ms"]),
                                source=str(data["source"]), path=path, build_s=dict(data["build_s"]),
                                build_s_per_mparam=dict(data["build_s_per_mparam"]),
                                build_forward_samples=dict(data["build_forward_samples"]), serve=dict(data["serve"]))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UserError(f"{ENV_VAR}={path}: not a price calibration file ({type(exc).__name__}: {exc})") from None
