"""ONNX parity: the exported graph (bench.model.export.onnx_for, shared with the infer phase) run by ONNX Runtime's CPU
provider against eager fp32 PyTorch on the run's device.

Parity numbers are what they are: a graph that misses the tolerance is an ``ok`` record with ``parity_ok`` False, so
the table shows it. Only a run that could not produce the numbers at all is ``failed`` (an export that failed, or a
graph that rejects a batch size other than the exported one, which would break every deployment).
"""
from __future__ import annotations

import time
from typing import Any, ClassVar

import numpy as np
import torch

import zoo
from bench.backends.onnxruntime import CPU_PROVIDER, OrtCpuBackend, host_array, ort_session
from bench.context import BenchContext, ModelSession, example_batch
from bench.measure.numerics import strict_fp32
from bench.model.export import OnnxExportError, onnx_export_info
from bench.phases.base import Phase, Priced
from bench.records import PARITY_ABS_TOLERANCE, ParityRecord, Record, not_ok, reason_of
from bench.schedule.budget import TIER_CORE, RowCost
from zoo.data import DATASETS, make_loaders

PARITY_BATCH = 8
DYNAMIC_BATCHES = (1, 3)  # neither is the exported batch (2): proves the batch axis is really dynamic
AGREEMENT_BATCH = 256
QUICK_AGREEMENT_SAMPLES = 512
# Under a run budget, the agreement pass may take about this share of the parity phase's seconds for the model (the
# full test split of an AlexNet through eager and ONNX Runtime takes about a minute on a 2-core CPU).
AGREEMENT_SHARE = 0.6
REL_FLOOR = 1e-6  # |eager| below this counts as this in the relative diff (no division by ~0)


def parity_ok(max_abs_diff: float, tolerance: float = PARITY_ABS_TOLERANCE) -> bool:
    """Within tolerance means at most the tolerance: exactly at it passes, anything over it fails."""
    return bool(np.isfinite(max_abs_diff) and max_abs_diff <= tolerance)


def diffs(onnx_out: np.ndarray, eager: np.ndarray) -> tuple[float, float]:
    """(max abs diff, max rel diff) in float64; rel is elementwise |ort - eager| / max(|eager|, REL_FLOOR): large where a
    logit is near zero, so read it with the absolute one."""
    ref = eager.astype(np.float64)
    diff = np.abs(onnx_out.astype(np.float64) - ref)
    return float(diff.max()), float((diff / np.maximum(np.abs(ref), REL_FLOOR)).max())


class Pair:
    """Eager fp32 (TF32 off) on the run's device and ORT's CPU provider on the same input."""

    def __init__(self, session: ModelSession, ctx: BenchContext, path: str):
        self.model, self.device = session.model, ctx.device
        self.sess = ort_session(path, threads=ctx.threads, providers=[CPU_PROVIDER])
        self.input_name = self.sess.get_inputs()[0].name

    def __call__(self, x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        with torch.inference_mode(), strict_fp32():
            eager = self.model(x.to(self.device)).float().cpu().numpy()
        return eager, self.sess.run(None, {self.input_name: host_array(x)})[0]


def dynamic_batch_diff(pair: Pair, name: str, num_classes: int, seed: int) -> float:
    """Largest abs diff over batches 1 and 3; raises when the graph rejects them or answers in the wrong shape."""
    worst = 0.0
    for n in DYNAMIC_BATCHES:
        eager, out = pair(example_batch(name, n, torch.device("cpu"), seed=seed + n))
        if out.shape != (n, num_classes):
            raise ValueError(f"batch {n} gave output shape {tuple(out.shape)}, expected {(n, num_classes)}")
        worst = max(worst, float(np.abs(out.astype(np.float64) - eager).max()))
    return worst


def agreement(pair: Pair, session: ModelSession, ctx: BenchContext) -> tuple[float | None, int]:
    """Argmax agreement over the test split (``--quick``: its first QUICK_AGREEMENT_SAMPLES samples), or over the
    prefix that fits in AGREEMENT_SHARE of the phase's budget for the model, sized from the first batch (whole
    batches, at least one); the sample count is returned with it."""
    bundle = make_loaders(session.spec, loader="fast", device=ctx.device, root=ctx.data_root,
                          synthetic=not ctx.uses_real_data(session.name), eval_batch_size=AGREEMENT_BATCH,
                          seed=ctx.seed, train_samples=1,
                          test_samples=QUICK_AGREEMENT_SAMPLES if ctx.quick else None)
    budget_s = ctx.budget_for(session.name, "parity")
    agree = total = 0
    limit: int | None = None
    for x, _ in bundle.test.batches(0):
        t0 = time.perf_counter()
        eager, out = pair(x)
        agree += int((eager.argmax(1) == out.argmax(1)).sum())
        total += x.shape[0]
        if budget_s is not None and limit is None:
            per_sample_s = max(time.perf_counter() - t0, 1e-9) / x.shape[0]
            limit = max(AGREEMENT_BATCH, int(AGREEMENT_SHARE * budget_s / per_sample_s))
        if limit is not None and total >= limit:
            break
    return (agree / total if total else None), total


class ParityPhase(Phase):
    name: ClassVar[str] = "parity"
    record_type: ClassVar[type[Record]] = ParityRecord

    def planned_rows(self, name: str, ctx: BenchContext) -> int:
        return 1

    def row_costs(self, name: str, ctx: BenchContext, prices) -> Priced:
        """The export (shared with the ONNX backends), a session, and the agreement pass through eager and ONNX
        Runtime: one batch at the floor, the test split at full size."""
        mp = prices.models.get(name)
        sample_s = (mp.sample_s if mp else None) or 1e-3
        test_n = DATASETS[zoo.get_spec(name).dataset][2][1]
        once = prices.build_for("ort_session", name) + 2 * (PARITY_BATCH + sum(DYNAMIC_BATCHES)) * sample_s
        group = f"{name} onnx export"
        return [RowCost(name, self.name, "parity", once + 2 * AGREEMENT_BATCH * sample_s,
                        once + 2 * test_n * sample_s, TIER_CORE, (group,))], {group: prices.build_for("onnx_export", name)}

    def run(self, session: ModelSession, ctx: BenchContext) -> list[Record]:
        device = ctx.device.type
        missing = OrtCpuBackend.missing_package()
        if missing:  # neither the cpu nor the gpu extra: nothing to check the export against
            return [not_ok(ParityRecord, session.name, device, missing, status="skipped")]
        try:
            info = onnx_export_info(session, ctx)
        except OnnxExportError as exc:
            return [not_ok(ParityRecord, session.name, device, exc)]
        fields: dict[str, Any] = {**info, "tolerance": PARITY_ABS_TOLERANCE}
        try:
            pair = Pair(session, ctx, info["onnx_path"])
            eager, out = pair(example_batch(session.name, PARITY_BATCH, torch.device("cpu"), seed=ctx.seed))
            max_abs, max_rel = diffs(out, eager)
            fields.update(max_abs_diff=max_abs, max_rel_diff=max_rel, parity_ok=parity_ok(max_abs))
        except Exception as exc:
            return [not_ok(ParityRecord, session.name, device, exc, **fields)]
        try:
            fields["max_abs_diff_b1_b3"] = dynamic_batch_diff(pair, session.name, session.spec.num_classes, ctx.seed)
            fields["dynamic_batch_ok"] = True
        except Exception as exc:  # ORT raises its own exception types for shape mismatches
            fields["dynamic_batch_ok"] = False
            return [not_ok(ParityRecord, session.name, device, f"exported graph rejects batch 1/3: {reason_of(exc)}",
                           **fields)]
        try:
            fields["argmax_agreement"], fields["agreement_samples"] = agreement(pair, session, ctx)
            fields["data"] = ctx.data_label(session.name)
        except Exception as exc:
            return [not_ok(ParityRecord, session.name, device, f"argmax agreement: {reason_of(exc)}", **fields)]
        return [ParityRecord(model=session.name, device=device, **fields)]
