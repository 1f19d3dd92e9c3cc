"""Reading a results.json: the one way report and compare load a run. Every problem is a ValueError whose message
is one line naming the file, so a command line can print ``error: <message>`` and exit non-zero."""
from __future__ import annotations

import json
from typing import Any

from bench.measure.stats import split_processes
from bench.records import Record, RunEnv, results_from_json


def load_results(path: str) -> tuple[RunEnv, list[Record]]:
    """(env, records) of the results.json at ``path``; ValueError (one line) when it is missing or not one."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        raise ValueError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ValueError(f"{path}: is a directory, not a results.json") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: cannot read: {type(exc).__name__}: {_first_line(exc)}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
    try:
        return results_from_json(data)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{path}: {_first_line(exc)}") from None


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


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
