"""zoo.engine: device choice, optimizer kernels, the step options, the on-device running stats and evaluation."""
from __future__ import annotations

import contextlib
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from zoo.engine import (
    StepOptions,
    StepStats,
    build_optimizer,
    evaluate,
    optimizer_impl,
    resolve_device,
    synchronize,
    train_step,
)
from zoo.errors import UserError
from zoo.registry import Recipe

CPU = torch.device("cpu")
SGD = Recipe(optimizer="sgd", lr=0.1, batch_size=8, epochs=1, momentum=0.9, weight_decay=1e-4)
ADAMW = Recipe(optimizer="adamw", lr=1e-3, batch_size=8, epochs=1, weight_decay=0.05)


@pytest.fixture
def accelerators(monkeypatch):
    """Pretend which accelerators this PyTorch sees (torch.device objects need no real device)."""

    def set_available(cuda: bool, mps: bool):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
        monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)

    return set_available


# -- resolve_device / synchronize ------------------------------------------------------------------------------------


@pytest.mark.parametrize("cuda, mps, expected", [(True, True, "cuda"), (False, True, "mps"), (False, False, "cpu")])
def test_auto_prefers_cuda_then_mps_then_cpu(accelerators, cuda, mps, expected):
    accelerators(cuda, mps)
    assert resolve_device("auto") == torch.device(expected)
    assert resolve_device() == resolve_device(None) == resolve_device("AUTO") == torch.device(expected)


def test_a_named_device_is_kept_with_its_index(accelerators):
    accelerators(True, True)
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    assert resolve_device("MPS") == torch.device("mps")
    assert resolve_device("cpu") == CPU


def test_absent_or_unknown_devices_are_user_errors(accelerators, monkeypatch):
    accelerators(False, False)
    monkeypatch.setattr(torch.version, "cuda", None)  # a CPU-only build
    with pytest.raises(UserError, match=r"^unknown device 'tpu'; choose from: auto, cpu, cuda, mps$"):
        resolve_device("tpu")
    with pytest.raises(UserError, match=r"^--device cuda was asked for, but this PyTorch sees no CUDA device "
                                        r"\(torch .+, CUDA build: no\)$"):
        resolve_device("cuda:0")
    with pytest.raises(UserError, match="^--device mps was asked for, but MPS is not available"):
        resolve_device("mps")
    assert resolve_device("cpu") == CPU
    monkeypatch.setattr(torch.version, "cuda", "12.8")  # a CUDA build on a machine without a GPU
    with pytest.raises(UserError, match=r"\(torch .+, CUDA build: 12\.8\)$"):
        resolve_device("cuda")


def test_synchronize_drains_the_devices_own_queue(monkeypatch):
    calls = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: calls.append(("cuda", device)))
    monkeypatch.setattr(torch.mps, "synchronize", lambda: calls.append(("mps", None)))
    synchronize(CPU)
    assert calls == []
    synchronize(torch.device("cuda", 1))
    synchronize(torch.device("mps"))
    assert calls == [("cuda", torch.device("cuda", 1)), ("mps", None)]


# -- build_optimizer / optimizer_impl --------------------------------------------------------------------------------


def test_optimizer_follows_the_recipe_and_skips_frozen_parameters():
    model = nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2))
    model[0].requires_grad_(False)
    opt = build_optimizer(SGD, model)
    assert type(opt) is torch.optim.SGD
    group = opt.param_groups[0]
    assert (group["lr"], group["momentum"], group["weight_decay"]) == (0.1, 0.9, 1e-4)
    assert [id(p) for p in group["params"]] == [id(p) for p in model[1].parameters()]
    assert build_optimizer(SGD, model, lr=0.5).param_groups[0]["lr"] == 0.5
    adamw = build_optimizer(ADAMW, model)
    assert type(adamw) is torch.optim.AdamW
    assert (adamw.param_groups[0]["lr"], adamw.param_groups[0]["weight_decay"]) == (1e-3, 0.05)
    with pytest.raises(ValueError, match="unknown optimizer 'lamb'"):
        build_optimizer(Recipe(optimizer="lamb", lr=1.0, batch_size=1, epochs=1), model)


@pytest.mark.parametrize("recipe", [SGD, ADAMW], ids=["sgd", "adamw"])
def test_each_kernel_is_asked_for_exactly(recipe):
    model = nn.Linear(4, 2)
    assert optimizer_impl(build_optimizer(recipe, model), CPU) == "fused"  # the default takes the fused kernel
    assert optimizer_impl(build_optimizer(recipe, model, fused=False), CPU) == "forloop"  # PyTorch's CPU default
    for impl in ("fused", "foreach", "forloop"):
        opt = build_optimizer(recipe, model, impl=impl, fused=False)
        assert optimizer_impl(opt, CPU) == impl
        assert opt.param_groups[0]["lr"] == recipe.lr  # the kernel changes, the hyper-parameters do not
    assert build_optimizer(recipe, model, fused=False).param_groups[0]["weight_decay"] == recipe.weight_decay
    with pytest.raises(ValueError, match=r"unknown optimizer impl 'cuda'; choose from: fused, foreach, forloop"):
        build_optimizer(recipe, model, impl="cuda")


def test_a_missing_fused_kernel_falls_back_unless_asked_for(monkeypatch):
    class NoFusedSGD(torch.optim.SGD):
        def __init__(self, params, fused=None, **kwargs):
            if fused:
                raise RuntimeError("fused not supported here")
            super().__init__(params, **kwargs)

    monkeypatch.setattr(torch.optim, "SGD", NoFusedSGD)
    opt = build_optimizer(SGD, nn.Linear(4, 2))
    assert type(opt) is NoFusedSGD and not opt.defaults.get("fused")
    with pytest.raises(ValueError, match=r"^NoFusedSGD has no fused kernel here: fused not supported here$"):
        build_optimizer(SGD, nn.Linear(4, 2), impl="fused")


def test_optimizer_impl_reads_pytorchs_default_per_device():
    params = [nn.Parameter(torch.zeros(2))]
    plain = torch.optim.SGD(params, lr=0.1)  # foreach=None: PyTorch picks per device
    assert optimizer_impl(plain, torch.device("cuda")) == "foreach"
    assert optimizer_impl(plain, CPU) == "forloop"
    assert optimizer_impl(torch.optim.SGD(params, lr=0.1, foreach=False), torch.device("cuda")) == "forloop"
    assert optimizer_impl(torch.optim.SGD(params, lr=0.1, foreach=True), CPU) == "foreach"


# -- StepOptions -----------------------------------------------------------------------------------------------------


def test_step_options_check_the_precision_and_bring_a_scaler_for_fp16():
    with pytest.raises(UserError, match=r"^unknown precision 'fp8'; choose from: fp32, bf16, fp16$"):
        StepOptions(CPU, precision="fp8")
    assert StepOptions(CPU).scaler is None and StepOptions(CPU, precision="bf16").scaler is None
    fp16 = StepOptions(CPU, precision="fp16")
    assert isinstance(fp16.scaler, torch.amp.GradScaler) and fp16.scaler.is_enabled()  # fp16 steps scale the loss
    mine = torch.amp.GradScaler("cpu")
    assert StepOptions(CPU, precision="fp16", scaler=mine).scaler is mine


def test_autocast_runs_the_forward_in_the_chosen_precision():
    a = torch.rand(4, 4)
    with StepOptions(CPU).autocast() as ctx:
        assert (a @ a).dtype == torch.float32
    assert ctx is None
    with StepOptions(CPU, precision="bf16").autocast():
        assert (a @ a).dtype == torch.bfloat16
    with StepOptions(CPU, precision="fp16").autocast():
        assert (a @ a).dtype == torch.float16
    assert isinstance(StepOptions(CPU).autocast(), contextlib.nullcontext)


def test_prepare_converts_only_4d_batches_when_asked():
    x = torch.rand(2, 3, 4, 5)
    out = StepOptions(CPU, channels_last=True).prepare(x)
    assert out.is_contiguous(memory_format=torch.channels_last) and torch.equal(out, x)
    assert StepOptions(CPU).prepare(x) is x
    flat = torch.rand(2, 6)
    assert StepOptions(CPU, channels_last=True).prepare(flat) is flat


# -- StepStats / train_step / evaluate -------------------------------------------------------------------------------


def test_step_stats_sum_on_the_device_and_read_once():
    stats = StepStats(CPU)
    assert stats.read() == {"loss": 0.0, "acc": 0.0, "finite_steps": 0, "loss_sum": 0.0, "correct": 0,
                            "samples": 0}  # nothing stepped: zeros, not a division by zero
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [3.0, 1.0]])
    stats.update(torch.tensor(0.5), logits, torch.tensor([0, 0, 0]))  # 2 of 3 right
    stats.update(torch.tensor(2.0), logits[:1], torch.tensor([1]))  # 0 of 1 right
    assert stats.loss_sum.dtype == torch.float64
    got = stats.read()
    assert got == {"loss": pytest.approx((0.5 * 3 + 2.0) / 4), "acc": 0.5, "finite_steps": 2,
                   "loss_sum": pytest.approx(3.5), "correct": 2, "samples": 4}
    assert type(got["finite_steps"]) is int and type(got["correct"]) is int


def test_running_sums_live_on_the_device_as_exact_counters():
    meta = StepStats(torch.device("meta"))  # any non-CPU device: no host copy, fp32 loss sum
    assert {t.device.type for t in (meta.loss_sum, meta.correct, meta.finite_steps)} == {"meta"}
    assert meta.loss_sum.dtype == torch.float32
    cpu = StepStats(CPU)
    # integer counters: a float32 count of correct predictions would stop growing at 2**24 samples
    assert (cpu.loss_sum.dtype, cpu.correct.dtype, cpu.finite_steps.dtype) == (torch.float64, torch.int64, torch.int64)
    third = torch.tensor(1 / 3, dtype=torch.float32)
    cpu.update(third, torch.zeros(3, 2), torch.zeros(3, dtype=torch.long))
    assert cpu.read()["loss_sum"] == third.item() * 3  # summed in float64, not rounded back to float32


def test_one_sample_reads_its_own_loss():
    stats = StepStats(CPU)
    stats.update(torch.tensor(0.75), torch.tensor([[0.0, 1.0]]), torch.tensor([1]))
    assert stats.read() == {"loss": 0.75, "acc": 1.0, "finite_steps": 1, "loss_sum": 0.75, "correct": 1,
                            "samples": 1}


def test_finite_steps_stop_at_the_first_non_finite_loss():
    stats = StepStats(CPU)
    logits, y = torch.zeros(2, 3), torch.zeros(2, dtype=torch.long)
    for loss in (1.0, 1.0, math.inf, 1.0, 1.0):
        stats.update(torch.tensor(loss), logits, y)
    assert stats.read()["finite_steps"] == 2 and stats.read()["samples"] == 10


def test_train_step_is_one_sgd_update_on_the_cross_entropy():
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    x, y = torch.rand(4, 3), torch.tensor([0, 1, 1, 0])
    w0 = model.weight.detach().clone()
    ref = F.cross_entropy(model(x), y)
    grad = torch.autograd.grad(ref, model.weight)[0]
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    model.weight.grad = torch.full_like(w0, 100.0)  # a stale gradient the step must clear, not add to
    stats = StepStats(CPU)
    loss = train_step(model, opt, x, y, StepOptions(CPU), stats)
    assert loss.item() == pytest.approx(ref.item())
    assert torch.allclose(model.weight.detach(), w0 - 0.5 * grad)
    assert stats.read()["samples"] == 4 and stats.read()["loss"] == pytest.approx(ref.item())
    train_step(model, opt, x, y, StepOptions(CPU))  # stats are optional


def test_train_step_goes_through_the_scaler():
    events = []

    class Scaler:
        def scale(self, loss):
            events.append("scale")
            return loss * 2.0

        def step(self, optimizer):
            events.append("step")
            optimizer.step()

        def update(self):
            events.append("update")

    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    w0 = model.weight.detach().clone()
    train_step(model, opt, torch.rand(4, 3), torch.tensor([0, 1, 1, 0]), StepOptions(CPU, scaler=Scaler()))
    assert events == ["scale", "step", "update"] and not torch.equal(model.weight.detach(), w0)


def test_evaluate_weights_batches_by_their_size_in_eval_mode():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 2), nn.Dropout(0.9))  # dropout would change the logits in train mode
    x, y = torch.rand(5, 3), torch.tensor([0, 1, 1, 0, 1])
    batches = [(x[:4], y[:4]), (x[4:], y[4:])]
    got = evaluate(model, batches, StepOptions(CPU))
    assert not model.training
    logits = model[0](x)
    assert got["loss"] == pytest.approx(F.cross_entropy(logits, y).item())
    assert got["acc"] == pytest.approx((logits.argmax(1) == y).float().mean().item())
    assert got["samples"] == 5 and got["finite_steps"] == 2

