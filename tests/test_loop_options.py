"""The loop's execution options on CPU: each one trains (finite losses), writes a checkpoint and records itself."""
from __future__ import annotations

import math
import os
import shutil

import pytest
import torch

from zoo.checkpoint import load_checkpoint
from zoo.loop import fit

TINY = dict(train_samples=64, test_samples=32, batch_size=32)


def trained(small_cfg, **options) -> tuple[dict, dict]:
    result = fit(small_cfg("lenet", **TINY, **options))
    ckpt = load_checkpoint(os.path.join(small_cfg().out, "lenet", "last.pt"), model_name="lenet")
    assert ckpt["epoch"] == 1
    for key in ("train_loss", "test_loss"):
        assert math.isfinite(result[key]), (key, result[key])
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())
    return result, ckpt


def test_bf16_autocast(small_cfg):
    _, ckpt = trained(small_cfg, precision="bf16")
    assert ckpt["config"]["precision"] == "bf16" and ckpt["scaler"] is None
    assert ckpt["model"]["conv1.weight"].dtype == torch.float32  # autocast: the weights stay fp32


def test_fp16_autocast_with_grad_scaler(small_cfg):
    try:
        with torch.autocast("cpu", dtype=torch.float16):
            torch.nn.Linear(2, 2)(torch.ones(1, 2))
        torch.amp.GradScaler("cpu")
    except (RuntimeError, TypeError, AttributeError) as exc:
        pytest.skip(f"this torch has no fp16 autocast / GradScaler on CPU: {exc}")
    _, ckpt = trained(small_cfg, precision="fp16")
    assert ckpt["config"]["precision"] == "fp16"
    assert ckpt["scaler"] and "scale" in ckpt["scaler"]  # the GradScaler's state is saved for the resume


def test_channels_last(small_cfg):
    _, ckpt = trained(small_cfg, channels_last=True)
    assert ckpt["config"]["channels_last"] is True


@pytest.mark.slow
def test_compile(small_cfg):
    if shutil.which(os.environ.get("CXX", "g++")) is None and shutil.which("cc") is None:
        pytest.skip("torch.compile on CPU needs a C++ compiler")
    _, ckpt = trained(small_cfg, compile="default")
    assert ckpt["config"]["compile"] == "default"
    assert not any(k.startswith("_orig_mod.") for k in ckpt["model"])  # the plain model's state_dict is saved
