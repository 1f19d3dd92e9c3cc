"""The accuracy columns of an inference row: a backend's predictions over the model's test split (or a stated prefix
of it) scored against the labels and against eager fp32 on the very same samples.

The eager fp32 reference (labels, logits, accuracy) is computed once per model and kept in ``session.cache``; every
backend row is then one pass of its ``predict`` over the same batches. Accuracy and agreement are fractions (0..1),
``accuracy_delta_pts`` is in percentage points, ``max_abs_diff`` is the largest logit difference to eager fp32.

The change is paired: backend and eager classify the very same images, so only the images they classify
differently move it (``accuracy_gained``: the backend right where eager is wrong; ``accuracy_lost``: the reverse).
Its 95% interval is Bonett and Price's adjusted Wald interval for a difference of paired proportions (J. Educ. Behav.
Stat. 37(4), 2012; recommended with Newcombe's hybrid score by Fagerland, Lydersen and Laake, BMC Med. Res. Methodol.
2013): it reads the discordant counts only, keeps a width when none disagree (1,000 agreeing images still leave
about +-0.3 points), and covers close to 95% at the sizes of a test split. It is the change's uncertainty as a
property of the backend on images like these, not of this one test set.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

import torch

from bench.context import BenchContext, ModelSession
from bench.records import ACCURACY_BUDGET_PTS
from zoo.data import FastLoader, make_loaders

EVAL_BATCH_SIZE = 256
QUICK_EVAL_SAMPLES = 1024  # --quick: the first 1,024 test samples (a smoke run, stated in agreement_samples)
# With a run budget, the accuracy passes of a model (eager's reference + one per backend, at eager's speed) may take
# about ACCURACY_SHARE of the model's inference seconds (ctx.budget_for), or BUDGET_SHARE_PER_PASS of the run's budget
# per pass when no spread is known; the prefix is cut to fit (whole batches, at least one).
ACCURACY_SHARE = 0.3
BUDGET_SHARE_PER_PASS = 0.01
CACHE_KEY = "accuracy_reference"
CONFIDENCE = 0.95

Predict = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class Reference:
    """Eager fp32 on the evaluated prefix of the test split: what every backend row is compared with."""

    loader: FastLoader  # the test split, unshuffled: batches(0) always yields the same samples in the same order
    samples: int  # how many leading samples are evaluated
    labels: torch.Tensor  # CPU int64, [samples]
    logits: torch.Tensor  # CPU float32, [samples, classes]
    accuracy: float
    seconds: float  # wall time of the eager pass (what sizes the prefix under a budget)

    def batches(self) -> Iterator[torch.Tensor]:
        """The evaluated inputs, on the loader's device, in order."""
        seen = 0
        for x, _ in self.loader.batches(0):
            if seen >= self.samples:
                return
            x = x[: self.samples - seen]
            seen += len(x)
            yield x


def eval_loader(session: ModelSession, ctx: BenchContext) -> FastLoader:
    """The model's test split through the fast loader (the recipe's transforms, resident on ctx.device)."""
    bundle = make_loaders(session.spec, loader="fast", device=ctx.device, root=ctx.data_root,
                          synthetic=not ctx.uses_real_data(session.name), eval_batch_size=EVAL_BATCH_SIZE,
                          seed=ctx.seed, train_samples=1)  # the train split is not read here: keep it one sample
    return bundle.test


def pass_budget_s(ctx: BenchContext, name: str | None = None) -> float | None:
    """Seconds one accuracy pass may take (None: no budget): its share of the model's inference budget, else of the
    run's budget."""
    model_s = None if name is None else ctx.budget_for(name, "infer")
    if model_s is not None:
        return model_s * ACCURACY_SHARE / (1 + len(ctx.backends))
    return None if ctx.budget_s is None else ctx.budget_s * BUDGET_SHARE_PER_PASS


def sample_limit(ctx: BenchContext, split_size: int, first_batch_s: float, first_batch_n: int,
                 name: str | None = None) -> int:
    """How many leading test samples are evaluated: all of them, or a stated prefix under --quick or a tight budget."""
    limit = split_size
    if ctx.quick:
        limit = min(limit, QUICK_EVAL_SAMPLES)
    budget_s = pass_budget_s(ctx, name)
    if budget_s is not None and first_batch_n > 0:
        per_sample_s = max(first_batch_s, 1e-9) / first_batch_n
        fits = int(budget_s / per_sample_s)
        limit = min(limit, max(EVAL_BATCH_SIZE, fits // EVAL_BATCH_SIZE * EVAL_BATCH_SIZE))
    return min(limit, split_size)


def reference(session: ModelSession, ctx: BenchContext) -> Reference:
    """Eager fp32 over the evaluated prefix of the test split, computed once per model (cached in session.cache)."""
    ref = session.cache.get(CACHE_KEY)
    if ref is not None:
        return ref
    loader = eval_loader(session, ctx)
    labels, logits = [], []
    limit, seen = loader.n, 0
    start = time.perf_counter()
    with torch.inference_mode():
        for x, y in loader.batches(0):
            if seen >= limit:
                break
            x, y = x[: limit - seen], y[: limit - seen]
            logits.append(session.model(x).float().cpu())
            labels.append(y.cpu())
            seen += len(y)
            if len(logits) == 1:  # the first batch's time sizes the prefix a budget allows
                ctx.sync()
                limit = sample_limit(ctx, loader.n, time.perf_counter() - start, seen, session.name)
    seconds = time.perf_counter() - start
    labels_t, logits_t = torch.cat(labels), torch.cat(logits)
    accuracy = (logits_t.argmax(1) == labels_t).double().mean().item()
    ref = Reference(loader, seen, labels_t, logits_t, accuracy, seconds)
    session.cache[CACHE_KEY] = ref
    return ref


@dataclass(frozen=True)
class PairedChange:
    """A backend's accuracy change against eager fp32 on the same images, in percentage points, with its interval."""

    samples: int
    gained: int  # images the backend classifies right and eager fp32 wrong
    lost: int  # images eager fp32 classifies right and the backend wrong
    delta_pts: float  # (gained - lost) / samples: exactly the difference of the two accuracies
    lo_pts: float
    hi_pts: float


def paired_change(backend_right: torch.Tensor, eager_right: torch.Tensor,
                  confidence: float = CONFIDENCE) -> PairedChange:
    """The paired change from two boolean vectors over the same images (Bonett-Price adjusted Wald interval, in the
    module's docstring): each discordant proportion is Laplace-adjusted, (count + 1) / (n + 2)."""
    n = len(eager_right)
    if n == 0 or len(backend_right) != n:
        raise ValueError(f"paired_change needs two vectors of the same non-zero length, not {len(backend_right)} "
                         f"and {n}")
    gained = int((backend_right & ~eager_right).sum())
    lost = int((eager_right & ~backend_right).sum())
    p_gain, p_lost = (gained + 1) / (n + 2), (lost + 1) / (n + 2)
    centre = p_gain - p_lost
    half = NormalDist().inv_cdf(0.5 + confidence / 2) * math.sqrt((p_gain + p_lost - centre ** 2) / (n + 2))
    return PairedChange(samples=n, gained=gained, lost=lost, delta_pts=100.0 * (gained - lost) / n,
                        lo_pts=100.0 * max(-1.0, centre - half), hi_pts=100.0 * min(1.0, centre + half))


def budget_pts(precision: str) -> float:
    """The accuracy change (percentage points) a row of this precision may show against eager fp32."""
    return ACCURACY_BUDGET_PTS[precision]


def row_fields(predict: Predict, session: ModelSession, ctx: BenchContext, precision: str) -> dict[str, Any]:
    """InferRecord's accuracy fields for one backend: ``predict`` (x on ctx.device -> CPU float logits) over the
    reference's samples, against the labels and against eager fp32's logits on the same samples.

    The accuracy of a backend does not depend on the timed batch size: call this once per (backend, precision) and
    copy the fields onto each of its batch-size rows.
    """
    ref = reference(session, ctx)
    outs = []
    with torch.inference_mode():
        for x in ref.batches():
            outs.append(predict(x).detach().float().cpu())
    logits = torch.cat(outs)
    if logits.shape != ref.logits.shape:
        raise ValueError(f"predict returned logits of shape {tuple(logits.shape)} for "
                         f"{tuple(ref.logits.shape)} expected")
    right = logits.argmax(1) == ref.labels
    change = paired_change(right, ref.logits.argmax(1) == ref.labels)
    delta_pts = change.delta_pts
    budget = budget_pts(precision)
    diff = (logits - ref.logits).abs().max().item()
    return {
        "data": ctx.data_label(session.name),
        "weights": session.weights,
        "accuracy": right.double().mean().item(),
        "accuracy_delta_pts": delta_pts,
        "accuracy_delta_lo_pts": change.lo_pts,
        "accuracy_delta_hi_pts": change.hi_pts,
        "accuracy_gained": change.gained,
        "accuracy_lost": change.lost,
        "argmax_agreement": (logits.argmax(1) == ref.logits.argmax(1)).double().mean().item(),
        "agreement_samples": ref.samples,
        "max_abs_diff": diff if math.isfinite(diff) else math.inf,
        "accuracy_budget_pts": budget,
        # Non-finite logits never pass, whatever their argmax happens to be.
        "accuracy_ok": bool(abs(delta_pts) <= budget + 1e-9 and math.isfinite(diff)),
    }
