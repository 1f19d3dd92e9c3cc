"""Exact resumption: stopping after an epoch (or being SIGKILLed at any save point) and resuming changes no bit."""
from __future__ import annotations

import json
import os
import signal

import pytest
import torch
from helpers import assert_same_tensors, cli_command, cli_env, finish, spawn

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


# --tune off: the straight, the killed and the resumed run each start fresh, so with the tuner on each would pick its
# own execution choice from timings (a loaded machine can pick channels_last in one and not the other, and the bits
# then differ by float rounding); what these tests check is the checkpoint and resume path, under one choice.
KILL_ARGS = ["--model", "lenet", "--synthetic", "--device", "cpu", "--epochs", "3", "--train-samples", "256",
             "--test-samples", "64", "--no-progress", "--tune", "off"]
# point -> (epoch in last.pt after the kill at epoch 2's save, metrics lines left, whether a temporary file is left)
CRASH_POINTS = {
    "after_metrics_append": (1, [1, 2], False),
    "mid_checkpoint_write": (1, [1, 2], True),
    "after_rename": (2, [1, 2], False),
}


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory):
    """The uninterrupted 3-epoch run every killed-and-resumed run must equal."""
    out = tmp_path_factory.mktemp("straight")
    proc = train(*KILL_ARGS, "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    return str(out / "lenet")


def train(*args: str, **env: str):
    """One ``python -m zoo.train`` child. The uninterrupted, the killed and the resumed run are all children of the
    same command in the same environment, so no setting of this process (threads, oneDNN) can tell them apart."""
    return finish(spawn(cli_command(*args), env=cli_env(**env)), timeout=180)


def temporaries(run_dir) -> list[str]:
    return sorted(n for n in os.listdir(run_dir) if n.endswith(".tmp"))


@pytest.mark.slow
@pytest.mark.parametrize("point", list(CRASH_POINTS))
def test_sigkill_at_a_save_point_then_resume_equals_an_uninterrupted_run(tmp_path, straight_run, point):
    """ZOO_FAULT_AT kills the trainer with SIGKILL at one named point of epoch 2's save; --resume must reach the
    same bits as a run that was never killed, and clean up what the kill left."""
    last_epoch, logged, temp_left = CRASH_POINTS[point]
    run_dir = tmp_path / "killed" / "lenet"
    proc = train(*KILL_ARGS, "--out", str(tmp_path / "killed"), ZOO_FAULT_AT=f"{point}:2")
    assert proc.returncode == -signal.SIGKILL, (proc.returncode, proc.stderr)
    assert "epoch 3/3" not in proc.stdout
    assert load_checkpoint(str(run_dir / "last.pt"))["epoch"] == last_epoch
    assert [r["epoch"] for r in read_metrics(str(run_dir))] == logged
    assert bool(temporaries(run_dir)) == temp_left, temporaries(run_dir)
    if temp_left:  # the kill really landed inside the write: the temporary file holds part of a checkpoint
        assert all(os.path.getsize(run_dir / n) > 0 for n in temporaries(run_dir))

    resumed = train(*KILL_ARGS, "--resume", "--out", str(tmp_path / "killed"))
    assert resumed.returncode == 0, resumed.stderr
    assert_same_run(straight_run, str(run_dir), "lenet")
    assert temporaries(run_dir) == []
    assert [r["epoch"] for r in read_metrics(str(run_dir))] == [1, 2, 3]


def test_a_torn_metrics_line_is_trimmed_on_resume(tmp_path, small_cfg):
    """A kill in the middle of the metrics append leaves half a line; the resume drops it and goes on."""
    fit(small_cfg("lenet", epochs=1))
    run_dir = os.path.join(small_cfg().out, "lenet")
    with open(os.path.join(run_dir, "metrics.jsonl"), "a") as f:
        f.write('{"epoch": 2, "train_loss": 0.5')
    fit(small_cfg("lenet", epochs=2, resume=True))
    assert [r["epoch"] for r in read_metrics(run_dir)] == [1, 2]


def test_a_stale_temporary_file_is_removed_on_restart(tmp_path, small_cfg):
    fit(small_cfg("lenet", epochs=1))
    run_dir = os.path.join(small_cfg().out, "lenet")
    stale = os.path.join(run_dir, ".last.pt.abc123.tmp")
    with open(stale, "wb") as f:
        f.write(b"half a checkpoint")
    fit(small_cfg("lenet", epochs=2, resume=True))
    assert temporaries(run_dir) == [] and load_checkpoint(os.path.join(run_dir, "last.pt"))["epoch"] == 2
