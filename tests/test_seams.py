"""The public seams bench uses: zoo.distributed in one process, the loaders' host batches and endless iterators."""
from __future__ import annotations

import itertools

import pytest
import torch
import torch.distributed as dist

import zoo
from zoo import distributed
from zoo.data import batches_forever, make_loaders, open_split


def lenet_loaders(loader: str, **kw):
    return make_loaders(zoo.get_spec("lenet"), loader=loader, synthetic=True, train_samples=100, test_samples=10,
                        batch_size=32, **kw)


def test_single_process_distributed_is_a_no_op():
    assert not distributed.is_distributed() and distributed.is_main()
    assert distributed.init_distributed(torch.device("cpu")) == (0, 1, torch.device("cpu"))
    assert distributed.all_reduce([1.5, 2.0], torch.device("cpu")) == [1.5, 2.0]
    assert distributed.broadcast_int(7, torch.device("cpu")) == 7
    model = zoo.get_model("lenet")
    assert distributed.wrap_ddp(model, torch.device("cpu"), 1) is model
    distributed.destroy()  # nothing to tear down


def test_collectives_in_a_one_rank_gloo_group(tmp_path):
    store = dist.FileStore(str(tmp_path / "store"), 1)
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    try:
        assert distributed.is_distributed() and distributed.is_main()
        assert distributed.all_reduce([1.5, 2.0], torch.device("cpu")) == [1.5, 2.0]
        assert distributed.broadcast_int(41, torch.device("cpu")) == 41
        model = zoo.get_model("lenet")
        ddp = distributed.wrap_ddp(model, torch.device("cpu"), 1 + 1)  # world > 1: a DDP wrapper
        assert isinstance(ddp, torch.nn.parallel.DistributedDataParallel)
        assert ddp.module is model
    finally:
        distributed.destroy()
    assert not distributed.is_distributed()


def test_host_batches_are_the_dataloader_batches_on_the_cpu():
    data = lenet_loaders("tutorial")
    host = list(data.train.host_batches(1))
    device = list(data.train.batches(1))
    assert len(host) == len(device) == len(data.train) == 4
    for (hx, hy), (dx, dy) in zip(host, device):
        assert hx.device.type == "cpu" and torch.equal(hx, dx.cpu()) and torch.equal(hy, dy.cpu())
    assert not torch.equal(host[0][1], next(data.train.host_batches(0))[1])  # the epoch sets the order


@pytest.mark.parametrize("loader", ["fast", "tutorial"])
def test_batches_forever_runs_over_epochs_in_order(loader):
    data = lenet_loaders(loader)
    n = len(data.train)
    got = list(itertools.islice(batches_forever(data.train), 2 * n + 1))
    expected = [*data.train.batches(0), *data.train.batches(1), *data.train.batches(2)][:2 * n + 1]
    for (gx, gy), (ex, ey) in zip(got, expected):
        assert torch.equal(gx, ex) and torch.equal(gy, ey)



@pytest.mark.parametrize("loader", ["fast", "tutorial"])
def test_loader_overrides(loader):
    default = lenet_loaders(loader)
    plain = lenet_loaders(loader, shuffle=False, drop_last=True)
    assert len(default.train) == 4 and len(plain.train) == 3  # 100 samples, batch 32
    labels = torch.cat([y.cpu() for _, y in plain.train.batches(5)])
    split = open_split("mnist", True, synthetic=True, size=100).targets
    assert torch.equal(labels, split[:96])  # no shuffle: the split's own order, whatever the epoch
    assert not torch.equal(torch.cat([y.cpu() for _, y in default.train.batches(5)]), split)


def test_pin_memory_override_reaches_the_dataloader():
    assert lenet_loaders("tutorial").train.loader.pin_memory is False  # CPU default
    assert lenet_loaders("tutorial", pin_memory=True).train.loader.pin_memory is True
