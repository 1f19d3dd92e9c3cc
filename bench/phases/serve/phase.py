"""Latency under load: MLPerf LoadGen's scenarios against every backend (``--phases serve``; not in a default run).

Per backend (``available`` / ``prepare`` as in the infer phase, then the system under test of bench.phases.serve.sut
around its ``predict``), one row per test:
- SingleStream: one sample per query, the next issued when the last completes; LoadGen's metric is the p90.
- MultiStream: queries of MULTISTREAM_SAMPLES samples, served as one batch; the metric is the p99.
- Server (twice: dynamic batching on, and off = max batch 1): Poisson arrivals; the highest probed rate whose p99
  LoadGen finds within the bound (bench.phases.serve.search; every probe kept), and one probe at 1.5x that rate.
- Offline: every sample in one query, served in batches of OFFLINE_POLICY.max_batch; the metric is samples/s.
- Accuracy: LoadGen's AccuracyOnly mode (Offline scenario) over the evaluated test samples: the responses LoadGen
  logged are decoded and scored, and must agree 100% (argmax) with the same backend's closed-loop predict on the same
  samples; a mismatch fails the row.
The Server bound is one per model (``--server-latency-ms``, else serve_settings.default_bound_ms of eager's
closed-loop batch-1 p90 measured here), so every backend is held to the same bound. Latencies are LoadGen's own, from
its trace; LoadGen's summary and detail logs are kept under OUT/<device>/loadgen/.
"""
from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch

from bench.backends import BACKENDS
from bench.backends.base import Backend
from bench.context import BenchContext, ModelSession
from bench.measure import timing
from bench.model import accuracy
from bench.phases.base import Phase, Priced, kept
from bench.phases.infer import BUILDS, ONNX_BACKENDS, free_memory
from bench.phases.serve.rows import BackendServe, ServeInputs
from bench.phases.serve.settings import (
    MULTISTREAM_SAMPLES,
    OFF_POLICY,
    OFFLINE_POLICY,
    SERVER_POLICY,
    default_bound_ms,
)
from bench.phases.serve.sut import BatchPolicy, loadgen_missing
from bench.records import SERVE_SCENARIOS, Record, ServeRecord, not_ok
from bench.schedule import serve_cost
from bench.schedule.budget import RowCost

BOUND_KEY = "serve_bound"


def row_keys(scenarios: list[str]) -> list[dict[str, Any]]:
    """The key fields of a backend's rows, in the order they run (Server twice: batching on, then off), then the
    AccuracyOnly row."""
    policies = {"SingleStream": [OFF_POLICY], "MultiStream": [BatchPolicy(MULTISTREAM_SAMPLES)],
                "Server": [SERVER_POLICY, OFF_POLICY], "Offline": [OFFLINE_POLICY]}
    keys = [{"scenario": scenario, "mode": "PerformanceOnly", "batching": p.describe()}
            for scenario in SERVE_SCENARIOS if scenario in scenarios for p in policies[scenario]]
    keys.append({"scenario": "Offline", "mode": "AccuracyOnly", "batching": OFFLINE_POLICY.describe()})
    return keys


def model_bound(session: ModelSession, ctx: BenchContext, inputs: torch.Tensor) -> tuple[float, str]:
    """The model's Server p99 bound (ms) and its source; the default is measured once per model, with eager."""
    if ctx.server_latency_ms is not None:
        return float(ctx.server_latency_ms), "--server-latency-ms"
    if BOUND_KEY not in session.cache:
        x = inputs[:1]
        with torch.inference_mode():
            samples = timing.sample_latencies(lambda: session.model(x), ctx.sync, min_calls=200, min_seconds=0.2,
                                              warmup=10, max_seconds=5.0)
        session.cache[BOUND_KEY] = default_bound_ms(float(np.percentile(np.asarray(samples) * 1e3, 90)))
    return session.cache[BOUND_KEY]


class ServePhase(Phase):
    name: ClassVar[str] = "serve"
    record_type: ClassVar[type[Record]] = ServeRecord
    in_quick: ClassVar[bool] = False  # seconds of steady load per scenario: never part of a smoke run
    in_default: ClassVar[bool] = False

    def planned_rows(self, name: str, ctx: BenchContext) -> int:
        return len(ctx.backends) * len(row_keys(ctx.serve_scenarios))

    def row_costs(self, name: str, ctx: BenchContext, prices) -> Priced:
        """Every backend's rows priced by bench.schedule.serve_cost (floor: the shortest tests and fewest Server probes
        the rules allow; full: the defaults), with the backend's build and closed-loop estimate, the ONNX export and
        the model's serve inputs shared; the drop order is serve_cost's."""
        t = serve_cost.priced_times(prices, name)
        n_eval = serve_cost.eval_samples(name, ctx, t)
        groups = serve_cost.shared_costs(name, ctx, prices, t, n_eval)
        groups[f"{name} onnx export"] = prices.build_for("onnx_export", name)
        rows = []
        for sel in ctx.backends:
            cls = BACKENDS[sel]
            shared = [f"{name} serve inputs", f"{name} serve {sel}"]
            groups[shared[1]] = sum(prices.build_for(b, name) for b in BUILDS.get(cls.name, ())) + \
                serve_cost.ESTIMATE_CALLS * (t.b1_s + t.batch_s)
            shared += [f"{name} onnx export"] if cls.name in ONNX_BACKENDS else []
            runs = cls.available(ctx.device) is None
            for key in row_keys(ctx.serve_scenarios):
                floor, full = (serve_cost.key_s(key, t, f, n_eval) if runs else 0.0 for f in (0.0, 1.0))
                rows.append(RowCost(name, self.name, serve_cost.row_label(sel, key), floor, max(floor, full),
                                    serve_cost.row_tier(cls.name, key), tuple(shared) if runs else (),
                                    {"backend": cls.name, "precision": cls.precision, **key}, droppable=runs,
                                    args=("--backends", sel, "--scenarios", key["scenario"])))
        return rows, groups

    def kept_keys(self, sel: str, name: str, ctx: BenchContext) -> list[dict[str, Any]]:
        """The backend's rows the run's plan measures (every row without a budget)."""
        return [k for k in row_keys(ctx.serve_scenarios) if kept(ctx, name, self.name, serve_cost.row_label(sel, k))]

    def not_ok_rows(self, cls: type[Backend], session: ModelSession, ctx: BenchContext, reason,
                    status: str, keys: list[dict[str, Any]] | None = None) -> list[Record]:
        keys = row_keys(ctx.serve_scenarios) if keys is None else keys
        return [not_ok(ServeRecord, session.name, ctx.device.type, reason, status=status, backend=cls.name,
                       precision=cls.precision, **key) for key in keys]

    def failed(self, session: ModelSession, ctx: BenchContext, exc: BaseException) -> list[Record]:
        return [r for sel in ctx.backends for r in self.not_ok_rows(BACKENDS[sel], session, ctx, exc, "failed")]

    def run(self, session: ModelSession, ctx: BenchContext) -> list[Record]:
        plan = [(sel, self.kept_keys(sel, session.name, ctx)) for sel in ctx.backends]
        plan = [(sel, keys) for sel, keys in plan if keys]  # a backend the plan dropped whole is not even built
        missing = loadgen_missing()
        if missing:
            return [r for sel, keys in plan
                    for r in self.not_ok_rows(BACKENDS[sel], session, ctx, missing, "skipped", keys)]
        started = timing.clock()
        ref = accuracy.reference(session, ctx)
        inputs = torch.cat(list(ref.batches())).contiguous()
        bound_ms, source = model_bound(session, ctx, inputs)
        budget = ctx.budget_for(session.name, self.name)
        t, n_eval = serve_cost.priced_times(ctx.prices, session.name), int(inputs.shape[0])
        weights = [serve_cost.rows_s(keys, t, 1.0, n_eval) for _, keys in plan]
        rows: list[Record] = []
        for i, (sel, keys) in enumerate(plan):
            # This backend's share of what is left, in proportion to its priced rows (earlier overruns shrink it).
            share = None if budget is None else \
                max(0.0, budget - (timing.clock() - started)) * weights[i] / max(sum(weights[i:]), 1e-9)
            rows += self.backend_rows(BACKENDS[sel], session, ctx, ServeInputs(ref, inputs, bound_ms, source, share),
                                      keys)
        return rows

    def backend_rows(self, cls: type[Backend], session: ModelSession, ctx: BenchContext,
                     data: ServeInputs, keys: list[dict[str, Any]] | None = None) -> list[Record]:
        keys = row_keys(ctx.serve_scenarios) if keys is None else keys
        why = cls.available(ctx.device)
        if why:
            return self.not_ok_rows(cls, session, ctx, why, "skipped", keys)
        backend = cls(session, ctx)
        started = timing.clock()
        try:
            try:
                backend.prepare()
            except Exception as exc:
                return self.not_ok_rows(cls, session, ctx, exc, "failed", keys)
            if data.share_s is not None:  # the build came out of the backend's share
                data.share_s = max(0.0, data.share_s - (timing.clock() - started))
            return BackendServe(backend, session, ctx, data).rows(keys)
        finally:
            backend.close()
            free_memory(ctx.device)
