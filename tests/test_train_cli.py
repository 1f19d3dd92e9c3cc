"""``python -m zoo.train`` as a user runs it: exit codes, one-line errors, the files a run writes.

Every scenario is a real subprocess. Each one pays the interpreter + torch import (seconds on a small machine), so
the module runs them in two concurrent waves from one fixture: the independent ones, then those that need a finished
run to start from. The tests then only read the results.
"""
from __future__ import annotations

import glob
import json
import math
import os
import shutil
import subprocess
from types import SimpleNamespace

import pytest
import torch
from helpers import assert_one_line_error, cli_command, cli_env, finish, kill_group, spawn

import zoo
from zoo.checkpoint import load_checkpoint
from zoo.data import make_loaders
from zoo.engine import StepOptions, build_optimizer, train_step

# Every test here reads the results of one module fixture that runs ~13 CLI subprocesses (tens of seconds).
pytestmark = pytest.mark.slow

TINY = ["--synthetic", "--device", "cpu", "--train-samples", "256", "--test-samples", "64", "--no-progress"]
METRIC_KEYS = {"epoch", "train_loss", "train_acc", "test_loss", "test_acc", "samples_per_s", "lr", "seconds"}


def run_many(scenarios: dict[str, list[str]]) -> dict[str, subprocess.CompletedProcess]:
    """Run ``python -m zoo.train ARGS`` for every scenario at once; wait for all."""
    env = cli_env(OMP_NUM_THREADS="1")  # many processes share few cores: no oversubscribed thread pools
    procs = {name: spawn(cli_command(*args), env=env) for name, args in scenarios.items()}
    try:
        return {name: finish(p, timeout=300) for name, p in procs.items()}
    finally:
        for p in procs.values():
            if p.poll() is None:
                kill_group(p)


def file_bytes(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


@pytest.fixture(scope="module")
def cli(tmp_path_factory):
    base = tmp_path_factory.mktemp("cli")
    out = lambda name: str(base / name)  # noqa: E731
    empty = base / "empty_data"
    empty.mkdir()
    first = run_many({
        "good": ["--model", "mlp", "--epochs", "2", "--out", out("good"), *TINY],
        "help": ["--help"],
        "unknown_model": ["--model", "resnet50", "--out", out("x"), *TINY],
        "no_model": ["--synthetic"],
        "cuda": ["--model", "mlp", "--out", out("x"), *TINY[:1], "--device", "cuda"],
        "missing_data": ["--model", "lenet", "--device", "cpu", "--data-root", str(empty), "--out", out("x")],
        "epochs_0": ["--model", "mlp", "--epochs", "0", "--out", out("x"), *TINY],
        "batch_neg": ["--model", "mlp", "--batch-size", "-1", "--out", out("x"), *TINY],
        "lr_nan": ["--model", "mlp", "--lr", "nan", "--out", out("x"), *TINY],
    })
    good = first["good"]
    assert good.returncode == 0, good.stderr
    # Start each stateful scenario from its own copy of the finished 2-epoch run.
    for name in ("done", "exists", "truncated", "nan"):
        shutil.copytree(out("good"), out(name))
    truncated_last = os.path.join(out("truncated"), "mlp", "last.pt")
    with open(truncated_last, "r+b") as f:
        f.truncate(os.path.getsize(truncated_last) // 2)
    before = {name: {f: file_bytes(os.path.join(out(name), "mlp", f)) for f in ("last.pt", "best.pt", "metrics.jsonl")}
              for name in ("done", "exists", "truncated", "nan")}
    second = run_many({
        "done": ["--model", "mlp", "--epochs", "2", "--resume", "--out", out("done"), *TINY],
        "exists": ["--model", "mlp", "--epochs", "3", "--out", out("exists"), *TINY],
        "truncated": ["--model", "mlp", "--epochs", "3", "--resume", "--out", out("truncated"), *TINY],
        # A learning rate that blows up within the first epoch, over a good finished run.
        "nan": ["--model", "mlp", "--epochs", "2", "--overwrite", "--lr", "1e6", "--out", out("nan"), *TINY],
    })
    return SimpleNamespace(runs={**first, **second}, dir=lambda name: os.path.join(out(name), "mlp"), before=before)


def test_help(cli):
    proc = cli.runs["help"]
    assert proc.returncode == 0 and "Traceback" not in proc.stderr
    for flag in ("--model", "--resume", "--synthetic", "--epochs", "--device", "--pretrained", "--train-samples"):
        assert flag in proc.stdout


def test_unknown_model_is_one_line_with_choices(cli):
    proc = cli.runs["unknown_model"]
    assert proc.returncode == 2
    assert_one_line_error(proc, "resnet50", *zoo.list_models())


def test_no_model_is_one_line(cli):
    proc = cli.runs["no_model"]
    assert proc.returncode == 2
    assert_one_line_error(proc, "--model", "lenet")


def test_cuda_on_a_machine_without_it(cli):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: --device cuda is valid here")
    proc = cli.runs["cuda"]
    assert proc.returncode == 2
    assert_one_line_error(proc, "cuda")


def test_missing_dataset_names_the_folder(cli):
    proc = cli.runs["missing_data"]
    line = assert_one_line_error(proc, os.path.join("empty_data", "MNIST", "raw"))
    assert "--download" in line and "--synthetic" in line


@pytest.mark.parametrize("scenario, flag", [("epochs_0", "--epochs"), ("batch_neg", "--batch-size"),
                                            ("lr_nan", "--lr")])
def test_bad_values_exit_2(cli, scenario, flag):
    proc = cli.runs[scenario]
    assert proc.returncode == 2
    assert_one_line_error(proc, flag)


def test_successful_run_writes_metrics_checkpoints_and_tensorboard(cli):
    run_dir = cli.dir("good")
    assert sorted(os.listdir(run_dir)) == ["best.pt", "last.pt", "metrics.jsonl", "tb"]  # and no temp files
    lines = open(os.path.join(run_dir, "metrics.jsonl")).read().splitlines()
    assert len(lines) == 2
    records = [json.loads(line) for line in lines]
    for epoch, rec in enumerate(records, start=1):
        assert METRIC_KEYS <= set(rec), METRIC_KEYS - set(rec)
        assert rec["epoch"] == epoch and rec["lr"] == zoo.get_spec("mlp").recipe.lr
        assert all(math.isfinite(rec[k]) for k in METRIC_KEYS)
        assert 0 <= rec["train_acc"] <= 1 and 0 <= rec["test_acc"] <= 1 and rec["samples_per_s"] > 0
        assert rec["data"] == "synthetic" and rec["pretrained"] is False
    last = load_checkpoint(os.path.join(run_dir, "last.pt"), model_name="mlp")
    assert last["epoch"] == 2 and last["test_acc"] == records[1]["test_acc"]
    best = load_checkpoint(os.path.join(run_dir, "best.pt"), model_name="mlp")
    assert best["test_acc"] == max(r["test_acc"] for r in records)
    model = zoo.get_model("mlp")
    model.load_state_dict(last["model"])  # loads into a plain model
    events = glob.glob(os.path.join(run_dir, "tb", "events.out.tfevents.*"))
    assert events and all(os.path.getsize(e) > 0 for e in events)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(os.path.join(run_dir, "tb"))
    acc.Reload()
    test_acc = acc.Scalars("test/acc")
    assert [e.step for e in test_acc] == [1, 2]
    assert [e.value for e in test_acc] == pytest.approx([r["test_acc"] for r in records])
    assert "epoch 2/2" in cli.runs["good"].stdout


def test_asking_for_epochs_already_done_is_a_note(cli):
    proc = cli.runs["done"]
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr and "2 epochs already done" in proc.stderr
    for name, data in cli.before["done"].items():
        assert file_bytes(os.path.join(cli.dir("done"), name)) == data, name


def test_existing_checkpoint_without_resume_is_refused(cli):
    proc = cli.runs["exists"]
    assert proc.returncode == 2
    assert_one_line_error(proc, "last.pt exists", "--resume", "--overwrite")
    for name, data in cli.before["exists"].items():
        assert file_bytes(os.path.join(cli.dir("exists"), name)) == data, name


def test_truncated_checkpoint_with_resume_is_refused_and_kept(cli):
    proc = cli.runs["truncated"]
    assert proc.returncode != 0
    assert_one_line_error(proc, "last.pt", "truncated")
    assert file_bytes(os.path.join(cli.dir("truncated"), "last.pt")) == cli.before["truncated"]["last.pt"]


def first_non_finite_step() -> int:
    """Where mlp with lr 1e6 diverges, found independently with the same seed, data and order (1-based)."""
    spec = zoo.get_spec("mlp")
    torch.manual_seed(0)  # the CLI's --seed default, set before the model is built
    model = zoo.get_model("mlp")
    opt = build_optimizer(spec.recipe, model, lr=1e6)
    data = make_loaders(spec, synthetic=True, train_samples=256, test_samples=64, seed=0)
    for step, (x, y) in enumerate(data.train.batches(0), start=1):
        if not torch.isfinite(train_step(model, opt, x, y, StepOptions(torch.device("cpu")))):
            return step
    raise AssertionError("lr 1e6 did not diverge in epoch 1: pick a bigger one")


def test_non_finite_loss_stops_naming_epoch_and_step_and_keeps_the_good_checkpoint(cli):
    proc = cli.runs["nan"]
    assert proc.returncode not in (0, 1) and "Traceback" not in proc.stderr, proc.stderr
    last_line = proc.stderr.strip().splitlines()[-1]
    assert f"non-finite loss at epoch 1, step {first_non_finite_step()}" in last_line, last_line
    for name in ("last.pt", "best.pt"):
        assert file_bytes(os.path.join(cli.dir("nan"), name)) == cli.before["nan"][name], name


def test_non_finite_run_keeps_the_log_of_the_kept_checkpoint(cli):
    """After the failed --overwrite run, last.pt is still the old run's epoch 2: its metrics must still be there."""
    path = os.path.join(cli.dir("nan"), "metrics.jsonl")
    assert os.path.exists(path), "metrics.jsonl of the kept last.pt was deleted by the failed --overwrite run"
    assert file_bytes(path) == cli.before["nan"]["metrics.jsonl"]
