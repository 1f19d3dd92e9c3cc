"""Reading what MLPerf LoadGen wrote: its summary (the verdict, the constraints, the scenario's metric), its trace (the
latency of every sample, hence of every query) and its accuracy log (the responses, decoded back into logits).

LoadGen's latency of a sample is ``complete_ns`` on the trace's ``Sample`` begin event: from the time LoadGen
scheduled the query to the SUT's QuerySamplesComplete for that sample (its ``issue_delay`` plus ``issue_to_done``).
A query's latency is that of its last sample (LoadGen's MultiStream definition; one sample otherwise). The trace is
Chrome-trace JSON with unescaped quotes in some event arguments, so it is read line by line, never as one document.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

import numpy as np

SUMMARY = "mlperf_log_summary.txt"
DETAIL = "mlperf_log_detail.txt"
TRACE = "mlperf_log_trace.json"
ACCURACY = "mlperf_log_accuracy.json"
KEPT_LOGS = (SUMMARY, DETAIL)  # small text; the trace and the accuracy log are read, then dropped

SAMPLE_EVENT = re.compile(r'"name":"Sample".*?"ph":"b".*?"query_seq":(\d+).*?"complete_ns":(\d+)')
PAIR = re.compile(r"^\s*([^:*]+?)\s*:\s*(.+?)\s*$")
METRIC_KEYS = ("90.0th percentile latency (ns)", "99.0th percentile latency (ns)", "Samples per second",
               "Completed samples per second")
CONSTRAINTS = {"Min duration satisfied": "min duration", "Min queries satisfied": "min queries",
               "Early stopping satisfied": "early stopping", "Performance constraints satisfied": "latency bound"}


@dataclass
class Summary:
    """The parts of mlperf_log_summary.txt the serve phase uses."""

    result: str | None = None  # "VALID" | "INVALID" (None: an AccuracyOnly run has no verdict)
    unmet: list[str] = field(default_factory=list)  # the constraints it says were not satisfied (CONSTRAINTS' names)
    metric: str | None = None  # the scenario's headline line, e.g. "99.0th percentile latency (ns)"
    metric_value: float | None = None
    samples_per_s: float | None = None
    p99_ns: float | None = None  # "99.00 percentile latency (ns)" of its additional stats
    values: dict[str, str] = field(default_factory=dict)  # every "key : value" line (first occurrence)

    @property
    def met_latency(self) -> bool | None:
        """Server: LoadGen's own "Performance constraints satisfied" (its percentile within the bound)."""
        text = self.values.get("Performance constraints satisfied")
        return None if text is None else text.strip().lower() == "yes"

    def verdict(self) -> str | None:
        if self.result is None:
            return None
        return self.result if not self.unmet else f"{self.result}: unmet {', '.join(self.unmet)}"


def _number(text: str | None) -> float | None:
    try:
        return float(text) if text is not None else None
    except ValueError:
        return None


def parse_summary(text: str) -> Summary:
    values: dict[str, str] = {}
    for line in text.splitlines():
        m = PAIR.match(line)
        if m and m.group(1) not in values:
            values[m.group(1)] = m.group(2)
    out = Summary(values=values)
    out.result = values.get("Result is")
    out.unmet = [short for c, short in CONSTRAINTS.items() if values.get(c, "").strip().lower() == "no"]
    for key in METRIC_KEYS:
        if key in values:
            out.metric, out.metric_value = key, _number(values[key])
            break
    out.samples_per_s = _number(values.get("Samples per second") or values.get("Completed samples per second")
                                or values.get("QPS w/ loadgen overhead"))
    out.p99_ns = _number(values.get("99.00 percentile latency (ns)"))
    return out


def query_latencies_ns(lines) -> np.ndarray:
    """Every query's latency (its last sample's complete_ns), in query order, from the trace's lines."""
    last: dict[int, int] = {}
    for line in lines:
        if '"name":"Sample"' not in line:
            continue
        m = SAMPLE_EVENT.search(line)
        if m:
            query, done = int(m.group(1)), int(m.group(2))
            if done > last.get(query, -1):
                last[query] = done
    return np.array([last[q] for q in sorted(last)], dtype=np.float64)


def read_trace(path: str) -> np.ndarray:
    with open(path, encoding="utf-8", errors="replace") as f:
        return query_latencies_ns(f)


def read_accuracy_log(path: str, classes: int) -> dict[int, np.ndarray]:
    """qsl index -> the float32 logits the SUT responded with (LoadGen logs each response's bytes as hex)."""
    with open(path, encoding="utf-8") as f:
        entries = json.load(f)
    out: dict[int, np.ndarray] = {}
    for entry in entries:
        logits = np.frombuffer(bytes.fromhex(entry["data"]), dtype=np.float32)
        if logits.size != classes:
            raise ValueError(f"accuracy log: sample {entry['qsl_idx']} has {logits.size} values, {classes} expected")
        out[int(entry["qsl_idx"])] = logits
    return out
