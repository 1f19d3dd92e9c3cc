"""The one record every profiler is normalised to: a row's op table, and how it relates to the row's timed figures.

A profile is taken on extra calls after the row's timed calls (bench.profile.take): ``calls`` profiled calls, each
op's ``self_ms`` summed over them. ``profiled_ms_per_call`` is the ops' self time per call (what the profile
attributes: the median over calls where the profiler marks each call, else the mean); ``coverage`` divides it by the row's timed p50, so a reader sees how much of the row the table explains.
``overhead`` is the profiler's own cost, measured: the median wall time per call with the profiler on over the median
with it off, on the same number of calls back to back, minus 1. Files are JSON, loaded strictly (a field missing, of
the wrong type or unknown is a ValueError naming it).
"""
from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from typing import Any

PROFILE_SCHEMA_VERSION = 1
PROFILE_STATUSES = ("ok", "skipped", "failed")
ACTIVITIES = ("cpu", "cuda")
PROFILES_DIR = "profiles"
TOP_SHARE = 0.8  # the top-ops table lists ops until their self times reach this share of the profiled time


class Unsupported(Exception):
    """A profiler that cannot run on a row (not installed, not supported there): a skipped profile with this
    message as its reason, never a failed row."""


@dataclass
class OpStat:
    """One op / kernel / layer over the profiled calls: by name (a graph node, an aten op, a kernel, a layer)."""

    name: str
    op_type: str  # ONNX op type, OpenVINO layer type (kernel), aten op, "kernel", TensorRT layer ("" unknown)
    activity: str  # "cpu" | "cuda": where its self time was spent
    calls: int  # times it ran over the profiled calls
    self_ms: float  # self time summed over the profiled calls
    share: float  # of the profiled time of its activity (0..1)
    input_shapes: str | None = None  # "1x1x28x28, 16x1x5x5", where the profiler records them


@dataclass
class ProfileRecord:
    """The profile of one row: its key, the profiler, the op table and its relation to the row's p50."""

    row: str  # the row key, as the file is named (row_key)
    model: str
    phase: str
    backend: str  # the inference backend, or the training row's rung (tutorial_loop ... compute)
    precision: str
    batch_size: int
    device: str
    profiler: str  # which profiler and version, e.g. "torch.profiler 2.14.1 (CPU)"
    status: str = "ok"  # one of PROFILE_STATUSES
    reason: str | None = None  # why, when not ok
    calls: int = 0  # profiled calls
    row_p50_ms: float | None = None  # the row's timed median, for coverage
    profiled_ms_per_call: float | None = None  # sum of the primary activity's self times / calls
    wall_on_ms: float | None = None  # median wall time per profiled call, profiler on
    wall_off_ms: float | None = None  # median wall time per call of the same number of calls, profiler off
    overhead: float | None = None  # wall_on_ms / wall_off_ms - 1
    coverage: float | None = None  # profiled_ms_per_call / row_p50_ms
    activity: str = "cpu"  # the primary activity: "cuda" when the profile has device kernels
    trace: str | None = None  # the native trace's file name, beside this record
    ops: list[OpStat] = field(default_factory=list)  # by self time, largest first
    schema_version: int = PROFILE_SCHEMA_VERSION

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def label(self) -> str:
        prec = "" if self.precision == "fp32" else f" {self.precision}"
        return f"{self.model} {self.backend}{prec} b={self.batch_size}"

    def primary_ops(self) -> list[OpStat]:
        return [op for op in self.ops if op.activity == self.activity]

    def top_ops(self, share: float = TOP_SHARE, at_least: int = 3) -> list[OpStat]:
        """The largest ops of the primary activity until their shares reach ``share`` (and at least ``at_least``)."""
        out, total = [], 0.0
        for op in self.primary_ops():
            if total >= share and len(out) >= at_least:
                break
            out.append(op)
            total += op.share
        return out

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def row_key(model: str, phase: str, backend: str, batch_size: int, precision: str) -> str:
    """A row's key as a file name: ``lenet.infer.onnxruntime-int8.b64.int8`` (the fields of InferRecord.key)."""
    return f"{model}.{phase}.{backend}.b{batch_size}.{precision}"


def train_row_key(model: str, rung: str, batch_size: int, precision: str, channels_last: bool,
                  compile_mode: str | None) -> str:
    """A training row's key as a file name: ``lenet.train.fast.b64.fp32`` (+ ``.channels_last``, ``.compile=MODE``)."""
    variant = (".channels_last" if channels_last else "") + (f".compile={compile_mode}" if compile_mode else "")
    return f"{model}.train.{rung}.b{batch_size}.{precision}{variant}"


def finish(ops: list[OpStat]) -> list[OpStat]:
    """Shares within each activity, largest self time first."""
    totals = {a: sum(op.self_ms for op in ops if op.activity == a) for a in ACTIVITIES}
    for op in ops:
        op.share = op.self_ms / totals[op.activity] if totals[op.activity] > 0 else 0.0
    return sorted(ops, key=lambda op: (-op.self_ms, op.name))


def summarise(rec: ProfileRecord, ops: list[OpStat], per_call_ms: list[float], walls_on_s: list[float],
              walls_off_s: list[float]) -> None:
    """Fill ``rec``'s ops and figures from the normalised ops, each call's profiled ms (the median of them, as the
    row's p50 is a median; [] where the profiler gives no single call's time: the mean), and the wall times with the
    profiler on and off."""
    import statistics

    rec.ops = finish(ops)
    rec.activity = "cuda" if any(op.activity == "cuda" for op in ops) else "cpu"
    rec.calls = len(walls_on_s)
    if per_call_ms:
        rec.profiled_ms_per_call = statistics.median(per_call_ms)
    elif rec.calls:
        rec.profiled_ms_per_call = sum(op.self_ms for op in rec.primary_ops()) / rec.calls
    if rec.calls:
        rec.wall_on_ms = 1e3 * statistics.median(walls_on_s)
    if walls_off_s:
        rec.wall_off_ms = 1e3 * statistics.median(walls_off_s)
    if rec.wall_on_ms and rec.wall_off_ms:
        rec.overhead = rec.wall_on_ms / rec.wall_off_ms - 1
    if rec.profiled_ms_per_call is not None and rec.row_p50_ms:
        rec.coverage = rec.profiled_ms_per_call / rec.row_p50_ms


# ---------------------------------------------------------------------------------------------------------------
# Files: written whole (a temporary file renamed), read strictly


def _check(cls: type, data: Any, where: str) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise ValueError(f"{where}: expected an object, got {type(data).__name__}")
    names = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise ValueError(f"{where}: unknown field(s) {', '.join(unknown)}")
    required = [n for n, f in names.items() if f.default is dataclasses.MISSING
                and f.default_factory is dataclasses.MISSING and n not in data]
    if required:
        raise ValueError(f"{where}: missing field(s) {', '.join(required)}")
    for name, value in data.items():
        kind = str(names[name].type)
        ok = (value is None and "None" in kind) or (
            isinstance(value, str) and kind.startswith("str")) or (
            isinstance(value, bool) is False and isinstance(value, int) and kind.startswith(("int", "float"))) or (
            isinstance(value, float) and kind.startswith("float")) or (
            isinstance(value, list) and kind.startswith("list"))
        if not ok:
            raise ValueError(f"{where}: {name} = {value!r} is not {kind}")
    return data


def profile_from_dict(data: Any, where: str = "profile") -> ProfileRecord:
    data = dict(_check(ProfileRecord, data, where))
    if data.get("schema_version", PROFILE_SCHEMA_VERSION) != PROFILE_SCHEMA_VERSION:
        raise ValueError(f"{where}: schema_version {data['schema_version']}, this reader knows "
                         f"{PROFILE_SCHEMA_VERSION}")
    if data.get("status", "ok") not in PROFILE_STATUSES:
        raise ValueError(f"{where}: status {data['status']!r} is not one of {', '.join(PROFILE_STATUSES)}")
    ops = [OpStat(**_check(OpStat, op, f"{where}: ops[{i}]")) for i, op in enumerate(data.pop("ops", []))]
    for i, op in enumerate(ops):
        if op.activity not in ACTIVITIES or op.self_ms < 0 or op.calls < 0:
            raise ValueError(f"{where}: ops[{i}] ({op.name}): activity, calls or self_ms out of range")
    return ProfileRecord(**data, ops=ops)


def save_profile(rec: ProfileRecord, folder: str) -> str:
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, f"{rec.row}.json")
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as fh:
        json.dump(rec.to_dict(), fh, indent=1, allow_nan=False)
        fh.write("\n")
    os.replace(tmp, path)
    return path


def load_profile(path: str) -> ProfileRecord:
    try:
        with open(path) as fh:
            data = json.load(fh)
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: {getattr(exc, 'strerror', None) or exc}") from None
    return profile_from_dict(data, path)


def load_profiles(folder: str) -> dict[str, ProfileRecord]:
    """Every profile under ``folder`` (OUT/<device>/profiles), by row key; {} when there is none."""
    if not os.path.isdir(folder):
        return {}
    out = {}
    for name in sorted(os.listdir(folder)):
        # Native files (.trace.json, .native.json, and ORT's own .trace.ort_<time>.json before it is renamed) are
        # traces, not records.
        if name.endswith(".json") and ".trace." not in name and ".native." not in name:
            rec = load_profile(os.path.join(folder, name))
            out[rec.row] = rec
    return out
