"""What the serve phase's rows cost: the planner's prices (bench.schedule.budget.RowCost) and the phase's sizing of each test to
the seconds it has left, from one cost model.

The planner prices a row from the pricing pass's eager forward calls (bench.schedule.pricing: batch 1 and the Offline batch);
the phase re-sizes its tests before each one from the backend's own closed-loop calls (serve_rows.Estimate) and the
seconds its share has left (``fit_flex``). A LoadGen performance test runs until its min duration D AND its min query
count are met, never past MAX_DURATION_FACTOR x D (it then stops issuing and waits for what is queued):
- SingleStream / MultiStream: clip(min queries x one query's round trip, D, 4 D);
- Server, per probe: clip(1000 / rate, D, 4 D) at half the backend's capacity (where the search starts), times
  SERVER_DRAIN for the probes above the knee whose queue drains after the last issue; the search's probes plus the
  check probe at CHECK_FACTOR x (priced CHECK_FACTOR x a probe);
- Offline: one query of OFFLINE_GENERATED x expected_qps x D samples at the estimated capacity;
- AccuracyOnly: every evaluated sample once through the SUT, and once more closed loop.
Every test also pays TEST_OVERHEAD_S (LoadGen's start and its logs) and TRACE_SAMPLE_S per sample (its trace, parsed
for the per-query latencies). A query's round trip is the backend call plus the SUT's hand-off (SUT_QUERY_S per query,
SUT_SAMPLE_S per sample), measured with the noop backend in results/serve/cpu/ (load 10-13 on 2 cores).

A row's floor is every test at MIN_DURATION_FLOOR_MS and the Server search at MIN_SEARCH_PROBES (the query counts
are never cut); its full size is DURATION_MS and MAX_PROBES. Drop order (bench.schedule.budget tiers): eager's serve rows are
core rows (the reference every backend is read against); a non-eager backend's MultiStream and batching-off Server rows
(the same backend at another batching, like a second batch size) go with TIER_DUP_BATCH, its other serve rows with
TIER_BACKEND; within a tier the dearest go first, so serve rows (seconds of steady load each) go before the same tier's
closed-loop inference rows.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import zoo
from bench.model import accuracy
from bench.phases.serve.search import CHECK_FACTOR
from bench.phases.serve.settings import (
    MAX_DURATION_FACTOR,
    MULTISTREAM_SAMPLES,
    OFFLINE_MARGIN,
    OFFLINE_POLICY,
    SERVER_POLICY,
    duration_ms,
    search_probes,
)
from bench.records import PERCENTILE_MIN_CALLS
from bench.schedule.budget import TIER_BACKEND, TIER_CORE, TIER_DUP_BATCH
from bench.schedule.calibration import load_prices
from zoo.data import DATASETS

# The SUT's hand-off (queue, gather, respond) and LoadGen's own costs (bench.schedule.calibration: the file names the
# machine), from the noop backend in results/serve/cpu/:
# SingleStream p90 0.13-0.30 ms per query; Offline 37,620-45,546 samples/s; ~20-25 s between a 633,600-sample Offline
# test's end and the next test's start (parsing its trace); ~0.1-0.3 s between two small tests.
CALIBRATION = load_prices()
SUT_QUERY_S = CALIBRATION.serve["sut_query_s"]
SUT_SAMPLE_S = CALIBRATION.serve["sut_sample_s"]
TRACE_SAMPLE_S = CALIBRATION.serve["trace_sample_s"]
TEST_OVERHEAD_S = CALIBRATION.serve["test_overhead_s"]
OFFLINE_GENERATED = 1.1  # LoadGen's Offline query: 1.1 x expected_qps x min duration samples (its detail logs)
SERVER_DRAIN = 1.3  # a Server probe above the knee drains its queue after the last issue
ESTIMATE_CALLS = 21  # serve_rows.Estimate: one warm call and 20 timed, at batch 1 and at the Offline batch
BOUND_CALLS, BOUND_MIN_S, BOUND_MAX_S = 210, 0.2, 5.0  # serve.model_bound: eager batch-1 calls for the default bound
ROW_TIERS = {"MultiStream": TIER_DUP_BATCH}  # a non-eager backend's rows; Server off: TIER_DUP_BATCH too


@dataclass(frozen=True)
class ServiceTimes:
    """Seconds per backend call at batch 1 and at ``batch`` samples (linear between them, and beyond per sample)."""

    b1_s: float
    batch_s: float
    batch: int = OFFLINE_POLICY.max_batch

    def call_s(self, n: int) -> float:
        if n <= 1 or self.batch <= 1:
            return self.b1_s * max(1, n)
        return max(self.b1_s, self.b1_s + (self.batch_s - self.b1_s) * (n - 1) / (self.batch - 1))

    def query_s(self, n: int) -> float:
        """One query of ``n`` samples through the SUT: the call and the hand-off."""
        return self.call_s(n) + SUT_QUERY_S + n * SUT_SAMPLE_S

    def capacity(self, max_batch: int) -> float:
        """Samples/s one worker serves in batches of ``max_batch`` (1: one query at a time)."""
        return max_batch / (self.call_s(max_batch) + (SUT_QUERY_S if max_batch == 1 else 0.0)
                            + max_batch * SUT_SAMPLE_S)


def closed_test_s(queries: int, samples: int, query_s: float, d: float) -> float:
    """SingleStream / MultiStream: the next query goes when the last completes."""
    seconds = min(MAX_DURATION_FACTOR * d, max(d, queries * query_s))
    return TEST_OVERHEAD_S + seconds + seconds / query_s * samples * TRACE_SAMPLE_S


def server_probe_s(rate: float, d: float) -> float:
    seconds = min(MAX_DURATION_FACTOR * d, max(d, PERCENTILE_MIN_CALLS[99] / rate))
    return TEST_OVERHEAD_S + SERVER_DRAIN * seconds + seconds * rate * TRACE_SAMPLE_S


def key_s(key: dict[str, Any], t: ServiceTimes, flex: float, n_eval: int) -> float:
    """Seconds one row's tests take at ``flex`` (0: floors, 1: defaults) for a backend of service times ``t``."""
    scenario = key["scenario"]
    if key["mode"] == "AccuracyOnly":
        per_sample = 1 / t.capacity(OFFLINE_POLICY.max_batch) + TRACE_SAMPLE_S + t.call_s(t.batch) / t.batch
        return TEST_OVERHEAD_S + n_eval * per_sample
    d = duration_ms(scenario, flex) / 1e3
    if scenario == "SingleStream":
        return closed_test_s(PERCENTILE_MIN_CALLS[90], 1, t.query_s(1), d)
    if scenario == "MultiStream":
        return closed_test_s(PERCENTILE_MIN_CALLS[99], MULTISTREAM_SAMPLES, t.query_s(MULTISTREAM_SAMPLES), d)
    if scenario == "Offline":
        rate = t.capacity(OFFLINE_POLICY.max_batch)
        samples = OFFLINE_GENERATED * OFFLINE_MARGIN * rate * d
        return TEST_OVERHEAD_S + samples * (1 / rate + TRACE_SAMPLE_S)
    batch = 1 if key["batching"] == "off" else SERVER_POLICY.max_batch
    return (search_probes(flex) + CHECK_FACTOR) * server_probe_s(0.5 * t.capacity(batch), d)


def rows_s(keys: list[dict[str, Any]], t: ServiceTimes, flex: float, n_eval: int) -> float:
    return sum(key_s(k, t, flex, n_eval) for k in keys)


def fit_flex(cost: Callable[[float], float], seconds: float | None, steps: int = 24) -> float:
    """The largest flex in [0, 1] whose ``cost(flex)`` fits ``seconds`` (cost grows with flex): 1 without a limit
    or when the defaults fit, 0 when not even the floors do (the sample rules win over the budget)."""
    if seconds is None or cost(1.0) <= seconds:
        return 1.0
    if cost(0.0) >= seconds:
        return 0.0
    lo, hi = 0.0, 1.0
    for _ in range(steps):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if cost(mid) <= seconds else (lo, mid)
    return lo


def row_label(sel: str, key: dict[str, Any]) -> str:
    """A serve row's name in the run's plan, e.g. ``onnxruntime Server batching off``, ``eager AccuracyOnly``."""
    if key["mode"] == "AccuracyOnly":
        return f"{sel} AccuracyOnly"
    return f"{sel} {key['scenario']}" + (" batching off" if key["scenario"] == "Server" and
                                         key["batching"] == "off" else "")


def row_tier(backend: str, key: dict[str, Any]) -> int:
    if backend == "eager":
        return TIER_CORE
    if key["scenario"] == "Server" and key["batching"] == "off" and key["mode"] == "PerformanceOnly":
        return TIER_DUP_BATCH
    return ROW_TIERS.get(key["scenario"], TIER_BACKEND) if key["mode"] == "PerformanceOnly" else TIER_BACKEND


def priced_times(prices: Any, name: str) -> ServiceTimes:
    """The pricing pass's eager calls as service times (a model it could not price: 1 ms a sample)."""
    mp = prices.models.get(name) if prices is not None else None
    sample_s = (mp.sample_s if mp else None) or 1e-3
    forward = mp.forward_s if mp else {}
    b = OFFLINE_POLICY.max_batch
    return ServiceTimes(forward.get(1) or sample_s, forward.get(b) or sample_s * b, b)


def eval_samples(name: str, ctx: Any, t: ServiceTimes) -> int:
    """The samples the reference and the AccuracyOnly row evaluate: the test split, or the prefix bench.model.accuracy cuts
    it to under a budget (priced at eager's batch of accuracy.EVAL_BATCH_SIZE)."""
    n = accuracy.EVAL_BATCH_SIZE
    return accuracy.sample_limit(ctx, DATASETS[zoo.get_spec(name).dataset][2][1], t.call_s(n), n)


def shared_costs(name: str, ctx: Any, prices: Any, t: ServiceTimes, n_eval: int) -> dict[str, float]:
    """The model's serve inputs (eager's reference over the evaluated samples, the default bound's calls)."""
    bound_s = 0.0 if ctx.server_latency_ms is not None else \
        min(BOUND_MAX_S, max(BOUND_MIN_S, BOUND_CALLS * t.b1_s))
    return {f"{name} serve inputs": n_eval * t.call_s(t.batch) / t.batch + bound_s}
