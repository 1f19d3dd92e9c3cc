"""bench.model.accuracy: the accuracy columns of an inference row, checked against models whose predictions are known."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import bench.model.accuracy as accuracy
import zoo
from bench.context import BenchContext, ModelSession
from bench.model.accuracy import EVAL_BATCH_SIZE, QUICK_EVAL_SAMPLES, reference, row_fields
from bench.records import ACCURACY_BUDGET_PTS, InferRecord
from zoo.data import make_loaders, open_split, split_tensors


class FixedClass(nn.Module):
    """Logits 0 everywhere except ``1.0`` at ``cls``, whatever the input: its argmax is always ``cls``."""

    def __init__(self, cls: int, num_classes: int = 10):
        super().__init__()
        self.logits = nn.Parameter(torch.zeros(num_classes), requires_grad=False)
        self.logits.data[cls] = 1.0

    def forward(self, x):
        return self.logits.expand(x.shape[0], -1) + 0 * x.flatten(1)[:, :1]


def split_labels(name: str, n: int) -> torch.Tensor:
    """The first ``n`` labels of the model's synthetic test split, read straight from the dataset."""
    return split_tensors(open_split(zoo.get_spec(name).dataset, False, synthetic=True))[1][:n]



def quick_ctx(tmp_path, **kw) -> BenchContext:
    return BenchContext(device=torch.device("cpu"), quick=True, synthetic=True, out_dir=str(tmp_path), **kw)


def test_fields_for_known_predictions(tmp_path):
    ctx = quick_ctx(tmp_path)
    session = ModelSession("mlp", FixedClass(3).eval())
    labels = split_labels("mlp", QUICK_EVAL_SAMPLES)
    eager_acc = (labels == 3).double().mean().item()
    other_acc = (labels == 5).double().mean().item()
    assert 0 < eager_acc < 1 and other_acc != eager_acc  # the check below can tell them apart

    same = row_fields(lambda x: session.model(x).cpu(), session, ctx, "fp32")
    assert same == {"data": "synthetic", "weights": "random", "accuracy": pytest.approx(eager_acc),
                    "accuracy_delta_pts": 0.0, "accuracy_delta_lo_pts": pytest.approx(-0.270, abs=1e-3),
                    "accuracy_delta_hi_pts": pytest.approx(0.270, abs=1e-3), "accuracy_gained": 0,
                    "accuracy_lost": 0, "argmax_agreement": 1.0, "agreement_samples": QUICK_EVAL_SAMPLES,
                    "max_abs_diff": 0.0, "accuracy_budget_pts": ACCURACY_BUDGET_PTS["fp32"], "accuracy_ok": True}

    shifted = row_fields(lambda x: session.model(x).cpu() + 0.25, session, ctx, "bf16")
    assert shifted["max_abs_diff"] == pytest.approx(0.25)
    assert shifted["argmax_agreement"] == 1.0 and shifted["accuracy_delta_pts"] == 0.0
    assert shifted["accuracy_budget_pts"] == ACCURACY_BUDGET_PTS["bf16"]

    other = FixedClass(5)
    moved = row_fields(lambda x: other(x).cpu(), session, ctx, "int8")
    assert moved["accuracy"] == pytest.approx(other_acc)
    assert moved["accuracy_delta_pts"] == pytest.approx((other_acc - eager_acc) * 100)
    # every image eager gets right (a 3) the other loses, every 5 it gains: the discordant images decide it
    assert (moved["accuracy_lost"], moved["accuracy_gained"]) == (int((labels == 3).sum()), int((labels == 5).sum()))
    assert moved["accuracy_delta_lo_pts"] < moved["accuracy_delta_pts"] < moved["accuracy_delta_hi_pts"]
    assert moved["argmax_agreement"] == 0.0
    assert moved["max_abs_diff"] == pytest.approx(1.0)
    assert moved["accuracy_budget_pts"] == ACCURACY_BUDGET_PTS["int8"]
    assert moved["accuracy_ok"] is (abs(moved["accuracy_delta_pts"]) <= ACCURACY_BUDGET_PTS["int8"])
    InferRecord(model="mlp", device="cpu", backend="x", **moved)  # every key is an InferRecord field


@pytest.mark.slow
def test_accuracy_matches_a_plain_loop_over_the_whole_split(tmp_path):
    """Not quick: the whole test split, and the same accuracy an independent loop over the tutorial loader gets."""
    ctx = BenchContext(device=torch.device("cpu"), synthetic=True, out_dir=str(tmp_path))
    torch.manual_seed(0)
    model = zoo.get_model("mlp").eval()
    session = ModelSession("mlp", model)
    fields = row_fields(lambda x: model(x).cpu(), session, ctx, "fp32")
    bundle = make_loaders(zoo.get_spec("mlp"), loader="tutorial", synthetic=True, eval_batch_size=500,
                          train_samples=1)
    correct = total = 0
    with torch.no_grad():
        for x, y in bundle.test.batches(0):
            correct += (model(x).argmax(1) == y).sum().item()
            total += len(y)
    assert fields["agreement_samples"] == total == bundle.test_size
    assert fields["accuracy"] == pytest.approx(correct / total, abs=1.5 / total)  # at most one near-tie may flip


def test_reference_is_computed_once_per_model(tmp_path, monkeypatch):
    ctx = quick_ctx(tmp_path)
    session = ModelSession("mlp", FixedClass(1).eval())
    built = []
    real = accuracy.eval_loader
    monkeypatch.setattr(accuracy, "eval_loader", lambda s, c: built.append(1) or real(s, c))
    for _ in range(3):
        row_fields(lambda x: session.model(x).cpu(), session, ctx, "fp32")
    assert len(built) == 1
    assert isinstance(session.cache[accuracy.CACHE_KEY], accuracy.Reference)


def test_eager_reference_runs_the_eager_model_once_over_the_prefix(tmp_path):
    ctx = quick_ctx(tmp_path)
    seen = []
    model = FixedClass(2).eval()
    model.register_forward_hook(lambda m, args, out: seen.append(args[0].shape[0]))
    ref = reference(ModelSession("mlp", model), ctx)
    assert sum(seen) == ref.samples == QUICK_EVAL_SAMPLES
    assert max(seen) <= EVAL_BATCH_SIZE
    assert torch.equal(ref.labels, split_labels("mlp", QUICK_EVAL_SAMPLES))


def test_tight_budget_evaluates_a_stated_prefix(tmp_path):
    ctx = BenchContext(device=torch.device("cpu"), synthetic=True, out_dir=str(tmp_path), budget_s=1e-6)
    session = ModelSession("mlp", FixedClass(0).eval())
    fields = row_fields(lambda x: session.model(x).cpu(), session, ctx, "fp32")
    assert fields["agreement_samples"] == EVAL_BATCH_SIZE  # at least one whole batch, however tight


def test_sample_limit():
    ctx = BenchContext(device=torch.device("cpu"))
    assert accuracy.sample_limit(ctx, 10_000, 0.1, 256) == 10_000
    ctx.quick = True
    assert accuracy.sample_limit(ctx, 10_000, 0.1, 256) == QUICK_EVAL_SAMPLES
    assert accuracy.sample_limit(ctx, 500, 0.1, 256) == 500
    ctx.quick, ctx.budget_s = False, 100.0  # one pass may take 1 s: 256 samples take 0.1 s -> 2,560 -> 2,560
    assert accuracy.sample_limit(ctx, 10_000, 0.1, 256) == 2560


def test_non_finite_logits_are_never_ok(tmp_path):
    ctx = quick_ctx(tmp_path)
    session = ModelSession("mlp", FixedClass(3).eval())

    def one_nan_per_batch(x):  # 4 of 1,024 samples: accuracy moves by at most 0.4 points, inside the int8 budget
        out = session.model(x).cpu().clone()
        out[0, 0] = math.nan
        return out

    fields = row_fields(one_nan_per_batch, session, ctx, "int8")
    assert abs(fields["accuracy_delta_pts"]) <= ACCURACY_BUDGET_PTS["int8"]
    assert fields["accuracy_ok"] is False
    assert fields["max_abs_diff"] == math.inf


def test_wrong_logit_shape_is_an_error(tmp_path):
    ctx = quick_ctx(tmp_path)
    session = ModelSession("mlp", FixedClass(3).eval())
    with pytest.raises(ValueError, match="shape"):
        row_fields(lambda x: session.model(x).cpu()[:, :5], session, ctx, "fp32")


def test_the_model_s_infer_budget_sizes_the_passes_when_the_driver_spread_one():
    ctx = BenchContext(device=torch.device("cpu"), synthetic=True, budget_s=1e6, backends=["eager", "onnxruntime"])
    ctx.budget_for = lambda name, phase: 10.0 if phase == "infer" else None
    # 10 s x ACCURACY_SHARE over 3 passes (reference + 2 backends) = 1 s a pass; 256 samples take 0.1 s -> 2,560.
    assert accuracy.pass_budget_s(ctx, "mlp") == pytest.approx(10.0 * accuracy.ACCURACY_SHARE / 3)
    assert accuracy.sample_limit(ctx, 10_000, 0.1, 256, "mlp") == 2_560
    assert accuracy.sample_limit(ctx, 10_000, 0.1, 256) == 10_000, "no model named: the run's budget"
