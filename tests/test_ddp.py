"""DistributedDataParallel on CPU (gloo) through torchrun: two ranks train one model; rank 0 writes the files."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap

import pytest
import torch
from helpers import REPO, assert_same_tensors, cli_env

import zoo
from zoo.checkpoint import load_checkpoint
from zoo.data import make_loaders
from zoo.engine import StepOptions, build_optimizer, train_step
from zoo.loop import fit

ARGS = ["--model", "lenet", "--device", "cpu", "--synthetic", "--train-samples", "512", "--test-samples", "128",
        "--epochs", "2", "--no-progress"]
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]

# Runs `python -m zoo.train` exactly as -m does (runpy, as __main__), after wrapping zoo.engine.build_optimizer so
# that the model each rank builds and trains is seen; when main() returns, every rank saves that model's weights.
# zoo.loop binds build_optimizer at import, so the wrapper is in place before the module runs.
SPY = textwrap.dedent("""
    import os, runpy, sys
    import torch
    import zoo.engine

    seen = {}
    real = zoo.engine.build_optimizer

    def spy(recipe, model, lr=None):
        seen["model"] = model
        return real(recipe, model, lr)

    zoo.engine.build_optimizer = spy
    out = sys.argv.pop(1)
    try:
        runpy.run_module("zoo.train", run_name="__main__", alter_sys=True)
    finally:
        rank = os.environ["RANK"]
        torch.save(seen["model"].state_dict(), os.path.join(out, f"rank{rank}.pt"))
""")


@pytest.fixture(scope="module")
def ddp(tmp_path_factory):
    """The plain torchrun command and the observed one, run side by side."""
    base = tmp_path_factory.mktemp("ddp")
    plain, spied = base / "plain", base / "spied"
    spied.mkdir()
    spy_script = base / "spy.py"
    spy_script.write_text(SPY)
    env = cli_env(OMP_NUM_THREADS="1")  # torchrun would set it too; saying it keeps its banner off stderr
    procs = {
        "plain": subprocess.Popen([*TORCHRUN, "-m", "zoo.train", *ARGS, "--out", str(plain)], cwd=REPO, env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True),
        "spied": subprocess.Popen([*TORCHRUN, str(spy_script), str(spied), *ARGS, "--out", str(spied)], cwd=REPO,
                                  env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True),
    }
    done = {}
    for name, p in procs.items():
        out, err = p.communicate(timeout=300)
        done[name] = subprocess.CompletedProcess(p.args, p.returncode, out, err)
    return done, str(plain / "lenet"), str(spied)


def test_torchrun_trains_and_rank0_writes_the_files(ddp):
    runs, run_dir, _ = ddp
    proc = runs["plain"]
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert sorted(os.listdir(run_dir)) == ["best.pt", "last.pt", "metrics.jsonl", "tb"]
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        records = [json.loads(line) for line in f]
    assert [r["epoch"] for r in records] == [1, 2]  # one line per epoch: rank 1 wrote none
    assert all(r["world_size"] == 2 for r in records)
    assert proc.stdout.count("lenet epoch 2/2") == 1  # only rank 0 reports
    ckpt = load_checkpoint(os.path.join(run_dir, "last.pt"), model_name="lenet")
    assert ckpt["epoch"] == 2 and ckpt["world_size"] == 2
    model = zoo.get_model("lenet")
    model.load_state_dict(ckpt["model"])  # no "module." prefix: the unwrapped model was saved
    assert torch.isfinite(torch.cat([p.flatten() for p in model.parameters()])).all()


def test_both_ranks_end_with_identical_weights(ddp):
    runs, _, spied = ddp
    proc = runs["spied"]
    assert proc.returncode == 0, proc.stderr
    rank0 = torch.load(os.path.join(spied, "rank0.pt"), weights_only=True)
    rank1 = torch.load(os.path.join(spied, "rank1.pt"), weights_only=True)
    assert_same_tensors(rank0, rank1, "rank0 vs rank1")
    ckpt = load_checkpoint(os.path.join(spied, "lenet", "last.pt"), model_name="lenet")
    assert_same_tensors(ckpt["model"], rank0, "last.pt vs rank0")
    # Observing changed nothing: the spied run and the plain one end with the same weights.
    plain = load_checkpoint(os.path.join(ddp[1], "last.pt"))
    assert_same_tensors(plain["model"], ckpt["model"], "plain vs spied")


def test_single_process_resume_of_a_ddp_checkpoint(ddp, tmp_path, small_cfg):
    """A DDP run resumes on one process, from exactly the DDP weights, optimizer state and RNG."""
    runs, run_dir, _ = ddp
    assert runs["plain"].returncode == 0, runs["plain"].stderr
    out = tmp_path / "resume"
    shutil.copytree(run_dir, out / "lenet")
    ddp_state = load_checkpoint(str(out / "lenet" / "last.pt"))
    result = fit(small_cfg("lenet", epochs=3, resume=True, train_samples=512, test_samples=128, out=str(out)))
    assert result["epoch"] == 3 and result["world_size"] == 1
    with open(out / "lenet" / "metrics.jsonl") as f:
        assert [json.loads(line)["world_size"] for line in f] == [2, 2, 1]
    resumed = load_checkpoint(str(out / "lenet" / "last.pt"))

    # The same epoch by hand from the DDP checkpoint, one process, the loop's data order for epoch index 2.
    spec = zoo.get_spec("lenet")
    model = zoo.get_model("lenet")
    model.load_state_dict(ddp_state["model"])
    opt = build_optimizer(spec.recipe, model)
    opt.load_state_dict(ddp_state["optimizer"])
    torch.set_rng_state(ddp_state["rng"]["torch"])
    data = make_loaders(spec, synthetic=True, train_samples=512, test_samples=128, seed=0)
    model.train()
    for x, y in data.train.batches(2):
        train_step(model, opt, x, y, StepOptions(torch.device("cpu")))
    assert_same_tensors(resumed["model"], model.state_dict(), "resumed vs by hand")
    assert_same_tensors(resumed["optimizer"], opt.state_dict(), "optimizer")


def test_ddp_reproduces_the_single_process_run(ddp, tmp_path, small_cfg):
    """The recipe's batch is the global batch: two ranks of 32 take the same steps as one process of 64, so the
    weights agree up to the order of float additions in the gradient all-reduce."""
    runs, run_dir, _ = ddp
    assert runs["plain"].returncode == 0, runs["plain"].stderr
    fit(small_cfg("lenet", epochs=2, train_samples=512, test_samples=128, out=str(tmp_path)))
    single = load_checkpoint(str(tmp_path / "lenet" / "last.pt"))["model"]
    distributed = load_checkpoint(os.path.join(run_dir, "last.pt"))["model"]
    for key in single:
        assert torch.allclose(single[key], distributed[key], rtol=0, atol=1e-4), key


def test_a_batch_that_does_not_split_over_the_ranks_is_one_line(tmp_path):
    args = [a if a != "2" else "1" for a in ARGS]  # one epoch is enough to fail
    proc = subprocess.run([*TORCHRUN, "-m", "zoo.train", *args, "--batch-size", "63", "--out", str(tmp_path)],
                          cwd=REPO, env=cli_env(OMP_NUM_THREADS="1"), capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert "error: batch size 63 does not split evenly over 2 processes" in proc.stderr
    assert not (tmp_path / "lenet" / "last.pt").exists()
