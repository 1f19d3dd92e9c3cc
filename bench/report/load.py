"""Reading a results.json: the one way report, compare, matrix and history load a run. The text is parsed as strict
JSON (no NaN or Infinity, no number that overflows to one, no duplicate key, no nesting that exhausts the stack) and
every value checked by bench.report.schema. Every problem is a ValueError whose message is one line naming the file,
so a command line prints ``error: <message>`` and exits 2. Nothing here imports torch or matplotlib."""
from __future__ import annotations

import json
import math
from typing import Any

from bench.measure.stats import split_processes
from bench.records import Record, RunEnv
from bench.report.schema import results_from_json

MAX_BYTES = 512 * 1024 * 1024  # far above any run bench.run writes (a full CPU run is ~5 MB)


def _constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:40]} overflows a float")
    return value


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        dup = next(k for k, _ in pairs if k in seen or seen.add(k))
        raise ValueError(f"duplicate key {dup[:60]!r}")
    return out


def parse_json(text: str) -> Any:
    """Strict JSON; ValueError (one line) for what is not."""
    try:
        return json.loads(text, parse_constant=_constant, parse_float=_finite, object_pairs_hook=_no_duplicates)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
    except RecursionError:
        raise ValueError("not a results file: JSON nested too deeply to read") from None
    except ValueError as exc:  # from the hooks above, or an integer too long to convert
        raise ValueError(f"not strict JSON: {first_line(exc)}") from None


def parse_results(text: str, name: str) -> tuple[RunEnv, list[Record]]:
    """(env, records) of a results.json's text; ValueError ``NAME: why`` (one line) when it is not a valid one."""
    try:
        return results_from_json(parse_json(text))
    except (TypeError, ValueError, RecursionError) as exc:
        raise ValueError(f"{name}: {first_line(exc)}") from None


def load_results(path: str) -> tuple[RunEnv, list[Record]]:
    """(env, records) of the results.json at ``path``; ValueError (one line) when it is missing or not one."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read(MAX_BYTES + 1)
    except FileNotFoundError:
        raise ValueError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ValueError(f"{path}: is a directory, not a results.json") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: cannot read: {type(exc).__name__}: {first_line(exc)}") from None
    if len(text) > MAX_BYTES:
        raise ValueError(f"{path}: larger than {MAX_BYTES // 2**20} MiB: not a results.json bench.run wrote")
    return parse_results(text, path)


def probe_samples(calibration: dict[str, Any]) -> dict[str, list[float]]:
    """Probe name -> raw samples (ms) of an env.calibration block (the layout bench.measure.machine.calibrate writes); empty
    when the block has none. Read here so comparing runs never imports torch."""
    probes = calibration.get("probes") if isinstance(calibration, dict) else None
    if not isinstance(probes, dict):
        return {}
    return {name: list(p["samples_ms"]) for name, p in probes.items()
            if isinstance(p, dict) and isinstance(p.get("samples_ms"), list) and p["samples_ms"]}


def probe_processes(calibration: dict[str, Any]) -> dict[str, list[list[float]]]:
    """Probe name -> its raw samples (ms) cut into the processes that took them (``samples_per_repeat``, written by
    a --repeat run; absent: one process). A probe whose cut does not fit its samples is left out, as junk."""
    probes = calibration.get("probes") if isinstance(calibration, dict) else None
    out = {}
    for name, samples in probe_samples(calibration).items():
        sizes = probes[name].get("samples_per_repeat")
        try:
            out[name] = split_processes(samples, sizes if isinstance(sizes, list) else None)
        except (TypeError, ValueError):
            continue
    return out


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__
