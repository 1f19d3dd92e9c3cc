"""What a results.json may hold, checked value by value: the typed ``env`` block and records of a parsed file.

Every field is checked against its declared type (bench.records) and range before a record exists: raw-sample lists
are lists of finite non-negative numbers (a long one may be stored as its values' counts: bench.report.samples), counts are integers >= 0, times, rates and sizes are finite and >= 0,
fractions lie in [0, 1], names (phase, status, backend, precision, training rung) are ones this bench writes, and a
record names its model (and, for inference and parity, its backend). Free-form blocks (``tuned``, ``maths``,
``notes`` ...) hold JSON values only, nested at most MAX_DEPTH deep. A problem is a ValueError naming the field.
"""
from __future__ import annotations

import dataclasses
import math
import re
from typing import Any

from bench.records import (
    BACKEND_NAMES,
    PRECISIONS,
    RACE_STATES,
    RECORD_TYPES,
    SCHEMA_VERSION,
    STATUSES,
    TRAIN_LADDER,
    Record,
    RunEnv,
)
from bench.report.samples import unpack

MAX_DEPTH = 16  # free-form blocks: deeper than this is not something bench.run writes
# A registered name, or a resolver's PREFIX:NAME (torchvision:resnet18); never a path separator.
MODEL_NAME = re.compile(r"^(?=.{1,100}$)[A-Za-z0-9_.\-]+(:[A-Za-z0-9_.\-]+)?$")
TTA_ROWS = ("shared_loop", "tutorial_loop")
# Fields whose value is one of a known set of names (None allowed unless the field is required).
NAMES: dict[str, tuple[str, ...]] = {"status": STATUSES, "backend": BACKEND_NAMES, "precision": PRECISIONS,
                                     "data": ("real", "synthetic"), "weights": ("checkpoint", "random"),
                                     "dist_backend": ("gloo", "nccl", "mpi"), "race": RACE_STATES}
ROWS = {"train": TRAIN_LADDER, "tta": TTA_ROWS}
REQUIRED = {"infer": ("backend",), "parity": ("backend",), "train": ("row",), "tta": ("row",)}
SIGNED = {"accuracy_delta_pts", "accuracy_delta_lo_pts", "accuracy_delta_hi_pts", "mem_delta_mb", "mem_held_mb"}  # floats that may be negative
FRACTIONS = {"race_conf", "accuracy", "argmax_agreement", "checkpoint_acc", "final_acc", "target_acc"}


def _fail(where: str, what: str, value: Any) -> ValueError:
    shown = repr(value)
    return ValueError(f"{where} must be {what}, not {shown[:60] + '...' if len(shown) > 60 else shown}")


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def check_json(value: Any, where: str, depth: int = 0) -> None:
    """A free-form JSON value: finite numbers, strings, booleans, null, lists and objects, at most MAX_DEPTH deep."""
    if depth > MAX_DEPTH:
        raise ValueError(f"{where} is nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, dict):
        for k, v in value.items():
            check_json(v, f"{where}.{k}", depth + 1)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            check_json(v, f"{where}[{i}]", depth + 1)
    elif isinstance(value, float) and not math.isfinite(value):
        raise _fail(where, "a finite number", value)
    elif value is not None and not isinstance(value, (str, int, float, bool)):
        raise _fail(where, "a JSON value", value)


def check_samples(value: Any, where: str) -> list[float]:
    """A raw-sample list: finite numbers >= 0."""
    if not isinstance(value, list):
        raise _fail(where, "a list of numbers", value)
    for i, v in enumerate(value):
        if not _is_number(v) or not math.isfinite(v) or v < 0:
            raise _fail(f"{where}[{i}]", "a finite number >= 0", v)
    return [float(v) for v in value]


def check_number(name: str, value: Any, where: str, integer: bool) -> Any:
    if integer and (not isinstance(value, int) or isinstance(value, bool)):
        raise _fail(where, "an integer", value)
    if not _is_number(value) or not math.isfinite(value):
        raise _fail(where, "a finite number", value)
    if name in FRACTIONS and not 0 <= value <= 1:
        raise _fail(where, "a fraction in [0, 1]", value)
    if name not in SIGNED and value < 0:
        raise _fail(where, "a number >= 0", value)
    return value if integer else float(value)


def check_field(name: str, annotation: str, value: Any, where: str) -> Any:
    """``value`` as the declared type ``annotation`` (the dataclass field's type string)."""
    optional = annotation.endswith("| None")
    base = annotation.replace(" | None", "")
    if value is None:
        if optional:
            return None
        raise _fail(where, base.split("[")[0], value)
    if base == "list[float]":  # a plain list, or a long one as its values' counts (bench.report.samples)
        return check_samples(unpack(value, where), where)
    if base in ("int", "float"):
        return check_number(name, value, where, base == "int")
    if base == "bool":
        if not isinstance(value, bool):
            raise _fail(where, "true or false", value)
        return value
    if base == "str":
        if not isinstance(value, str):
            raise _fail(where, "a string", value)
        return value
    if base == "list[int]":  # e.g. samples_per_repeat: how many raw samples each process took
        if not isinstance(value, list):
            raise _fail(where, "a list of whole numbers", value)
        return [check_number(name, v, f"{where}[{i}]", True) for i, v in enumerate(value)]
    if base == "list[dict[str, Any]]":  # e.g. a serve row's probes: a list of free-form objects
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            raise _fail(where, "a list of objects", value)
        check_json(value, where)
        return value
    if base == "dict[str, dict[str, Any]]" and isinstance(value, dict) and \
            not all(isinstance(v, dict) for v in value.values()):
        raise _fail(where, "an object of objects", value)  # e.g. env.provenance: model -> its facts
    if base.startswith("dict"):
        if not isinstance(value, dict):
            raise _fail(where, "an object", value)
        if base == "dict[str, str]" and not all(isinstance(v, str) for v in value.values()):
            raise _fail(where, "an object of strings", value)
        check_json(value, where)
        return value
    raise ValueError(f"{where}: no check for type {annotation}")  # a new field type: add its check here


def check_fields(cls: type, data: dict[str, Any], where: str, ignore: tuple[str, ...] = ()) -> dict[str, Any]:
    """Every key of ``data`` a field of ``cls``, each value of its field's type; the checked values."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields) - set(ignore))
    if unknown:
        raise ValueError(f"{where} has unknown field(s): {', '.join(unknown)[:200]}")
    return {k: check_field(k, str(fields[k].type), v, f"{where}.{k}") for k, v in data.items() if k in fields}


def check_names(phase: str, values: dict[str, Any], where: str) -> None:
    model = values.get("model")
    if not isinstance(model, str) or not MODEL_NAME.match(model):
        raise _fail(f"{where}.model", "a model name (letters, digits, _ . -, one PREFIX: at most)", model)
    for name in REQUIRED.get(phase, ()):
        if values.get(name) is None:
            raise ValueError(f"{where} has no {name}")
    for name, known in (*NAMES.items(), ("row", ROWS.get(phase))):
        value = values.get(name)
        if known and value is not None and value not in known:
            raise _fail(f"{where}.{name}", f"one of {', '.join(known)}", value)


def record_from_dict(data: Any, where: str = "record") -> Record:
    """The typed record of a results.json row; ValueError naming the field when it is not one."""
    if not isinstance(data, dict):
        raise _fail(where, "an object", data)
    phase = data.get("phase")
    cls = RECORD_TYPES.get(phase) if isinstance(phase, str) else None
    if cls is None:
        raise _fail(f"{where}.phase", f"one of {', '.join(RECORD_TYPES)}", phase)
    where = f"{where} ({phase})"
    values = check_fields(cls, data, where, ignore=("phase",))
    check_names(phase, values, where)
    check_shapes("tuned", values.get("tuned"), f"{where}.tuned")
    return cls(**values)


# Keys of free-form blocks that a reader (the report, compare) reads as a given shape: checked as that shape.
SHAPES = {"tuned.measured": "number", "tuned.gain": "number", "peaks.skipped": "string", "notes.phase_s": "object"}


def check_shapes(block: str, value: dict[str, Any] | None, where: str) -> None:
    """The keys of SHAPES in a free-form block: a number, or an object whose values are all of the named kind."""
    for key, kind in SHAPES.items():
        name, _, inner = key.partition(".")
        if name != block or not isinstance(value, dict) or value.get(inner) is None:
            continue
        item = value[inner]
        if inner == "gain":
            if not _is_number(item):
                raise _fail(f"{where}.{inner}", "a number", item)
            continue
        kinds = {"number": _is_number, "string": lambda v: isinstance(v, str), "object": lambda v: isinstance(v, dict)}
        if not isinstance(item, dict) or not all(kinds[kind](v) for v in item.values()):
            raise _fail(f"{where}.{inner}", f"an object of {kind}s", item)


def check_calibration(calibration: dict[str, Any]) -> None:
    """The probes of env.calibration, read by bench.compare: each probe's samples_ms a raw-sample list."""
    probes = calibration.get("probes")
    if probes is None:
        return
    if not isinstance(probes, dict):
        raise _fail("env.calibration.probes", "an object", probes)
    for name, probe in probes.items():
        if not isinstance(probe, dict):
            raise _fail(f"env.calibration.probes.{name}", "an object", probe)
        if "samples_ms" in probe:
            check_samples(probe["samples_ms"], f"env.calibration.probes.{name}.samples_ms")
        if probe.get("median_ms") is not None:
            check_number("median_ms", probe["median_ms"], f"env.calibration.probes.{name}.median_ms", False)


def env_from_dict(data: Any) -> RunEnv:
    if data is None:
        return RunEnv()
    if not isinstance(data, dict):
        raise _fail("env", "an object", data)
    env = RunEnv(**check_fields(RunEnv, data, "env"))
    check_calibration(env.calibration)
    check_shapes("peaks", env.peaks, "env.peaks")
    check_shapes("notes", env.notes, "env.notes")
    return env


def results_from_json(data: Any) -> tuple[RunEnv, list[Record]]:
    """(env, records) of a parsed results.json; ValueError with a one-line reason when it does not fit the schema."""
    if not isinstance(data, dict) or not isinstance(data.get("records"), list):
        raise ValueError('not a bench results file (expected {"schema_version": ..., "env": ..., "records": [...]})')
    version = data.get("schema_version")
    if version != SCHEMA_VERSION or isinstance(version, bool):
        raise ValueError(f"results schema version {version!r}; this bench reads version {SCHEMA_VERSION} "
                         "(re-run python -m bench.run to refresh it)")
    unknown = sorted(set(data) - {"schema_version", "env", "records"})
    if unknown:
        raise ValueError(f"unknown top-level field(s): {', '.join(unknown)[:200]}")
    env = env_from_dict(data.get("env"))
    return env, [record_from_dict(row, f"record {i}") for i, row in enumerate(data["records"])]
