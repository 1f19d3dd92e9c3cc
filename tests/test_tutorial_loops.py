"""The bench's tutorial_loop row does what each tutorial's own loop does per step: no more, no less.

The expected numbers below are read off the tutorials' code (tests/../shared seeds 000-004), not from the specs, and
the reference loops are the tutorials' training loops copied verbatim (prints sent to a sink instead of stdout).
"""
from __future__ import annotations

import contextlib
import copy
import io
import os
import sys

import pytest
import torch
from torch import nn, optim
from torch.utils.data import DataLoader

import zoo
from bench.phases.train import tutorial_loop
from bench.phases.train.phase import RowBuilder
from bench.phases.train.tutorial_loop import TutorialStep
from zoo.data import make_loaders
from zoo.engine import build_optimizer

DEVICE = torch.device("cpu")
LOOP_FILE = tutorial_loop.__file__

# model: (steps, host reads (Tensor.item calls) in those steps, progress lines printed) from the tutorial's code.
TUTORIAL_COUNTS = {
    # 000/001: `current_loss = loss.cpu().item()` and `current_acc = acc.cpu().item()` every step; print every 16.
    "alexnet_mnist": (3, 6, 0),
    # 002: `print('Train Epoch: ...'.format(..., loss.item()))` every step.
    "lenet": (5, 5, 5),
    "alexnet_transfer": (3, 3, 3),
    "alexnet_finetune": (3, 3, 3),
    # 003: `writer.add_scalar("train loss", loss.item(), step)` every step, and at step 100 a print with another
    # `loss.item()`.
    "cifar_cnn": (101, 102, 1),
    # 004: `if batch % 100 == 0: loss, current = loss.item(), ...` -> batches 0 and 100.
    "mlp": (101, 2, 2),
}
BATCH = {"alexnet_mnist": 2, "alexnet_transfer": 2, "alexnet_finetune": 2, "cifar_cnn": 2}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


class RecordingWriter:
    def __init__(self):
        self.scalars = []

    def add_scalar(self, tag, value, step):
        assert isinstance(value, float)  # a host value: the read happened before the write
        self.scalars.append((tag, value, step))


def _seeded_model(name: str) -> nn.Module:
    torch.manual_seed(0)
    kwargs = {"pretrained": "off"} if zoo.get_spec(name).uses_pretrained else {}
    return zoo.get_model(name, **kwargs).train()


def _loader(name: str, batch: int, samples: int):
    spec, tl = zoo.get_spec(name), zoo.get_spec(name).tutorial_loop
    return make_loaders(spec, loader="tutorial", device=DEVICE, synthetic=True, batch_size=batch, seed=0,
                        train_samples=samples, test_samples=1, shuffle=tl.shuffle, drop_last=tl.drop_last,
                        pin_memory=tl.pin_memory).train


def _bench_step(name, model, loader, sink, writer):
    spec = zoo.get_spec(name)
    optimizer = build_optimizer(spec.recipe, model, fused=False)
    return TutorialStep(name, model, optimizer, loader, DEVICE, spec.tutorial_loop, sink, writer)


@pytest.mark.parametrize("name,steps,reads,lines", [
    *[(name, *counts) for name, counts in TUTORIAL_COUNTS.items()],
    pytest.param("alexnet_mnist", 17, 34, 1, marks=pytest.mark.slow, id="alexnet_mnist-print-every-16"),
])
def test_host_reads_and_prints_per_step_match_the_tutorial(name, steps, reads, lines, monkeypatch):
    """Counted: Tensor.item calls the loop itself makes (PyTorch's own CPU-side reads, e.g. the DataLoader's base
    seed per epoch or a default optimizer's step counters, are the same in the tutorial and not the loop's)."""
    batch = BATCH.get(name, 4)
    sink, writer = io.StringIO(), RecordingWriter()
    step = _bench_step(name, _seeded_model(name), _loader(name, batch, batch * (steps + 20)), sink, writer)
    count = {"item": 0}
    real_item = torch.Tensor.item

    def counting_item(self):
        count["item"] += sys._getframe(1).f_code.co_filename == LOOP_FILE
        return real_item(self)

    monkeypatch.setattr(torch.Tensor, "item", counting_item)
    stepped = sum(step() for _ in range(steps))
    assert stepped == steps * batch
    assert count["item"] == reads
    progress = [ln for ln in sink.getvalue().splitlines() if "oss" in ln]
    assert len(progress) == lines
    assert len(writer.scalars) == (steps if name == "cifar_cnn" else 0)


def _verbatim_lenet(net, trainloader, sink):
    """seed 002, 4.3 模型训练 (num_epochs = 1; learning_rate and momentum as its recipe)."""
    device = 'cpu'
    learning_rate, momentum, num_epochs = 0.01, 0.9, 1
    criterion = nn.CrossEntropyLoss()
    optimizer = optim.SGD(net.parameters(), lr=learning_rate, momentum=momentum)
    for epoch in range(num_epochs):
        for i, data in enumerate(trainloader):
            inputs, labels = data[0].to(device), data[1].to(device)
            optimizer.zero_grad()
            outputs = net(inputs)
            loss = criterion(outputs, labels)
            loss.backward()
            optimizer.step()
            print('Train Epoch: {} [{}/{} ({:.0f}%)]    Loss: {:.6f}'.format(  # noqa: UP032
                epoch+1, (i+1)*len(inputs), len(trainloader.dataset),
                100. * ((i+1)*len(inputs))/len(trainloader.dataset), loss.item()), file=sink)


def _verbatim_mlp(model, dataloader, sink):
    """seed 004, train(dataloader, model, loss_fn, optimizer), one epoch."""
    device = "cpu"
    loss_fn = nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    size = len(dataloader.dataset)
    model.train()
    for batch, (X, y) in enumerate(dataloader):
        X, y = X.to(device), y.to(device)
        pred = model(X)
        loss = loss_fn(pred, y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        if batch % 100 == 0:
            loss, current = loss.item(), (batch + 1) * len(X)
            print(f"loss: {loss:>7f}  [{current:>5d}/{size:>5d}]", file=sink)


def _verbatim_cifar(my_module, train_dataloader, sink, writer):
    """seed 003, the training half of one epoch."""
    device = torch.device("cpu")
    loss_func = nn.CrossEntropyLoss().to(device)
    learning_rate = 1e-2
    optim = torch.optim.SGD(my_module.parameters(), lr=learning_rate)
    total_train_step = 0
    my_module.train()
    for imgs, targets in train_dataloader:
        imgs = imgs.to(device)
        targets = targets.to(device)
        outputs = my_module.forward(imgs)
        loss = loss_func(outputs, targets)
        optim.zero_grad()
        loss.backward()
        optim.step()
        total_train_step = total_train_step + 1
        writer.add_scalar("train loss", loss.item(), total_train_step)
        print("#", end="", file=sink)
        if total_train_step % 100 == 0:
            print(file=sink)
            print(f"train step:{total_train_step}, loss:{loss.item()}", file=sink)


VERBATIM = {
    # name: (batch, samples, reference loop, the tutorial's DataLoader over the same dataset)
    "lenet": (16, 100, lambda m, dl, s, w: _verbatim_lenet(m, dl, s), None),
    "mlp": (4, 408, lambda m, dl, s, w: _verbatim_mlp(m, dl, s), lambda ds: DataLoader(ds, batch_size=4)),
    "cifar_cnn": (2, 204, _verbatim_cifar, None),
}


@pytest.mark.parametrize("name", list(VERBATIM))
def test_tutorial_loop_step_trains_exactly_like_the_tutorials_code(name):
    """Same seed, same batches: the bench step and the verbatim loop end with identical weights and print the
    same lines. (A shuffled tutorial's DataLoader is the bench's seeded one; an unshuffled one is built literally.)"""
    batch, samples, reference, literal_loader = VERBATIM[name]
    loader = _loader(name, batch, samples)
    ref_model, bench_model = _seeded_model(name), _seeded_model(name)
    ref_sink, bench_sink = io.StringIO(), io.StringIO()
    ref_writer, bench_writer = RecordingWriter(), RecordingWriter()
    dataloader = literal_loader(loader.loader.dataset) if literal_loader else loader.loader
    loader.sampler.set_epoch(0)
    reference(ref_model, dataloader, ref_sink, ref_writer)
    step = _bench_step(name, bench_model, loader, bench_sink, bench_writer)
    stepped = sum(step() for _ in range(len(loader)))
    assert stepped == loader.num_samples
    for (pname, a), b in zip(ref_model.state_dict().items(), bench_model.state_dict().values()):
        assert torch.equal(a, b), pname
    assert bench_sink.getvalue() == ref_sink.getvalue()
    assert bench_writer.scalars == ref_writer.scalars


def test_a_short_last_batch_is_counted_short():
    loader = _loader("lenet", 16, 40)  # 16 + 16 + 8
    step = _bench_step("lenet", _seeded_model("lenet"), loader, io.StringIO(), None)
    assert [step() for _ in range(4)] == [16, 16, 8, 16]  # then the next epoch


def test_the_bench_row_writes_tensorboard_into_a_temporary_folder_only(tmp_path, monkeypatch):
    from bench.context import BenchContext

    cwd, scratch = tmp_path / "cwd", tmp_path / "scratch"
    cwd.mkdir(), scratch.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.setattr("tempfile.tempdir", str(scratch))
    ctx = BenchContext(DEVICE, quick=True, synthetic=True, checkpoints=None, out_dir=str(tmp_path / "out"))
    builder = RowBuilder("cifar_cnn", ctx)
    with contextlib.ExitStack() as resources:
        step = builder.tutorial_step(False, resources)
        for _ in range(3):
            step()
        step.writer.flush()
        events = [f for _, _, files in os.walk(scratch) for f in files]
        assert any(f.startswith("events.out.tfevents") for f in events)
    assert os.listdir(cwd) == []
    assert os.listdir(scratch) == []  # the folder goes with the row


def test_the_models_without_verbatim_copy_still_start_from_one_initialisation():
    """Every ladder row copies one seeded initialisation: two builds of a row hold the same weights."""
    from bench.context import BenchContext

    builder = RowBuilder("mlp", BenchContext(DEVICE, quick=True, synthetic=True, checkpoints=None))
    a, b = builder.model(), builder.model()
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert a is not b and copy.deepcopy(a) is not a
