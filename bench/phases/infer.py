"""Inference latency per backend and batch size, with the backend's accuracy on the same row.

Every backend goes through the same steps (bench.backends.base): ``available`` (else a skipped row per batch size,
with the reason), ``prepare`` once (an exception: failed rows, and the other backends still run), then per batch size
``bind`` and the one clock of bench.measure.timing with the backend's own ``sync`` inside every timed call. One-off costs
(prepare + bind: session creation, compilation, graph capture) are ``compile_s``, never in a sample. Running out of
memory at a batch size is a skipped row at that batch size, never a quietly smaller batch. Bind and the timed calls
run under ``torch.inference_mode`` (entered once: it is thread-local and the timing loop runs in this thread).
"""
from __future__ import annotations

import dataclasses
import gc
from typing import Any, ClassVar

import numpy as np
import torch

import zoo
from bench.backends import BACKENDS
from bench.backends.base import Backend
from bench.context import BenchContext, ModelSession, example_batch
from bench.measure import timing
from bench.measure.machine import pct_of_peak
from bench.measure.stats import process_ratio_ci, split_processes
from bench.model.accuracy import row_fields
from bench.model.flops import count_flops
from bench.phases.base import Phase, Priced, kept, profile_cost_s, profile_row
from bench.phases.infer_race import Lane, Opened, open_lane, race_fields, raced_sizes, row_label, run_race
from bench.records import PERCENTILE_MIN_CALLS, InferRecord, Record, not_ok, reason_of
from bench.schedule.budget import TIER_BACKEND, TIER_CORE, TIER_DUP_BATCH, RowCost
from zoo.data import DATASETS

FLOPS_CACHE_KEY = "flops_per_sample"
MIN_BUDGET_ROW_S = 0.05  # a row's cap when its share of the budget is spent: still a few timed calls, never none
MIN_CALLS = PERCENTILE_MIN_CALLS[50]  # the sample rule: a budget never caps a row below this many calls (a p50)
# One-off builds per backend, by name (bench.schedule.pricing.BUILD_S keys); ONNX backends also need the model's export.
BUILDS = {"compile": ("compile_infer",), "onnxruntime": ("ort_session",), "onnxruntime-cuda": ("ort_session",),
          "onnxruntime-int8": ("int8_quantize",), "onnxruntime-int8-dynamic": ("int8_dynamic",),
          "openvino": ("openvino",), "aot_inductor": ("aot_inductor",), "tensorrt": ("tensorrt",),
          "cuda_graph": ("cuda_graph",)}
ONNX_BACKENDS = ("onnxruntime", "onnxruntime-cuda", "onnxruntime-int8", "onnxruntime-int8-dynamic", "tensorrt")
INFER_FIELDS = frozenset(f.name for f in dataclasses.fields(InferRecord))


def is_out_of_memory(exc: BaseException) -> bool:
    if isinstance(exc, (torch.OutOfMemoryError, MemoryError)):
        return True
    text = str(exc).lower()
    return "out of memory" in text or "failed to allocate memory" in text  # the latter: ORT's BFC arena


def free_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def flops_per_sample(session: ModelSession, ctx: BenchContext) -> float | None:
    """Forward FLOPs of one sample (bench.model.flops), counted once per model; None when it cannot count."""
    if session.flops_per_sample:  # counted by the driver for the model record
        return float(session.flops_per_sample)
    if FLOPS_CACHE_KEY not in session.cache:
        try:
            session.cache[FLOPS_CACHE_KEY] = count_flops(session.model, example_batch(session.name, 2, ctx.device),
                                                         train=False) or None
        except Exception:  # FLOP counting is a nicety; latency rows do not depend on it
            session.cache[FLOPS_CACHE_KEY] = None
    return session.cache[FLOPS_CACHE_KEY]


def probe_call_s(fn, sync) -> float:
    """Seconds of one call after one more warm call: sizes the sampling plan for slow models."""
    fn()
    sync()
    t0 = timing.clock()
    fn()
    sync()
    return timing.clock() - t0


def row_plan(batch_size: int, quick: bool, est_call_s: float, budget_s: float | None) -> dict[str, Any]:
    """bench.measure.timing's sampling plan, its cap lowered to a row's share of the run budget when there is one (a spent
    budget, 0 s, caps the row at MIN_BUDGET_ROW_S, never lifts the cap). The cap only shortens the row: n_calls then
    says what the row rests on, and percentiles without enough calls are None."""
    plan = timing.sampling_plan(batch_size, quick, est_call_s)
    if budget_s is not None:
        # The run's plan priced MIN_CALLS calls for this row: the cap never cuts it below them.
        budget_s = max(budget_s, MIN_BUDGET_ROW_S, 1.2 * MIN_CALLS * est_call_s if not quick else 0.0)
        plan["max_seconds"] = min(plan["max_seconds"] or budget_s, budget_s)
        plan["min_seconds"] = min(plan["min_seconds"], plan["max_seconds"])
        # The warm-up stays ~10% of the cap the row really has (never more than its plan's own).
        plan["warmup"] = min(plan["warmup"], timing.warmup_calls(plan["max_seconds"], est_call_s))
    return plan


def measure(backend: Backend, x: torch.Tensor, quick: bool,
            budget_s: float | None = None) -> tuple[dict[str, Any], float]:
    """(latency_stats fields + memory fields, bind seconds) of one backend at one input."""
    with torch.inference_mode(), backend.memory_tracker() as memory:
        fn, bind_s = backend.bind_timed(x)
        plan = row_plan(x.shape[0], quick, probe_call_s(fn, backend.sync), budget_s)
        if memory is not None:  # after two warm calls: cuDNN's one-off search workspace is not this row's peak
            memory.reset_peak()
        samples = timing.sample_latencies(fn, backend.sync, **plan)
    fields = timing.latency_stats(samples, x.shape[0])
    fields.update(device_fields(backend, fn, x.shape[0], quick))
    if memory is not None and memory.peak_mb is not None:
        fields["peak_mem_mb"] = round(memory.peak_mb, 1)
        fields["mem_delta_mb"] = round(memory.delta_mb, 1) if memory.delta_mb is not None else None
        fields["mem_device"] = backend.memory_device().type
    return fields, bind_s


def device_fields(backend: Backend, fn, batch_size: int, quick: bool) -> dict[str, Any]:
    """CUDA rows: device time per call from CUDA events on the backend's stream, and the back-to-back throughput
    (bench.measure.timing.DEVICE_CLOCK); nothing for a backend without such a stream."""
    stream = backend.event_stream()
    if stream is None:
        return {}
    calls = timing.QUICK_DEVICE_CALLS if quick else timing.DEVICE_CALLS
    with torch.inference_mode():
        device_ms = np.asarray(timing.device_times_ms(fn, stream, calls))
        rate = timing.back_to_back_rate(fn, backend.sync, calls, batch_size)
    p25, p50, p75 = np.percentile(device_ms, [25, 50, 75])
    return {"device_p50_ms": float(p50), "device_iqr_ms": float(p75 - p25), "device_n_calls": int(device_ms.size),
            "back_to_back_samples_per_s": rate}


def backend_fields(backend: Backend) -> dict[str, Any]:
    """The backend's extra record fields; a name InferRecord does not have is a bug in the backend."""
    unknown = sorted(set(backend.fields) - INFER_FIELDS)
    if unknown:
        raise ValueError(f"backend {backend.name} sets unknown InferRecord field(s): {', '.join(unknown)}")
    return dict(backend.fields)


class InferPhase(Phase):
    name: ClassVar[str] = "infer"
    record_type: ClassVar[type[Record]] = InferRecord

    def planned_rows(self, name: str, ctx: BenchContext) -> int:
        return len(ctx.backends) * len(ctx.infer_batch_sizes(name))

    def row_costs(self, name: str, ctx: BenchContext, prices) -> Priced:
        """Per backend and batch size: bind, probe, warm-up and MIN_CALLS calls at eager's priced call (floor) or
        the sampling plan's calls (full), plus a share of the backend's accuracy pass (one batch / the test split);
        the backend's build and the ONNX export are shared, and a backend that builds per shape (``builds_per_shape``)
        pays its build again in every row. Tiers: a non-eager backend's second batch size, then
        its other rows; eager's rows are core rows."""
        mp, sizes = prices.models.get(name), ctx.infer_batch_sizes(name)
        test_n = DATASETS[zoo.get_spec(name).dataset][2][1]
        sample_s = (mp.sample_s if mp else None) or 1e-3
        groups = {f"{name} onnx export": prices.build_for("onnx_export", name)}
        rows = []
        for sel in ctx.backends:
            cls = BACKENDS[sel]
            shared = [f"{name} infer {sel}"]
            build_s = sum(prices.build_for(b, name) for b in BUILDS.get(cls.name, ()))
            groups[shared[0]] = build_s + 256 * sample_s  # per-shape builds: the accuracy pass's shape
            shared += [f"{name} onnx export"] if cls.name in ONNX_BACKENDS else []
            runs = cls.available(ctx.device) is None
            bind_s = build_s if cls.builds_per_shape else 0.0  # each timed batch size builds again in bind
            for bs in sizes:
                call = (mp.forward_s.get(bs) if mp else None) or sample_s * bs
                plan = timing.sampling_plan(bs, ctx.quick, call)
                floor = bind_s + call * (3 + plan["warmup"] + (plan["min_calls"] if ctx.quick else MIN_CALLS))
                full = bind_s + call * (3 + plan["warmup"]) + max(plan["min_seconds"], min(plan["max_seconds"],
                                                                                           plan["min_calls"] * call))
                full += test_n * sample_s / len(sizes)
                extra = profile_cost_s(ctx, name, cls.name, cls.precision, bs, call, prices.build_for)  # --profile
                floor, full = floor + extra, full + extra
                tier = TIER_CORE if cls.name == "eager" else TIER_DUP_BATCH if bs == max(sizes) and len(sizes) > 1 \
                    else TIER_BACKEND
                rows.append(RowCost(name, self.name, f"{sel} b={bs}", floor if runs else 0.0, full if runs else 0.0,
                                    tier, tuple(shared) if runs else (), {"backend": cls.name,
                                    "precision": cls.precision, "batch_size": bs}, droppable=runs,
                                    args=("--backends", sel, "--batch-sizes", str(bs))))
        return rows, groups

    def run(self, session: ModelSession, ctx: BenchContext) -> list[Record]:
        """Every backend prepared once; at batch 1 and the recipe's batch the ones within their accuracy budget race
        (bench.phases.infer_race), at any other batch size each is timed alone as before."""
        flops = flops_per_sample(session, ctx)
        sizes = {sel: [bs for bs in ctx.infer_batch_sizes(session.name)
                       if kept(ctx, session.name, self.name, f"{sel} b={bs}")] for sel in ctx.backends}
        rows: list[InferRecord] = []
        opened: list[Opened] = []
        try:
            for sel in ctx.backends:
                if sizes[sel]:  # a backend the plan dropped at every batch size is not even built
                    got = self.open_backend(BACKENDS[sel], sel, session, ctx, sizes[sel])
                    rows += got if isinstance(got, list) else []
                    opened += [got] if isinstance(got, Opened) else []
            for bs in ctx.infer_batch_sizes(session.name):
                here = [o for o in opened if bs in sizes[o.key]]
                if bs in raced_sizes(session.name, ctx) and sum(o.eligible for o in here) >= 2:
                    rows += self.race_at(here, session, ctx, bs, flops)
                else:
                    rows += [o.finish(self.one_row(o.backend, session, ctx, bs, o.prepare_s, flops)) for o in here]
        finally:
            for o in opened:
                o.backend.close()
            free_memory(ctx.device)
        fill_speedups(rows)
        return rows

    def open_backend(self, cls: type[Backend], sel: str, session: ModelSession, ctx: BenchContext,
                     sizes: list[int]) -> Opened | list[InferRecord]:
        """The backend prepared, with its accuracy columns measured first (they decide whether it may win a race);
        or its rows, skipped (not available here, out of memory) or failed (prepare raised)."""
        key = {"backend": cls.name, "precision": cls.precision}

        def not_ok_rows(reason: BaseException | str, status: str) -> list[InferRecord]:
            return [not_ok(InferRecord, session.name, ctx.device.type, reason, status=status, batch_size=bs, **key)
                    for bs in sizes]

        why = cls.available(ctx.device)
        if why:
            return not_ok_rows(why, "skipped")
        backend = cls(session, ctx)
        try:
            prepare_s = backend.prepare()
        except Exception as exc:
            backend.close()
            free_memory(ctx.device)
            if is_out_of_memory(exc):
                return not_ok_rows(f"out of memory in prepare ({reason_of(exc)})", "skipped")
            return not_ok_rows(exc, "failed")
        return Opened(sel, backend, prepare_s, accuracy_fields(backend, session, ctx))

    def race_at(self, here: list[Opened], session: ModelSession, ctx: BenchContext, bs: int,
                flops: float | None) -> list[InferRecord]:
        """The race at one batch size: lanes for the eligible backends (a bind that fails is that row's failure),
        interleaved rounds within the rows' shares of the budget, a row per backend with its place in the race.
        A backend outside its accuracy budget is timed alone afterwards: it cannot win."""
        x = example_batch(session.name, bs, ctx.device, seed=ctx.seed)
        rows: dict[str, InferRecord] = {}
        lanes: list[Lane] = []
        for o in here:
            if not o.eligible:
                continue
            try:
                lanes.append(open_lane(o.key, o.backend, x))
            except Exception as exc:
                rows[o.key] = row_error(session, ctx, o.backend, bs, exc)
        by_key = {o.key: o for o in here}
        if lanes:
            share = self.row_budget_s(session.name, ctx)
            budget_s = share * len(lanes) if share is not None else \
                sum(timing.sampling_plan(bs, ctx.quick)["max_seconds"] or 1.0 for _ in lanes)
            # Under a budget the sample rule (MIN_CALLS); without one, the calls a row timed alone would aim at.
            min_samples = timing.QUICK["min_calls"] if ctx.quick else MIN_CALLS if share is not None else \
                timing.sampling_plan(bs, False)["min_calls"]
            try:
                result = run_race(lanes, budget_s, ctx.precision_pct, min_samples, ctx.seed)
            except Exception:  # a backend that breaks mid-race: each row timed alone, its own error its own row
                if ctx.debug:
                    raise
                lanes, result = [], None
                rows.update({o.key: o.finish(self.one_row(o.backend, session, ctx, bs, o.prepare_s, flops))
                             for o in here if o.eligible and o.key not in rows})
            for lane in lanes:
                fields = {**timing.latency_stats(result.samples[lane.key], bs), **lane.memory,
                          **device_fields(lane.backend, lane.fn, bs, ctx.quick),
                          **race_fields(result, lane.key, lambda k: row_label(by_key[k].backend), ctx.precision_pct)}
                rows[lane.key] = by_key[lane.key].finish(self.make_record(lane.backend, session, ctx, bs,
                                                                         by_key[lane.key].prepare_s + lane.bind_s,
                                                                         fields, flops))
        for o in here:
            if not o.eligible:
                row = o.finish(self.one_row(o.backend, session, ctx, bs, o.prepare_s, flops))
                row.race = "not eligible" if row.ok else None
                rows[o.key] = row
        free_memory(ctx.device)
        return [rows[o.key] for o in here]

    def failed(self, session: ModelSession, ctx: BenchContext, exc: BaseException) -> list[Record]:
        return [not_ok(InferRecord, session.name, ctx.device.type, exc, backend=BACKENDS[sel].name,
                       precision=BACKENDS[sel].precision, batch_size=bs)
                for sel in ctx.backends for bs in ctx.infer_batch_sizes(session.name)]

    def row_budget_s(self, name: str, ctx: BenchContext) -> float | None:
        """One row's share of this phase's budget for the model (None: no budget), over the rows the plan kept."""
        seconds = ctx.budget_for(name, self.name)
        kept_rows = sum(kept(ctx, name, self.name, f"{sel} b={bs}") for sel in ctx.backends
                        for bs in ctx.infer_batch_sizes(name))
        return None if seconds is None else seconds / max(kept_rows, 1)

    def backend_rows(self, cls: type[Backend], session: ModelSession, ctx: BenchContext,
                     flops: float | None, sizes: list[int] | None = None) -> list[InferRecord]:
        """Every batch-size row of one backend, timed alone (skipped, failed or measured)."""
        sizes = ctx.infer_batch_sizes(session.name) if sizes is None else sizes
        got = self.open_backend(cls, cls.name, session, ctx, sizes)
        if isinstance(got, list):
            return got
        try:
            return [got.finish(self.one_row(got.backend, session, ctx, bs, got.prepare_s, flops)) for bs in sizes]
        finally:
            got.backend.close()
            free_memory(ctx.device)

    def one_row(self, backend: Backend, session: ModelSession, ctx: BenchContext, bs: int, prepare_s: float,
                flops: float | None) -> InferRecord:
        try:
            x = example_batch(session.name, bs, ctx.device, seed=ctx.seed)
            measured, bind_s = measure(backend, x, ctx.quick, self.row_budget_s(session.name, ctx))
        except Exception as exc:
            return row_error(session, ctx, backend, bs, exc)
        finally:
            free_memory(ctx.device)
        return self.make_record(backend, session, ctx, bs, prepare_s + bind_s, measured, flops)

    def make_record(self, backend: Backend, session: ModelSession, ctx: BenchContext, bs: int, compile_s: float,
                    measured: dict[str, Any], flops: float | None) -> InferRecord:
        """An ok row from its measured fields (latency, memory, device time, race) and the backend's own."""
        key = {"backend": backend.name, "precision": backend.precision, "batch_size": bs}
        rate = measured["samples_per_s"]
        flops_per_s = flops * rate if flops and rate else None
        fields: dict[str, Any] = {"threads": torch.get_num_threads(), **backend_fields(backend), **measured}
        rec = InferRecord(model=session.name, device=ctx.device.type, clock=timing.CLOCK,
                          compile_s=round(compile_s, 4),
                          gflops_per_s=flops_per_s / 1e9 if flops_per_s else None,
                          pct_of_peak=pct_of_peak(flops_per_s, row_peaks(backend, ctx), backend.precision),
                          **key, **fields)
        if ctx.profile is not None:  # --profile: extra calls now that the row's (or the race's) timed ones are done
            profile_row(backend, example_batch(session.name, bs, ctx.device, seed=ctx.seed), rec, ctx)
        return rec


def row_error(session: ModelSession, ctx: BenchContext, backend: Backend, bs: int, exc: BaseException) -> InferRecord:
    """A row that raised: skipped when it ran out of memory at that batch (never a quietly smaller batch), else failed."""
    key = {"backend": backend.name, "precision": backend.precision, "batch_size": bs}
    if is_out_of_memory(exc):
        return not_ok(InferRecord, session.name, ctx.device.type, f"out of memory at batch {bs}", status="skipped",
                      **key)
    return not_ok(InferRecord, session.name, ctx.device.type, exc, **key)


def row_peaks(backend: Backend, ctx: BenchContext) -> dict[str, Any]:
    """The peaks a row's % of peak divides by: the run's device's, when the backend computes there; none otherwise
    (the ORT CPU provider on a CUDA run is not a fraction of the GPU)."""
    return ctx.peaks if backend.compute_device().type == ctx.device.type else {}


def accuracy_fields(backend: Backend, session: ModelSession, ctx: BenchContext) -> dict[str, Any]:
    """The backend's accuracy columns (bench.model.accuracy), the same for each of its batch-size rows. A backend whose
    predict breaks keeps its latency rows, with the accuracy columns empty and the reason in ``note``."""
    try:
        return row_fields(backend.predict, session, ctx, backend.precision)
    except Exception as exc:
        if is_out_of_memory(exc):
            free_memory(ctx.device)
        note = backend.fields.get("note")
        return {"note": f"{note + '; ' if note else ''}accuracy not measured: {reason_of(exc)}"}


def fill_speedups(rows: list[InferRecord]) -> None:
    """speedup_vs_eager = eager fp32 p50 / this row's p50 at the same batch size (None where either is missing), with
    its 95% bootstrap interval over both rows' calls (bench.measure.stats.process_ratio_ci: a row of several
    processes is resampled by process first; eager's own row: none)."""
    eager = {r.batch_size: r for r in rows
             if r.ok and r.backend == "eager" and r.precision == "fp32" and r.p50_ms}
    for r in rows:
        ref = eager.get(r.batch_size)
        if r.ok and ref and r.p50_ms:
            r.speedup_vs_eager = ref.p50_ms / r.p50_ms
            if r is not ref and r.latencies_ms and ref.latencies_ms:  # --repeat: processes first, then calls
                _, r.speedup_vs_eager_lo, r.speedup_vs_eager_hi = process_ratio_ci(
                    split_processes(r.latencies_ms, r.samples_per_repeat or None),
                    split_processes(ref.latencies_ms, ref.samples_per_repeat or None))
