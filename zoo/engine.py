"""The pieces of the shared loop that the benchmarks reuse: device choice, optimizer, the training step, evaluation.

The step never synchronises with the host: loss, accuracy and a finiteness check accumulate in device tensors that the
caller reads once per logging interval (``StepStats.read``).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from zoo.errors import UserError
from zoo.registry import Recipe

DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` picks cuda, then mps, then cpu; naming an absent accelerator is a UserError."""
    name = (name or "auto").lower()
    mps = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "mps" if mps else "cpu")
    base = name.split(":")[0]
    if base not in DEVICES:
        raise UserError(f"unknown device {name!r}; choose from: {', '.join(DEVICES)}")
    if base == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for, but this PyTorch sees no CUDA device "
                        f"(torch {torch.__version__}, CUDA build: {torch.version.cuda or 'no'})")
    if base == "mps" and not mps:
        raise UserError("--device mps was asked for, but MPS is not available on this machine")
    return torch.device(name)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


OPTIMIZER_IMPLS = ("fused", "foreach", "forloop")  # PyTorch's three optimizer kernels; the same update maths


def build_optimizer(recipe: Recipe, model: nn.Module, lr: float | None = None,
                    fused: bool = True, impl: str | None = None) -> torch.optim.Optimizer:
    """The recipe's optimizer over the parameters that train (frozen backbones are left out).

    ``fused=True`` takes PyTorch's fused kernel where the device has one: on CPU, plain AdamW falls back to a
    per-tensor Python loop (0.38 s per step for AlexNet's 57M parameters here, 0.026 s fused). Same algorithm and
    hyper-parameters; the tutorials' own code (the bench's ``tutorial_loop`` row) uses ``fused=False``.
    ``impl`` (one of OPTIMIZER_IMPLS) asks for one kernel exactly, for the tuner: it overrides ``fused`` and raises
    ValueError where the device or optimizer lacks that kernel, instead of falling back.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    lr = recipe.lr if lr is None else lr
    if recipe.optimizer == "sgd":
        cls, kwargs = torch.optim.SGD, {"lr": lr, "momentum": recipe.momentum, "weight_decay": recipe.weight_decay}
    elif recipe.optimizer == "adamw":
        cls, kwargs = torch.optim.AdamW, {"lr": lr, "weight_decay": recipe.weight_decay}
    else:
        raise ValueError(f"unknown optimizer {recipe.optimizer!r}")
    if impl is not None:
        if impl not in OPTIMIZER_IMPLS:
            raise ValueError(f"unknown optimizer impl {impl!r}; choose from: {', '.join(OPTIMIZER_IMPLS)}")
        flags = {"fused": {"fused": True}, "foreach": {"foreach": True}, "forloop": {"foreach": False}}[impl]
        try:
            return cls(params, **flags, **kwargs)
        except (RuntimeError, TypeError) as exc:  # e.g. no fused kernel for this device or dtype
            raise ValueError(f"{cls.__name__} has no {impl} kernel here: {exc}") from None
    if fused:
        try:
            return cls(params, fused=True, **kwargs)
        except (RuntimeError, ValueError, TypeError):  # no fused kernel for this device or torch version
            pass
    return cls(params, **kwargs)


def optimizer_impl(optimizer: torch.optim.Optimizer, device: torch.device) -> str:
    """Which kernel an optimizer's step runs: its explicit flags, else PyTorch's default for the device (foreach
    for CUDA tensors, the per-tensor loop elsewhere)."""
    if optimizer.defaults.get("fused"):
        return "fused"
    foreach = optimizer.defaults.get("foreach")
    if foreach is None:
        foreach = device.type == "cuda"
    return "foreach" if foreach else "forloop"


@dataclass
class StepOptions:
    """How the step runs: precision (autocast), memory format, and the GradScaler for fp16."""

    device: torch.device
    precision: str = "fp32"
    channels_last: bool = False
    scaler: torch.amp.GradScaler | None = None

    def __post_init__(self):
        if self.precision not in PRECISIONS:
            raise UserError(f"unknown precision {self.precision!r}; choose from: {', '.join(PRECISIONS)}")
        if self.precision == "fp16" and self.scaler is None:
            self.scaler = torch.amp.GradScaler(self.device.type)

    def autocast(self):
        dtype = PRECISIONS[self.precision]
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=dtype)

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last and x.dim() == 4:
            return x.contiguous(memory_format=torch.channels_last)
        return x


class StepStats:
    """Running sums on the device: summed loss, correct predictions, samples, and steps with a finite loss sum."""

    def __init__(self, device: torch.device):
        self.loss_sum = torch.zeros((), device=device, dtype=torch.float64 if device.type == "cpu" else torch.float32)
        self.correct = torch.zeros((), device=device, dtype=torch.int64)
        self.finite_steps = torch.zeros((), device=device, dtype=torch.int64)
        self.samples = 0  # known on the host without a sync

    def update(self, loss: torch.Tensor, logits: torch.Tensor, y: torch.Tensor) -> None:
        self.loss_sum += loss.detach().to(self.loss_sum.dtype) * y.shape[0]
        self.correct += (logits.detach().argmax(1) == y).sum()
        # Once a loss is NaN/inf the sum stays non-finite, so this counter stops at the first bad step's index.
        self.finite_steps += torch.isfinite(self.loss_sum)
        self.samples += y.shape[0]

    def read(self) -> dict[str, float]:
        """One host sync: the numbers so far."""
        loss_sum, correct, finite = (t.item() for t in (self.loss_sum, self.correct, self.finite_steps))
        n = max(self.samples, 1)
        return {"loss": loss_sum / n, "acc": correct / n, "finite_steps": int(finite), "loss_sum": loss_sum,
                "correct": int(correct), "samples": self.samples}


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
               opts: StepOptions, stats: StepStats | None = None) -> torch.Tensor:
    """One optimisation step of the shared loop. Returns the loss tensor; never reads it back to the host."""
    x = opts.prepare(x)
    optimizer.zero_grad(set_to_none=True)
    with opts.autocast():
        logits = model(x)
        loss = F.cross_entropy(logits, y)
    if opts.scaler is not None:
        opts.scaler.scale(loss).backward()
        opts.scaler.step(optimizer)
        opts.scaler.update()
    else:
        loss.backward()
        optimizer.step()
    if stats is not None:
        stats.update(loss, logits, y)
    return loss


@torch.inference_mode()
def evaluate(model: nn.Module, batches, opts: StepOptions) -> dict[str, float]:
    """Mean loss and accuracy over an iterable of (x, y) batches, with a single host sync at the end."""
    model.eval()
    stats = StepStats(opts.device)
    for x, y in batches:
        with opts.autocast():
            logits = model(opts.prepare(x))
            loss = F.cross_entropy(logits.float(), y)
        stats.update(loss, logits, y)
    return stats.read()
