"""The serve phase's rows for one prepared backend: each LoadGen test configured, run and turned into a ServeRecord.

Order (bench.phases.serve.phase.row_keys): SingleStream, MultiStream, Server with batching on, Server with batching off,
Offline, then the AccuracyOnly row. A test that raises is a failed row with its reason; the backend's other rows run.
"""
from __future__ import annotations

import contextlib
import os
from typing import Any

import numpy as np
import torch

from bench.backends.base import Backend
from bench.context import BenchContext, ModelSession
from bench.measure import timing
from bench.measure.stats import percentile_or_none
from bench.model import accuracy
from bench.phases.serve import logs as serve_logs
from bench.phases.serve.search import ServeProbe, check_rate, search_max_rate
from bench.phases.serve.settings import (
    MULTISTREAM_SAMPLES,
    OFFLINE_MARGIN,
    OFFLINE_POLICY,
    PERFORMANCE_COUNT,
    ServeSettings,
    scenario_settings,
)
from bench.phases.serve.sut import BatchPolicy, LoadGenRun, run_test
from bench.records import ServeRecord, not_ok
from bench.schedule import serve_cost

SERVER_FLOOR_QPS = 10.0  # the search never offers less (1,000 queries would take over 100 s)
MAX_QPS = 20000.0  # nor starts above this: a Python SUT answers a few 10,000 queries/s at best (the noop backend)
MIN_CALL_S = 2e-4  # the hints never assume a call faster than a Python SUT's round trip (else LoadGen plans millions)
RUN_ORDER = ("SingleStream", "Offline", "MultiStream", "Server")


class ServeInputs:
    """What every backend of a model is served with: the evaluated samples, the Server bound, a budget share."""

    def __init__(self, ref: accuracy.Reference, inputs: torch.Tensor, bound_ms: float, bound_source: str,
                 share_s: float | None):
        self.ref, self.inputs = ref, inputs
        self.bound_ms, self.bound_source, self.share_s = bound_ms, bound_source, share_s


class Estimate:
    """Closed-loop seconds per predict call at batch 1 and at the Offline batch: LoadGen's scheduling hints, the
    Server search's start and the sizing of each test to the seconds left (serve_cost), never a reported figure."""

    def __init__(self, predict, inputs: torch.Tensor, calls: int = serve_cost.ESTIMATE_CALLS - 1):
        self.batch = min(OFFLINE_POLICY.max_batch, int(inputs.shape[0]))
        with torch.inference_mode():
            self.b1_s = self.median_s(predict, inputs[:1], calls)
            self.batch_s = self.median_s(predict, inputs[:self.batch], calls)
        self.times = serve_cost.ServiceTimes(self.b1_s, self.batch_s, self.batch)

    @staticmethod
    def median_s(predict, x: torch.Tensor, calls: int) -> float:
        predict(x)
        times = []
        for _ in range(calls):
            t0 = timing.clock()
            predict(x)
            times.append(timing.clock() - t0)
        return max(float(np.median(times)), MIN_CALL_S)

    def capacity(self, policy: BatchPolicy) -> float:
        """Samples/s one worker serves at batch 1 (batching off) or at the Offline batch, the SUT's hand-off
        included (without it a no-op backend's Offline query was sized 8x too big: 633,600 samples, 14 s)."""
        return self.times.capacity(1 if policy.max_batch == 1 else self.batch)


def perf_fields(run: LoadGenRun, settings: ServeSettings) -> dict[str, Any]:
    """A performance row's measured fields from one LoadGen run (percentiles only where enough queries rest them)."""
    ms = run.latencies_ns / 1e6
    return {"settings": settings.to_dict(), "loadgen_result": run.summary.verdict(),
            "latencies_ms": timing.round_sig(ms) if ms.size else [],
            "p50_ms": float(np.median(ms)) if ms.size else None, "p90_ms": percentile_or_none(ms, 90),
            "p99_ms": percentile_or_none(ms, 99), "samples_per_s": run.summary.samples_per_s,
            "mean_batch": float(np.mean(run.batch_sizes)) if run.batch_sizes else None}


class BackendServe:
    def __init__(self, backend: Backend, session: ModelSession, ctx: BenchContext, data: ServeInputs):
        self.started = timing.clock()  # the backend's share (data.share_s) counts from here: the estimate is in it
        self.backend, self.session, self.ctx, self.data = backend, session, ctx, data
        self.estimate = Estimate(backend.predict, data.inputs)
        self.flex = 1.0  # how far between the floors (0) and the defaults (1) the next test runs (serve_cost)
        self.left_s: float | None = None  # seconds the remaining tests had when the next one was sized
        self.measured: dict[str, ServeRecord] = {}  # scenario -> its ok performance row (batching on for Server)

    def size(self, keys: list[dict[str, Any]]) -> None:
        """Size the next test (the first of ``keys``, those left to run) so that all of them fit what is left of the
        backend's share at the same flex, from the backend's own service times; the defaults without a share."""
        if self.data.share_s is None:
            return
        self.left_s = max(0.0, self.data.share_s - (timing.clock() - self.started))
        n_eval = int(self.data.inputs.shape[0])
        self.flex = serve_cost.fit_flex(lambda f: serve_cost.rows_s(keys, self.estimate.times, f, n_eval),
                                        self.left_s)

    def rows(self, keys: list[dict[str, Any]]) -> list[ServeRecord]:
        """Every row of ``keys``, in that order; run SingleStream and Offline first: their rates start the search."""
        done: dict[int, ServeRecord] = {}
        order = sorted(range(len(keys)), key=lambda i: RUN_ORDER.index(keys[i]["scenario"])
                       + (keys[i]["mode"] == "AccuracyOnly") * len(RUN_ORDER))
        for n, i in enumerate(order):
            self.size([keys[j] for j in order[n:]])
            try:
                done[i] = self.one(keys[i])
            except Exception as exc:  # one test that breaks is its failed row; the backend's other tests run
                done[i] = not_ok(ServeRecord, self.session.name, self.ctx.device.type, exc, **self.key(keys[i]))
            if done[i].ok and keys[i]["mode"] == "PerformanceOnly":
                self.measured[keys[i]["scenario"]] = done[i]
        return [done[i] for i in range(len(keys))]

    def start_rate(self, policy: BatchPolicy) -> float:
        """Where the Server search starts: half of what the backend served in Offline (batching on) or at one
        query at a time in SingleStream (off), as measured under LoadGen here; the closed-loop estimate otherwise."""
        offline, single = self.measured.get("Offline"), self.measured.get("SingleStream")
        rate = self.estimate.capacity(policy)
        if offline is not None and offline.samples_per_s:
            rate = offline.samples_per_s
        if policy.max_batch == 1 and single is not None and single.p50_ms:
            rate = min(rate, 1e3 / single.p50_ms)
        return min(MAX_QPS, max(SERVER_FLOOR_QPS, 0.5 * rate))

    def key(self, key: dict[str, Any]) -> dict[str, Any]:
        return {"backend": self.backend.name, "precision": self.backend.precision, **key}

    def one(self, key: dict[str, Any]) -> ServeRecord:
        policy = {"off": BatchPolicy(1)}.get(key["batching"]) or self.policy_of(key)
        if key["mode"] == "AccuracyOnly":
            return self.accuracy_row(key)
        if key["scenario"] == "Server":
            return self.server_row(key, policy)
        return self.plain_row(key, policy)

    @staticmethod
    def policy_of(key: dict[str, Any]) -> BatchPolicy:
        fields = dict(part.split("=") for part in key["batching"].split())
        return BatchPolicy(int(fields["max_batch"]), float(fields["delay_ms"]))

    def settings(self, scenario: str, policy: BatchPolicy, **fields: Any) -> ServeSettings:
        return scenario_settings(scenario, self.flex, policy=policy, threads=self.ctx.threads,
                                 budget_s=None if self.left_s is None else round(self.left_s, 2), **fields)

    def test(self, settings: ServeSettings, *parts: str) -> tuple[LoadGenRun, str]:
        rel = os.path.join("loadgen", self.session.name, f"{self.backend.name}-{self.backend.precision}", *parts)
        run = run_test(settings.loadgen(), self.backend.predict, self.data.inputs, settings.policy,
                       performance_count=settings.performance_count, classes=self.session.spec.num_classes,
                       keep_dir=os.path.join(self.ctx.out_dir, rel))
        return run, rel

    def record(self, key: dict[str, Any], rel: str, **fields: Any) -> ServeRecord:
        provenance = f"weights {self.session.weights}, data {self.ctx.data_label(self.session.name)}"
        return ServeRecord(model=self.session.name, device=self.ctx.device.type, loadgen_log_dir=rel,
                           provenance=provenance, **self.key(key), **fields)

    def plain_row(self, key: dict[str, Any], policy: BatchPolicy) -> ServeRecord:
        """SingleStream, MultiStream or Offline: one test, LoadGen's metric on the row."""
        scenario, est = key["scenario"], self.estimate
        hints = {"SingleStream": {"expected_latency_ms": est.b1_s * 1e3},
                 "MultiStream": {"expected_latency_ms": est.b1_s * 1e3 * MULTISTREAM_SAMPLES},
                 "Offline": {"target_qps": round(est.capacity(policy) * OFFLINE_MARGIN, 1)}}[scenario]
        settings = self.settings(scenario, policy, performance_count=self.performance_count(), **hints)
        run, rel = self.test(settings, scenario)
        note = None
        if scenario == "Offline" and "min duration" in run.summary.unmet and run.summary.samples_per_s:
            # LoadGen's own advice ("increase expected QPS"): once, at the rate it measured, with the same margin.
            first = settings.target_qps  # at most 3x higher: a tiny first query's rate can be a lucky burst
            settings.target_qps = round(min(run.summary.samples_per_s * OFFLINE_MARGIN, 3 * first), 1)
            run, rel = self.test(settings, scenario)
            note = f"expected_qps {first:g} from the closed-loop estimate ended before min duration; re-run"
        return self.record(key, rel, note=note, **perf_fields(run, settings))

    def performance_count(self) -> int:
        return min(PERFORMANCE_COUNT, int(self.data.inputs.shape[0]))

    def server_row(self, key: dict[str, Any], policy: BatchPolicy) -> ServeRecord:
        """The rate search (every probe kept), the check probe at 1.5x, and the row of the best probe's run."""
        runs: dict[float, tuple[LoadGenRun, ServeSettings, str]] = {}
        tag = "Server-" + ("off" if policy.max_batch == 1 else "batching")

        def probe(rate: float, role: str = "search") -> ServeProbe:
            rate = round(rate, 1)
            settings = self.settings("Server", policy, target_qps=rate, latency_bound_ms=self.data.bound_ms,
                                     latency_bound_source=self.data.bound_source,
                                     performance_count=self.performance_count())
            run, rel = self.test(settings, tag, f"qps-{rate:g}")
            runs[rate] = (run, settings, rel)
            return probe_of(run, rate, role)

        probes_left = self.settings("Server", policy).search_probes
        result = search_max_rate(probe, self.start_rate(policy), max_probes=probes_left, floor=SERVER_FLOOR_QPS,
                                 ceiling=MAX_QPS)
        check = check_rate(result)
        if check is not None:
            result.probes.append(probe(check, "check"))
        probes = [p.to_dict() for p in result.probes]
        reported = result.best or min(result.probes, key=lambda p: p.target_qps)
        kept = {round(p.target_qps, 1) for p in result.probes if p.role == "check" or p is reported}
        for rate, (_, _, rel) in runs.items():  # every probe keeps its summary; the detail log only where reported
            if rate not in kept:
                with contextlib.suppress(FileNotFoundError):
                    os.remove(os.path.join(self.ctx.out_dir, rel, serve_logs.DETAIL))
        if result.best is None:
            lowest = min(result.probes, key=lambda p: p.target_qps)
            run, settings, rel = runs[round(lowest.target_qps, 1)]
            return self.record(key, rel, probes=probes, **perf_fields(run, settings),
                               note=f"no probed rate (lowest {lowest.target_qps:g}/s) met the p99 bound")
        run, settings, rel = runs[round(result.best.target_qps, 1)]
        return self.record(key, rel, max_rate_qps=result.best.target_qps, probes=probes, **perf_fields(run, settings))

    def accuracy_row(self, key: dict[str, Any]) -> ServeRecord:
        """AccuracyOnly over every evaluated sample: LoadGen's logged responses against the closed-loop predict."""
        n = int(self.data.inputs.shape[0])
        settings = ServeSettings(scenario="Offline", mode="AccuracyOnly", performance_count=n, min_query_count=1,
                                 target_qps=round(self.estimate.capacity(OFFLINE_POLICY), 1),
                                 max_batch=OFFLINE_POLICY.max_batch, threads=self.ctx.threads,
                                 budget_s=None if self.left_s is None else round(self.left_s, 2))
        run, rel = self.test(settings, "Accuracy")
        missing = sorted(set(range(n)) - set(run.responses or {}))
        if missing:
            raise ValueError(f"LoadGen's accuracy log lacks {len(missing)} of {n} samples (first: {missing[0]})")
        served = np.stack([run.responses[i] for i in range(n)]).argmax(1)
        with torch.inference_mode():
            closed = torch.cat([self.backend.predict(x).float().cpu() for x in self.data.ref.batches()])
        closed_pred, labels = closed.argmax(1).numpy(), self.data.ref.labels.numpy()
        agreement = float((served == closed_pred).mean())
        rec = self.record(key, rel, settings=settings.to_dict(), accuracy=float((served == labels).mean()),
                          closed_loop_accuracy=float((closed_pred == labels).mean()), argmax_agreement=agreement,
                          agreement_samples=n, mean_batch=float(np.mean(run.batch_sizes)))
        if agreement < 1.0:
            rec.status = "failed"
            rec.reason = (f"served predictions agree with the closed-loop predict on {agreement:.4%} of {n} samples "
                          "(100% required)")
        return rec


def probe_of(run: LoadGenRun, rate: float, role: str) -> ServeProbe:
    ms = run.latencies_ns / 1e6
    p99 = run.summary.p99_ns
    return ServeProbe(target_qps=rate, met_bound=bool(run.summary.met_latency), p99_ms=percentile_or_none(ms, 99),
                      loadgen_p99_ms=None if p99 is None else p99 / 1e6, samples_per_s=run.summary.samples_per_s,
                      n_queries=int(ms.size), mean_batch=float(np.mean(run.batch_sizes)) if run.batch_sizes else None,
                      loadgen_result=run.summary.verdict(), role=role)
