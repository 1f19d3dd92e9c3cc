"""The tutorials' own training loops, re-enacted step by step for the ``tutorial_loop`` training row.

The rates (how often the loss and accuracy are read, a line printed, a TensorBoard scalar written) and the
DataLoader (shuffle, drop_last, pin_memory) come from ``spec.tutorial_loop``. What the rates cannot say is kept here,
per tutorial, as ``TutorialStyle``: which counter the tutorial's ``% N`` tests, where it calls ``zero_grad``, its
progress line, and whether that line reads the loss again. Per model, one step of its tutorial does:

| model | tutorial | per step | every N steps |
|---|---|---|---|
| alexnet_mnist | 000/001 | `.to(device)`, forward, loss, zero_grad, backward, AdamW step (defaults), `loss.cpu().item()`, accuracy `.cpu().item()` | print every 16 (1-based batch index) |
| lenet, alexnet_transfer, alexnet_finetune | 002 | `.to(device)`, zero_grad, forward, loss, backward, SGD step, a progress print with `loss.item()` | - |
| cifar_cnn | 003 | `.to(device)`, forward, loss, zero_grad, backward, SGD step, `writer.add_scalar(loss.item())`, `print("#", end="")` | print with a second `loss.item()` every 100 (global step, 1-based) |
| mlp | 004 | `.to(device)`, forward, loss, backward, SGD step, zero_grad | `loss.item()` + print every 100 (0-based batch index: batches 0, 100, ...) |

Host reads over N steps from the start: alexnet_mnist 2N; lenet/alexnet_transfer/alexnet_finetune N; cifar_cnn
N + N // 100; mlp ceil(N / 100). Prints go to a sink the caller gives (``os.devnull`` in the bench).
"""
from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Callable, TextIO

import torch
import torch.nn.functional as F
from torch import nn

from zoo.data import TutorialLoader
from zoo.registry import TutorialLoop


@dataclass(frozen=True)
class TutorialProgress:
    """What a tutorial's progress line can show: its own counters and the host values read this step."""

    epoch: int  # 0-based
    index: int  # the tutorial's counter, in its own convention
    batch_len: int
    num_batches: int
    dataset_size: int
    loss: float
    acc: float | None


@dataclass(frozen=True)
class TutorialStyle:
    counter: str = "epoch1"  # "epoch0" | "epoch1" (enumerate start) | "global1" (a running step count from 1)
    zero_grad: str = "before_backward"  # "before_forward" | "before_backward" | "after_step"
    cpu_item: bool = False  # reads as `t.cpu().item()`
    print_reads_loss: bool = False  # the print statement calls loss.item() itself, even when the loop read it
    mark_every_step: bool = False  # print("#", end="") every step
    line: Callable[[TutorialProgress], str] = lambda p: f"epoch {p.epoch + 1} step {p.index} loss {p.loss:.4f}"


def _line_000(p: TutorialProgress) -> str:
    return (f"Epoch:{p.epoch + 1:03d}  Batch num:[{p.index:03d}/{p.num_batches:03d}]    Loss:{p.loss:.4f}    "
            f"Acc:{p.acc if p.acc is not None else float('nan'):.4f}")


def _line_002(p: TutorialProgress) -> str:
    seen = (p.index + 1) * p.batch_len
    return "Train Epoch: {} [{}/{} ({:.0f}%)]    Loss: {:.6f}".format(  # noqa: UP032 (the tutorial's call)
        p.epoch + 1, seen, p.dataset_size, 100. * seen / p.dataset_size, p.loss)


def _line_003(p: TutorialProgress) -> str:
    return f"train step:{p.index}, loss:{p.loss}"


def _line_004(p: TutorialProgress) -> str:
    return f"loss: {p.loss:>7f}  [{(p.index + 1) * p.batch_len:>5d}/{p.dataset_size:>5d}]"


SEED_002 = TutorialStyle(counter="epoch0", zero_grad="before_forward", line=_line_002)
STYLES: dict[str, TutorialStyle] = {
    "alexnet_mnist": TutorialStyle(counter="epoch1", cpu_item=True, line=_line_000),
    "lenet": SEED_002,
    "alexnet_transfer": SEED_002,
    "alexnet_finetune": SEED_002,
    "cifar_cnn": TutorialStyle(counter="global1", print_reads_loss=True, mark_every_step=True, line=_line_003),
    "mlp": TutorialStyle(counter="epoch0", zero_grad="after_step", line=_line_004),
}
DEFAULT_STYLE = TutorialStyle()  # a model without a tutorial transcription: the rates alone


def style_for(name: str) -> TutorialStyle:
    return STYLES.get(name, DEFAULT_STYLE)


def enumerate_epochs(loader: TutorialLoader) -> Iterator[tuple[int, int, torch.Tensor, torch.Tensor]]:
    """(epoch, batch index from 0, x, y) of the DataLoader's CPU batches, endlessly, as ``enumerate`` per epoch."""
    for epoch in itertools.count():
        for i, (x, y) in enumerate(loader.host_batches(epoch)):
            yield epoch, i, x, y


class TutorialStep:
    """One step of a tutorial's loop per call; returns the samples it stepped (a short last batch counts short)."""

    def __init__(self, name: str, model: nn.Module, optimizer: torch.optim.Optimizer, loader: TutorialLoader,
                 device: torch.device, loop: TutorialLoop, sink: TextIO, writer: Any = None):
        if loop.tensorboard_every and writer is None:
            raise ValueError(f"{name}'s tutorial writes TensorBoard scalars: a SummaryWriter is needed")
        self.model, self.optimizer, self.device, self.loop = model, optimizer, device, loop
        self.style, self.sink, self.writer = style_for(name), sink, writer
        self.batches = enumerate_epochs(loader)
        self.num_batches, self.dataset_size = len(loader), len(loader.loader.dataset)
        self.global_step = 0

    def __call__(self) -> int:
        epoch, i, x, y = next(self.batches)
        x, y = x.to(self.device), y.to(self.device)  # as the tutorials write it: a blocking copy
        zero = self.style.zero_grad
        if zero == "before_forward":
            self.optimizer.zero_grad()
        outputs = self.model(x)
        loss = F.cross_entropy(outputs, y)  # nn.CrossEntropyLoss() with its defaults
        if zero == "before_backward":
            self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        if zero == "after_step":
            self.optimizer.zero_grad()
        self.global_step += 1
        self._host_side(epoch, i, y, outputs, loss)
        return int(y.shape[0])

    def _read(self, t: torch.Tensor) -> float:
        return t.cpu().item() if self.style.cpu_item else t.item()

    def _host_side(self, epoch: int, i: int, y: torch.Tensor, outputs: torch.Tensor, loss: torch.Tensor) -> None:
        """The tutorial's reads, prints and TensorBoard writes after its optimizer step, at its own rates."""
        style, loop = self.style, self.loop
        index = {"epoch0": i, "epoch1": i + 1, "global1": self.global_step}[style.counter]

        def due(every: int) -> bool:
            return every > 0 and index % every == 0

        loss_value = self._read(loss) if due(loop.loss_item_every) else None
        acc_value = None
        if due(loop.acc_item_every):
            acc_value = self._read(outputs.max(dim=-1)[-1].eq(y).float().mean())
        if due(loop.tensorboard_every):  # add_scalar(tag, loss.item(), step): the step's read
            self.writer.add_scalar("train loss", loss_value if loss_value is not None else loss.item(),
                                   self.global_step)
        if style.mark_every_step:
            print("#", end="", file=self.sink)
        if due(loop.print_every):
            shown = loss.item() if style.print_reads_loss or loss_value is None else loss_value
            if style.mark_every_step:
                print(file=self.sink)
            print(style.line(TutorialProgress(epoch, index, int(y.shape[0]), self.num_batches, self.dataset_size, shown,
                                      acc_value)), file=self.sink)
