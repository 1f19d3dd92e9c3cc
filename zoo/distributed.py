"""torchrun / DistributedDataParallel seams: torchrun sets RANK / WORLD_SIZE / LOCAL_RANK, nothing else changes.

Every function is a no-op (or returns its input) in a single process, so callers need no ``if world > 1``.
"""
from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch import nn


def env_world_size() -> int:
    """The world size torchrun announces (1 outside torchrun), known before any process group exists."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def init_distributed(device: torch.device) -> tuple[int, int, torch.device]:
    """(rank, world_size, device): under torchrun, this rank's CUDA device (LOCAL_RANK) and the process group
    (nccl on CUDA, gloo otherwise); outside it, (0, 1, device) unchanged."""
    world = env_world_size()
    if world == 1:
        return 0, 1, device
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return dist.get_rank(), dist.get_world_size(), device


def _collective_device(device: torch.device) -> torch.device:
    # nccl only moves CUDA tensors; gloo takes CPU ones.
    return device if dist.get_backend() == "nccl" else torch.device("cpu")


def all_reduce(values: list[float], device: torch.device) -> list[float]:
    """The sum over ranks of each value (float64); the values themselves when not distributed."""
    if not is_distributed():
        return values
    t = torch.tensor(values, dtype=torch.float64, device=_collective_device(device))
    dist.all_reduce(t)
    return t.tolist()


def broadcast_int(value: int, device: torch.device, src: int = 0) -> int:
    """Rank ``src``'s ``value`` on every rank (e.g. how many steps a timed window takes); ``value`` when alone."""
    if not is_distributed():
        return value
    t = torch.tensor([value], dtype=torch.int64, device=_collective_device(device))
    dist.broadcast(t, src=src)
    return int(t.item())


def wrap_ddp(model: nn.Module, device: torch.device, world: int) -> nn.Module:
    """DistributedDataParallel around ``model`` (device_ids on CUDA); the model itself when ``world == 1``."""
    if world == 1:
        return model
    return nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)



def is_main() -> bool:
    """Whether this process writes files and prints: rank 0, or the only process."""
    return not is_distributed() or dist.get_rank() == 0


def destroy() -> None:
    """Tear the process group down if there is one."""
    if is_distributed():
        dist.destroy_process_group()
