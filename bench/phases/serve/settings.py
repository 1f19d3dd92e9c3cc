"""What each LoadGen scenario runs with in the serve phase, and the budget's cut of it.

Every test is short by default (a few seconds: the phase runs beside the rest of the bench on a shared machine), and
the query counts follow the project's percentile rule, not LoadGen's submission rules: a scenario whose metric is a
p90 asks for PERCENTILE_MIN_CALLS[90] queries, a p99 for PERCENTILE_MIN_CALLS[99]. LoadGen judges the run it was
given: with so few queries its early-stopping check often says INVALID, and the row says so; nothing here turns an
INVALID run into a VALID one. A budget smaller than the defaults cuts ``min_duration_ms`` towards
MIN_DURATION_FLOOR_MS and the Server search's probes towards MIN_SEARCH_PROBES (never the query counts): ``flex`` in
[0, 1] is how far between those floors (0) and the defaults (1) a test runs (bench.schedule.serve_cost sizes it to the
seconds left), and a row below the defaults says ``shortened``.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from bench.phases.serve.search import MAX_PROBES
from bench.phases.serve.sut import BatchPolicy
from bench.records import PERCENTILE_MIN_CALLS

DURATION_MS = {"SingleStream": 1500, "MultiStream": 1500, "Server": 1000, "Offline": 1500}
MIN_DURATION_FLOOR_MS = 250  # a budget never cuts a test below this
MIN_SEARCH_PROBES = 2  # nor a Server search below this many probes (one to each side of the start rate), + the check
MAX_DURATION_FACTOR = 4  # max_duration_ms = this x min_duration_ms: a slow backend's test still ends
MULTISTREAM_SAMPLES = 8
SERVER_POLICY = BatchPolicy(max_batch=32, max_queue_delay_ms=0.0)  # Triton's default delay: batch what is queued
OFF_POLICY = BatchPolicy(max_batch=1)
OFFLINE_POLICY = BatchPolicy(max_batch=64)
PERFORMANCE_COUNT = 1024  # samples LoadGen's performance runs draw from (the QSL's performance set)
BOUND_FACTOR = 10.0  # default Server bound: this x eager's closed-loop batch-1 p90 ...
BOUND_FLOOR_MS = 10.0  # ... but never below this (a shared 2-core machine's scheduler quantum is a few ms)
OFFLINE_MARGIN = 1.2  # Offline's expected_qps over the closed-loop estimate, so the one query outlasts min duration


@dataclass
class ServeSettings:
    """One LoadGen test's settings as it ran (ServeRecord.settings holds ``to_dict()``)."""

    scenario: str
    mode: str = "PerformanceOnly"
    min_duration_ms: int = 0
    max_duration_ms: int = 0
    min_query_count: int = 1
    samples_per_query: int = 1
    target_qps: float | None = None  # Server: the offered Poisson rate; Offline: expected_qps
    expected_latency_ms: float | None = None  # SingleStream / MultiStream: LoadGen's scheduling hint
    latency_bound_ms: float | None = None  # Server: the p99 bound
    latency_bound_source: str | None = None
    performance_count: int = PERFORMANCE_COUNT
    max_batch: int = 1
    max_queue_delay_ms: float = 0.0
    threads: int | None = None
    budget_s: float | None = None  # seconds the backend's remaining tests had when this one was sized to them
    shortened: bool = False  # min_duration_ms below DURATION_MS[scenario] (or fewer Server probes): the budget's
    search_probes: int | None = None  # Server: the search's probe limit (MAX_PROBES unless the budget cut it)

    @property
    def policy(self) -> BatchPolicy:
        return BatchPolicy(self.max_batch, self.max_queue_delay_ms)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def loadgen(self) -> Any:
        """The mlperf_loadgen.TestSettings of these settings."""
        import mlperf_loadgen as lg

        s = lg.TestSettings()
        s.scenario = getattr(lg.TestScenario, self.scenario)
        s.mode = getattr(lg.TestMode, self.mode)
        s.min_duration_ms, s.max_duration_ms = int(self.min_duration_ms), int(self.max_duration_ms)
        s.min_query_count = int(self.min_query_count)
        s.performance_sample_count_override = int(self.performance_count)
        if self.scenario == "Server":
            s.server_target_qps = float(self.target_qps)
            s.server_target_latency_ns = int(self.latency_bound_ms * 1e6)
            s.server_target_latency_percentile = 0.99
        elif self.scenario == "Offline":
            s.offline_expected_qps = float(self.target_qps)
        elif self.scenario == "MultiStream":
            s.multi_stream_samples_per_query = int(self.samples_per_query)
            s.multi_stream_expected_latency_ns = int(self.expected_latency_ms * 1e6)
        else:
            s.single_stream_expected_latency_ns = int(self.expected_latency_ms * 1e6)
        return s


def duration_ms(scenario: str, flex: float) -> int:
    """A test's min_duration_ms at ``flex``: MIN_DURATION_FLOOR_MS at 0, DURATION_MS[scenario] at 1."""
    default = DURATION_MS[scenario]
    flex = max(0.0, min(1.0, flex))
    return int(round(MIN_DURATION_FLOOR_MS + flex * max(0, default - MIN_DURATION_FLOOR_MS)))


def search_probes(flex: float) -> int:
    """The Server search's probe limit at ``flex``: MIN_SEARCH_PROBES at 0, MAX_PROBES at 1."""
    flex = max(0.0, min(1.0, flex))
    return MIN_SEARCH_PROBES + int(round(flex * (MAX_PROBES - MIN_SEARCH_PROBES)))


def scenario_settings(scenario: str, flex: float, *, policy: BatchPolicy, threads: int,
                      budget_s: float | None, **fields: Any) -> ServeSettings:
    """A scenario's settings at ``flex`` of the way from its floors to its defaults (``duration_ms``)."""
    duration = duration_ms(scenario, flex)
    q = 90 if scenario == "SingleStream" else 99
    queries = 1 if scenario == "Offline" else PERCENTILE_MIN_CALLS[q]
    samples = MULTISTREAM_SAMPLES if scenario == "MultiStream" else 1
    probes = search_probes(flex) if scenario == "Server" else None
    return ServeSettings(scenario=scenario, min_duration_ms=duration, max_duration_ms=duration * MAX_DURATION_FACTOR,
                         min_query_count=queries, samples_per_query=samples, max_batch=policy.max_batch,
                         max_queue_delay_ms=policy.max_queue_delay_ms, threads=threads, budget_s=budget_s,
                         shortened=duration < DURATION_MS[scenario] or (probes or MAX_PROBES) < MAX_PROBES,
                         search_probes=probes, **fields)


def default_bound_ms(batch1_p90_ms: float) -> tuple[float, str]:
    """(the Server p99 bound, where it comes from) for a model whose eager batch-1 closed-loop p90 is given."""
    bound = max(BOUND_FLOOR_MS, BOUND_FACTOR * batch1_p90_ms)
    return round(bound, 3), (f"default: max({BOUND_FLOOR_MS:g} ms, {BOUND_FACTOR:g} x eager's closed-loop batch-1 "
                             f"p90 {batch1_p90_ms:.3g} ms)")
