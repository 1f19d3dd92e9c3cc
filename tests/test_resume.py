"""Exact resumption: stopping after an epoch (or being SIGKILLed anywhere) and resuming changes no bit."""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time

import pytest
import torch
from helpers import REPO, assert_same_tensors, cli_command, cli_env

from zoo.checkpoint import load_checkpoint
from zoo.errors import UserError
from zoo.loop import fit

TIMING_KEYS = ("samples_per_s", "seconds", "train_seconds")


def read_metrics(run_dir: str) -> list[dict]:
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in rows]


def assert_same_run(dir_a: str, dir_b: str, model: str) -> None:
    a = load_checkpoint(os.path.join(dir_a, "last.pt"), model_name=model)
    b = load_checkpoint(os.path.join(dir_b, "last.pt"), model_name=model)
    assert a["epoch"] == b["epoch"]
    assert_same_tensors(a["model"], b["model"], "model")
    assert_same_tensors(a["optimizer"], b["optimizer"], "optimizer")
    assert_same_tensors(a["rng"], b["rng"], "rng")
    assert (a["best_acc"], a["test_acc"]) == (b["best_acc"], b["test_acc"])
    assert read_metrics(dir_a) == read_metrics(dir_b)


CASES = {
    "lenet-fast": dict(model="lenet", loader="fast"),
    "lenet-tutorial": dict(model="lenet", loader="tutorial"),
    # Dropout draws from the global RNG every step: only a restored RNG state gives the same masks.
    "alexnet_transfer": dict(model="alexnet_transfer", train_samples=48, test_samples=16, batch_size=16,
                             pretrained="off"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_two_epochs_straight_equal_one_then_resume(tmp_path, small_cfg, case):
    kw = dict(CASES[case])
    model = kw["model"]
    straight = small_cfg(**kw, epochs=2, out=str(tmp_path / "straight"))
    fit(straight)
    fit(small_cfg(**kw, epochs=1, out=str(tmp_path / "resumed")))
    first = load_checkpoint(str(tmp_path / "resumed" / model / "last.pt"))
    assert first["epoch"] == 1
    fit(small_cfg(**kw, epochs=2, resume=True, out=str(tmp_path / "resumed")))
    assert_same_run(str(tmp_path / "straight" / model), str(tmp_path / "resumed" / model), model)
    # The second epoch really trained: the weights moved after epoch 1.
    end = load_checkpoint(str(tmp_path / "resumed" / model / "last.pt"))
    assert any(not torch.equal(end["model"][k], first["model"][k]) for k in first["model"])


def test_resume_refuses_changed_settings(tmp_path, small_cfg):
    fit(small_cfg("lenet", epochs=1))
    with pytest.raises(UserError, match="--batch-size 32 differs from the checkpoint"):
        fit(small_cfg("lenet", epochs=2, resume=True, batch_size=32, train_samples=None))
    with pytest.raises(UserError, match="no checkpoint at"):
        fit(small_cfg("mlp", epochs=2, resume=True))


def test_sigkill_anywhere_then_resume_equals_an_uninterrupted_run(tmp_path, small_cfg):
    """Kill -9 at a random moment after the first checkpoint: during a step, an evaluation, the metrics append or
    the checkpoint write. Whatever it hit, --resume must reach the same bits as a run that was never killed."""
    epochs, kw = 6, dict(train_samples=512, test_samples=64)
    killed_dir = tmp_path / "killed"
    args = ["--model", "lenet", "--synthetic", "--device", "cpu", "--epochs", str(epochs), "--train-samples", "512",
            "--test-samples", "64", "--no-progress", "--out", str(killed_dir)]
    last = killed_dir / "lenet" / "last.pt"
    proc = subprocess.Popen(cli_command(*args), cwd=REPO, env=cli_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    delay_s = random.uniform(0.0, 1.5)
    try:
        deadline = time.monotonic() + 120
        while not last.exists():
            assert proc.poll() is None, f"training exited early: {proc.stderr.read()}"
            assert time.monotonic() < deadline, "no checkpoint after 120 s"
            time.sleep(0.02)
        time.sleep(delay_s)
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
        proc.stderr.close()
    done_at_kill = load_checkpoint(str(last))["epoch"]
    note = f"killed {delay_s:.2f} s after the first last.pt, at epoch {done_at_kill} (rc {proc.returncode})"
    print(note)
    assert 1 <= done_at_kill <= epochs, note

    fit(small_cfg("lenet", epochs=epochs, resume=True, out=str(killed_dir), **kw))
    fit(small_cfg("lenet", epochs=epochs, out=str(tmp_path / "straight"), **kw))
    assert_same_run(str(tmp_path / "straight" / "lenet"), str(killed_dir / "lenet"), "lenet")
    epochs_logged = [r["epoch"] for r in read_metrics(str(killed_dir / "lenet"))]
    assert epochs_logged == list(range(1, epochs + 1)), note
