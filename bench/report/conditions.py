"""The conditions a run was made under, as a reader of its figures needs them: the machine's load average at the
run's start and end against its cores, and the calibration probes (bench.measure.machine) with their spread.

A run is LOADED when a 1-minute load average it recorded exceeds its CPU count (on a 2-core machine: above 2): other
processes then share the cores the figures were timed on. Its calibration is OFF when a probe's median is slower
than the fastest run of the same machine (same device name, CPU count and probe threads) beyond what fresh processes
of that machine vary by: the between-process variance of the probe in this machine's noise profile (written by
``bench.run --repeat 5``, bench.analysis.noise), as a one-sided 95% t bound on the log ratio of two one-process
medians. A probe's own within-process IQR is no measure of that (single-process probes here spread 5-20% between
processes while their IQRs read a few percent), so without a profile the calibration is not judged, and the cell
says so. Both marks are in the index, and the matrix crowns no "best" across loaded and quiet runs.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

from bench.analysis.noise import RowNoise, find_profiles
from bench.measure.stats import t_quantile
from bench.records import RunEnv
from bench.report.tables import num, pct

LOAD_KEYS = ("load_avg_at_start", "load_avg_at_end")  # env.notes: [1, 5, 15-minute] load averages


@dataclass(frozen=True)
class Probe:
    median_ms: float
    iqr_ms: float | None  # None when the file kept no samples


@dataclass(frozen=True)
class Conditions:
    """One run's load and calibration."""

    load_start: float | None  # 1-minute load average
    load_end: float | None
    cores: int | None
    machine: tuple  # what makes two runs' calibrations comparable
    probes: dict[str, Probe] = field(default_factory=dict)

    @property
    def peak_load(self) -> float | None:
        loads = [x for x in (self.load_start, self.load_end) if x is not None]
        return max(loads) if loads else None

    @property
    def loaded(self) -> bool:
        return self.peak_load is not None and self.cores is not None and self.peak_load > self.cores

    def load_text(self) -> str:
        if self.peak_load is None:
            return "load not recorded"
        both = "/".join("?" if x is None else f"{x:.2f}" for x in (self.load_start, self.load_end))
        text = f"load {both} (1-min, start/end) on {self.cores or '?'} cores"
        return f"**LOADED** {text}" if self.loaded else text


def _one_minute(value) -> float | None:
    return float(value[0]) if isinstance(value, list) and value and isinstance(value[0], (int, float)) else None


def _probe(probe: Mapping) -> Probe | None:
    median, iqr = probe.get("median_ms"), None
    samples = probe.get("samples_ms")
    if isinstance(samples, list) and len(samples) >= 4:
        q1, q2, q3 = np.percentile(np.asarray(samples, dtype=float), [25, 50, 75])
        iqr = float(q3 - q1)
        median = median if isinstance(median, (int, float)) else float(q2)
    return Probe(float(median), iqr) if isinstance(median, (int, float)) else None


def conditions(env: RunEnv) -> Conditions:
    cal = env.calibration or {}
    probes = {name: p for name, raw in (cal.get("probes") or {}).items()
              if isinstance(raw, Mapping) and (p := _probe(raw)) is not None}
    machine = (env.device_name, env.device, env.cpu_count, cal.get("threads"), cal.get("run_threads"))
    return Conditions(_one_minute(env.notes.get(LOAD_KEYS[0])), _one_minute(env.notes.get(LOAD_KEYS[1])),
                      env.cpu_count, machine, probes)


def calibration_off(run: Conditions, others: list[Conditions],
                    prior: Callable[[str], RowNoise | None]) -> list[str] | None:
    """The probes of ``run`` slower than the fastest comparable run's beyond the machine's between-process noise
    (``prior(probe name)``), as 'name +35% (noise bound +12%)'; [] when none is or no other run of the same machine
    is there to compare with; None when a compared probe has no noise profile (not judged)."""
    off = []
    for name, mine in run.probes.items():
        refs = [o.probes[name] for o in others if o.machine == run.machine and name in o.probes]
        if not refs:
            continue
        noise = prior(name)
        if noise is None or noise.df < 1:
            return None
        best = min(refs, key=lambda p: p.median_ms)
        bound = float(t_quantile(0.95, noise.df)) * math.sqrt(2.0 * noise.variance)  # two one-process medians
        if math.log(mine.median_ms / best.median_ms) > bound:
            off.append(f"{name} +{pct(mine.median_ms / best.median_ms - 1)} (noise bound +{pct(math.exp(bound) - 1)})")
    return off


def profile_prior(env: RunEnv) -> Callable[[str], RowNoise | None]:
    """A probe's between-process noise from the noise profile cached for this run's machine and threads."""
    try:
        profiles = find_profiles([env])
    except ValueError:  # an unreadable profile judges nothing
        profiles = []
    return lambda name: next((p.prior(("calibration", name)) for p in profiles if p.prior(("calibration", name))),
                             None)


def index_cells(envs: Mapping[str, RunEnv]) -> dict[str, str]:
    """Per run: its load and its calibration (off, or not judged without a noise profile), marked for the index."""
    all_conditions = {key: conditions(env) for key, env in envs.items()}
    out = {}
    for key, cond in all_conditions.items():
        off = calibration_off(cond, [c for k, c in all_conditions.items() if k != key], profile_prior(envs[key]))
        tail = "; calibration not judged (no noise profile)" if off is None else \
            f"; **calibration off**: {', '.join(off)}" if off else ""
        out[key] = cond.load_text() + tail
    return out


def glance_line(env: RunEnv) -> str:
    """What the glance says about the machine the run was made on."""
    cond = conditions(env)
    probes = ", ".join(f"{name} {num(p.median_ms)} ms" + (f" ± {pct(p.iqr_ms / p.median_ms)}"
                                                           if p.iqr_ms is not None and p.median_ms else "")
                       for name, p in cond.probes.items())
    verdict = ": other processes shared the cores, read its timings with care" if cond.loaded else ""
    return f"Machine: {cond.load_text()}{verdict}; calibration (median ± IQR %): {probes or 'not recorded'}."
