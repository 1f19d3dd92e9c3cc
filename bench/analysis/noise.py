"""Noise profiles: how far fresh processes of the same code disagree on this machine, per row.

A run measured in N >= 5 fresh processes (``python -m bench.run --repeat 5``) knows, for each row it kept raw samples
of and for each calibration probe, the between-process variance of the log of each process's median, with N - 1
degrees of freedom. That is written beside its results (``noise_profile.json``) and into a user cache, one file per
machine and thread count, so that a later comparison of one-process runs on that machine can judge them: a row
measured in one process has no spread of its own, and the profile's variance stands in for it (pooled with its degrees
of freedom, bench.measure.stats.pooled_interval). Without a profile such a row gets no verdict.

The cache folder is $TORCH_ZOO_BENCH_NOISE_DIR, else $XDG_CACHE_HOME/torch-zoo-bench/noise, else
~/.cache/torch-zoo-bench/noise. Pure Python and numpy, no torch.
"""
from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from bench.measure.stats import between_variance, log_medians, split_processes
from bench.records import InferRecord, Record, RunEnv, ScaleRecord, TrainRecord
from bench.report.load import probe_processes

PROFILE_FILE = "noise_profile.json"
PROFILE_VERSION = 1
CACHE_ENV = "TORCH_ZOO_BENCH_NOISE_DIR"
MIN_PROCESSES = 5  # fewer, and the variance has too few degrees of freedom to stand in for a row's own spread
SAMPLED = (TrainRecord, InferRecord, ScaleRecord)


def make_command(env: RunEnv) -> str:
    """The one command that makes the profile a comparison of runs like ``env`` lacks."""
    threads = f" --threads {env.threads}" if env.threads else ""
    return f"python -m bench.run --repeat {MIN_PROCESSES}{threads}"


@dataclass(frozen=True)
class RowNoise:
    """One row's between-process variance of log process medians and its degrees of freedom."""

    key: tuple
    variance: float
    df: int


@dataclass
class NoiseProfile:
    """Where and how the variances were measured, and the variance of every row (keyed by ``Record.key()``;
    calibration probes as ("calibration", name))."""

    machine: str
    threads: int | None
    processes: int
    timestamp: str = ""
    command: str | None = None
    rows: dict[tuple, RowNoise] = field(default_factory=dict)
    path: str = ""  # where it was read from ("" when built here)

    def prior(self, key: tuple) -> RowNoise | None:
        return self.rows.get(tuple(key))

    def to_dict(self) -> dict:
        return {"schema": "torch-zoo-bench noise profile", "version": PROFILE_VERSION, "machine": self.machine,
                "threads": self.threads, "processes": self.processes, "timestamp": self.timestamp,
                "command": self.command,
                "rows": [{"key": list(r.key), "variance": r.variance, "df": r.df} for r in self.rows.values()]}


def machine_of(env: RunEnv) -> str:
    """The machine a profile belongs to: device type, device model and core count (no host name is recorded)."""
    return f"{env.device or '?'} {env.device_name or '?'} {env.cpu_count or '?'} cores"


def cache_dir() -> str:
    if os.environ.get(CACHE_ENV):
        return os.environ[CACHE_ENV]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "torch-zoo-bench", "noise")


def cache_path(machine: str, threads: int | None) -> str:
    slug = re.sub(r"[^A-Za-z0-9]+", "-", machine).strip("-").lower() or "machine"
    return os.path.join(cache_dir(), f"{slug}-t{threads if threads is not None else 'x'}.json")


def _row_noise(key: tuple, groups: list[list[float]]) -> RowNoise | None:
    try:
        variance, df = between_variance(log_medians(groups))
    except (TypeError, ValueError):  # one process, a median of zero, junk: nothing to learn from this row
        return None
    return RowNoise(tuple(key), variance, df)


def _samples(rec: Record) -> list[float]:
    return list((rec.latencies_ms if isinstance(rec, InferRecord) else rec.window_rates) or [])


def build_profile(env: RunEnv, records: Iterable[Record]) -> NoiseProfile:
    """The profile of a merged --repeat run: every ok sampled row and calibration probe split into >= 2 processes."""
    rows: dict[tuple, RowNoise] = {}
    for rec in records:
        if isinstance(rec, SAMPLED) and rec.ok and rec.samples_per_repeat:
            try:
                noise = _row_noise(rec.key(), split_processes(_samples(rec), rec.samples_per_repeat))
            except ValueError:
                continue
            if noise is not None:
                rows[noise.key] = noise
    for name, groups in probe_processes(env.calibration).items():
        noise = _row_noise(("calibration", name), groups)
        if noise is not None:
            rows[noise.key] = noise
    return NoiseProfile(machine_of(env), env.threads, env.repeat, env.timestamp, env.command, rows)


def write_profile(profile: NoiseProfile, paths: Iterable[str]) -> list[str]:
    """Write the profile to each path (folders made); the paths written. A cache that cannot be written is skipped:
    the copy beside the results still holds it."""
    from zoo.atomic import atomic_write_text

    text = json.dumps(profile.to_dict(), indent=1) + "\n"
    written = []
    for path in paths:
        try:
            os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
            atomic_write_text(path, text)
        except OSError:
            continue
        written.append(path)
    return written


def save_profile(env: RunEnv, records: list[Record], out_dir: str) -> tuple[NoiseProfile, list[str]] | None:
    """After a --repeat run of >= MIN_PROCESSES processes: its profile beside the results and in the cache."""
    if env.repeat < MIN_PROCESSES:
        return None
    profile = build_profile(env, records)
    if not profile.rows:
        return None
    return profile, write_profile(profile, [os.path.join(out_dir, PROFILE_FILE),
                                            cache_path(profile.machine, profile.threads)])


def _key(value: object) -> tuple:
    if not isinstance(value, list):
        raise ValueError("a row key must be a list")
    return tuple(value)


def load_profile(path: str) -> NoiseProfile:
    """A profile file, strictly; ValueError (one line) on anything else."""
    if os.path.isdir(path):
        path = os.path.join(path, PROFILE_FILE)
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
        if doc.get("version") != PROFILE_VERSION:
            raise ValueError(f"version {doc.get('version')!r}, expected {PROFILE_VERSION}")
        rows = {}
        for row in doc["rows"]:
            noise = RowNoise(_key(row["key"]), float(row["variance"]), int(row["df"]))
            if not (math.isfinite(noise.variance) and noise.variance >= 0 and noise.df >= 1):
                raise ValueError(f"row {list(noise.key)}: variance {noise.variance} with {noise.df} df")
            rows[noise.key] = noise
        return NoiseProfile(str(doc["machine"]), doc["threads"], int(doc["processes"]), str(doc.get("timestamp", "")),
                            doc.get("command"), rows, path)
    except OSError as exc:
        raise ValueError(f"{path}: cannot read the noise profile: {exc.strerror or exc}") from None
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"{path}: not a noise profile ({type(exc).__name__}: {exc})") from None


def find_profiles(envs: Iterable[RunEnv], explicit: str | None = None) -> list[NoiseProfile]:
    """The profiles a comparison judges one-process rows with: ``explicit`` (a file or a folder holding one), else
    the cached profile of each run's machine and thread count that exists (one per distinct pair)."""
    if explicit:
        return [load_profile(explicit)]
    found: dict[str, NoiseProfile] = {}
    for env in envs:
        path = cache_path(machine_of(env), env.threads)
        if path not in found and os.path.exists(path):
            found[path] = load_profile(path)
    return list(found.values())


@dataclass
class Priors:
    """The profiles found for a comparison, and the runs' machines each must cover."""

    profiles: list[NoiseProfile]
    needed: int  # distinct (machine, threads) among the runs: every one needs its profile unless one was given
    command: str  # the one command that makes the missing profile

    def prior(self, key: tuple) -> RowNoise | None:
        """The row's variance pooled over every profile found (df-weighted); None when a machine lacks a profile
        or a profile lacks the row."""
        found = [p.prior(key) for p in self.profiles]
        if not found or len(found) < self.needed or any(f is None for f in found):
            return None
        df = sum(f.df for f in found)
        return RowNoise(tuple(key), sum(f.variance * f.df for f in found) / df, df)

    def describe(self) -> str:
        if not self.profiles:
            return f"no noise profile for this machine: one-process rows get no verdict; make one with `{self.command}`"
        return "; ".join(f"{p.path or 'built here'} ({p.machine}, {p.threads} threads, {p.processes} processes, "
                         f"{p.timestamp or '?'})" for p in self.profiles)


def priors_for(env_a: RunEnv, env_b: RunEnv, explicit: str | None = None) -> Priors:
    pairs = {(machine_of(e), e.threads) for e in (env_a, env_b)}
    profiles = find_profiles([env_a, env_b], explicit)
    return Priors(profiles, 1 if explicit else len(pairs), make_command(env_b))
