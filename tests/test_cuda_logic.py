"""The CPU-side logic of the CUDA paths, with the GPU's answers stood in for: which precisions a GPU runs natively,
its physical peak, which device each row's figures belong to. tests/test_cuda_paths.py runs the real paths on a GPU."""
from __future__ import annotations

import pytest
import torch

from bench.backends.torch_eager import EagerBf16Backend
from bench.env import precision_support


@pytest.fixture
def fake_gpu(monkeypatch):
    """A stand-in GPU of a given compute capability whose torch.cuda.is_bf16_supported() says True (emulation)."""

    def make(capability: tuple[int, int], name: str = "Tesla T4"):
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: name)
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        return torch.device("cuda", 0)

    return make


def test_bf16_on_a_gpu_without_bf16_tensor_cores_is_left_out(fake_gpu):
    device = fake_gpu((7, 5))  # T4: is_bf16_supported() is True by default there, through emulation
    support = precision_support(device)
    assert support["bf16"] is not None and "7.5" in support["bf16"] and "Tesla T4" in support["bf16"]
    assert support["fp16"] is None  # fp16 tensor cores from 7.0
    assert "7.5" in EagerBf16Backend.available(device)


def test_bf16_on_ampere_and_later_is_native(fake_gpu):
    device = fake_gpu((8, 0), "NVIDIA A100")
    assert precision_support(device) == {"fp32": None, "bf16": None, "fp16": None}
    assert EagerBf16Backend.available(device) is None


def test_fp16_below_volta_is_left_out(fake_gpu):
    assert "6.1" in precision_support(fake_gpu((6, 1), "GTX 1080"))["fp16"]
