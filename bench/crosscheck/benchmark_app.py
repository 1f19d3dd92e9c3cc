"""OpenVINO's own measuring tool, ``benchmark_app`` (shipped in the ``openvino`` wheel): the command that runs it on a
row's model and its console output read into a record.

The command gives benchmark_app the row's own IR (the harness's converted model, reshaped to the row's static
shape), the row's own input (an ``.npy`` of the same tensor) and the row's own plugin configuration through
``-load_config`` (bench.backends.openvino.cpu_config: LATENCY hint, threads, f32), so the two differ only in how a
call is driven and timed. With ``-hint latency`` benchmark_app uses its synchronous API: one infer request, a loop of
``request.infer()`` whose latency is the runtime's own per-request timer (``InferRequest.latency``), not the wall time
of the Python call around it. Its report is a sorted list's median (``values[ceil(n/2) - 1]``), average, min and max
over the iterations of its ``-t`` seconds; it prints microseconds when the average is under 1 ms.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import sys
from dataclasses import dataclass, field
from typing import Any

# Step 8 of the report ("Querying optimal runtime parameters") lists the compiled model's properties; these are the
# ones a row's configuration pins, compared with the row's own read-back values.
COMPARED = ("PERFORMANCE_HINT", "INFERENCE_PRECISION_HINT", "INFERENCE_NUM_THREADS", "NUM_STREAMS",
            "ENABLE_CPU_PINNING")
_LATENCY = re.compile(r"^\[ INFO \]\s+(Median|Average|Min|Max):\s+([0-9.]+)\s*(us|ms)\s*$")
_COUNT = re.compile(r"^\[ INFO \]\s+Count:\s+(\d+) iterations")
_DURATION = re.compile(r"^\[ INFO \]\s+Duration:\s+([0-9.]+) ms")
_THROUGHPUT = re.compile(r"^\[ INFO \]\s+Throughput:\s+([0-9.]+) FPS")
_PROPERTY = re.compile(r"^\[ INFO \]   ([A-Z][A-Z0-9_]+): (.*)$")
_STEP = re.compile(r"^\[Step (\d+)/\d+\]\s*(.*)$")
_BUILD = re.compile(r"^\[ INFO \] Build \.+ (\S+)")
_TYPE = re.compile(r"^<Type: '(\w+)'>$")
_TYPE_NAMES = {"float32": "f32", "float16": "f16", "bfloat16": "bf16"}


@dataclass
class BenchmarkAppReport:
    """What one benchmark_app run printed, in milliseconds."""

    median_ms: float
    average_ms: float
    min_ms: float
    max_ms: float
    iterations: int | None = None
    duration_ms: float | None = None
    throughput_fps: float | None = None
    api: str | None = None  # "sync" | "async", from step 10's "Start inference synchronously/asynchronously"
    version: str | None = None  # the OpenVINO build it ran
    properties: dict[str, Any] = field(default_factory=dict)  # step 8, by property name (types normalised)


def normalise(value: str) -> Any:
    """A step-8 value as the harness's read-back has it: ``<Type: 'float32'>`` -> ``f32``, ``True`` -> True, digits
    -> int, anything else the text."""
    value = value.strip()
    typed = _TYPE.match(value)
    if typed:
        return _TYPE_NAMES.get(typed.group(1), typed.group(1))
    if value in ("True", "False"):
        return value == "True"
    return int(value) if value.isdigit() else value


def parse_report(text: str) -> BenchmarkAppReport:
    """The figures of benchmark_app's console output; ValueError (with its error line, when it printed one) when the
    output has no latency report."""
    latency: dict[str, float] = {}
    facts: dict[str, Any] = {"properties": {}}
    step = 0
    for line in text.splitlines():
        line = line.rstrip()
        if m := _STEP.match(line):
            step = int(m.group(1))
            if step == 10:
                facts["api"] = "sync" if "synchronously" in m.group(2) else "async" if "asynchron" in m.group(2) \
                    else None
        elif m := _LATENCY.match(line):
            latency.setdefault(m.group(1), float(m.group(2)) / (1e3 if m.group(3) == "us" else 1.0))
        elif m := _COUNT.match(line):
            facts["iterations"] = int(m.group(1))
        elif m := _DURATION.match(line):
            facts["duration_ms"] = float(m.group(1))
        elif m := _THROUGHPUT.match(line):
            facts["throughput_fps"] = float(m.group(1))
        elif (m := _BUILD.match(line)) and "version" not in facts:
            facts["version"] = m.group(1)
        elif step == 8 and (m := _PROPERTY.match(line)):
            facts["properties"][m.group(1)] = normalise(m.group(2))
    missing = [k for k in ("Median", "Average", "Min", "Max") if k not in latency]
    if missing:
        errors = [ln.split("]", 1)[1].strip() for ln in text.splitlines() if ln.startswith("[ ERROR ]")]
        why = f": {errors[0]}" if errors else ""
        raise ValueError(f"benchmark_app printed no latency {', '.join(missing).lower()}{why}")
    return BenchmarkAppReport(median_ms=latency["Median"], average_ms=latency["Average"], min_ms=latency["Min"],
                              max_ms=latency["Max"], **facts)


def config_differences(row: dict[str, Any], report: BenchmarkAppReport) -> dict[str, tuple[Any, Any]]:
    """COMPARED properties whose values differ: name -> (the row's, benchmark_app's); missing on a side counts."""
    return {name: (row.get(name), report.properties.get(name)) for name in COMPARED
            if row.get(name) != report.properties.get(name)}


def executable() -> str:
    """The benchmark_app of this interpreter's environment (beside sys.executable), else the one on PATH."""
    here = os.path.join(os.path.dirname(sys.executable), "benchmark_app")
    found = here if os.path.exists(here) else shutil.which("benchmark_app")
    if not found:
        raise FileNotFoundError('benchmark_app not found (it ships in the openvino wheel: pip install -e ".[openvino]")')
    return found


def command(model_xml: str, input_npy: str, config_json: str, seconds: float) -> list[str]:
    """benchmark_app on the CPU with the latency hint (its synchronous API), the row's input and configuration. ``-ip
    f32``: benchmark_app makes a 3-channel (image-like) input u8 unless told, and the row feeds f32."""
    return [executable(), "-m", model_xml, "-d", "CPU", "-hint", "latency", "-ip", "f32", "-i", input_npy,
            "-load_config", config_json, "-t", str(max(1, round(seconds)))]


def write_config(path: str, config: dict[str, str]) -> None:
    """benchmark_app's -load_config file: ``{"CPU": {property: value}}``."""
    with open(path, "w") as f:
        json.dump({"CPU": config}, f)
