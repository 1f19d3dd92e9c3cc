"""DistributedDataParallel on CPU (gloo) through torchrun: two ranks train one model; rank 0 writes the files."""
from __future__ import annotations

import json
import os
import re
import shutil
import sys
import textwrap

import pytest
import torch
from helpers import assert_same_tensors, cli_env, finish, kill_group, spawn

import zoo
from zoo.checkpoint import load_checkpoint
from zoo.data import make_loaders
from zoo.engine import StepOptions, build_optimizer, train_step
from zoo.errors import UserError
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

    def spy(recipe, model, *args, **kwargs):
        seen["model"] = model
        return real(recipe, model, *args, **kwargs)

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
        "plain": spawn([*TORCHRUN, "-m", "zoo.train", *ARGS, "--out", str(plain)], env=env),
        "spied": spawn([*TORCHRUN, str(spy_script), str(spied), *ARGS, "--out", str(spied)], env=env),
    }
    try:
        done = {name: finish(p, timeout=300) for name, p in procs.items()}
    finally:
        for p in procs.values():
            if p.poll() is None:
                kill_group(p)
    return done, str(plain / "lenet"), str(spied)


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
def test_a_batch_that_does_not_split_over_the_ranks_is_one_line(tmp_path):
    args = [a if a != "2" else "1" for a in ARGS]  # one epoch is enough to fail
    proc = finish(spawn([*TORCHRUN, "-m", "zoo.train", *args, "--batch-size", "63", "--out", str(tmp_path)],
                        env=cli_env(OMP_NUM_THREADS="1")))
    assert proc.returncode != 0
    assert "error: batch size 63 does not split evenly over 2 processes" in proc.stderr
    assert not (tmp_path / "lenet" / "last.pt").exists()


@pytest.mark.slow
def test_ddp_resume_of_a_single_process_checkpoint(tmp_path, small_cfg):
    """A single-process run continues under a 2-process torchrun: same files, and the weights of a run that was
    single-process throughout, up to the all-reduce's float rounding."""
    kw = dict(train_samples=512, test_samples=128)
    fit(small_cfg("lenet", epochs=1, out=str(tmp_path / "mixed"), **kw))
    proc = finish(spawn([*TORCHRUN, "-m", "zoo.train", *ARGS, "--resume", "--out", str(tmp_path / "mixed")],
                        env=cli_env(OMP_NUM_THREADS="1")))
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout.count("lenet epoch 2/2") == 1
    run_dir = tmp_path / "mixed" / "lenet"
    with open(run_dir / "metrics.jsonl") as f:
        assert [(r["epoch"], r["world_size"]) for r in map(json.loads, f)] == [(1, 1), (2, 2)]
    resumed = load_checkpoint(str(run_dir / "last.pt"), model_name="lenet")
    assert resumed["epoch"] == 2 and resumed["world_size"] == 2
    fit(small_cfg("lenet", epochs=2, out=str(tmp_path / "single"), **kw))
    single = load_checkpoint(str(tmp_path / "single" / "lenet" / "last.pt"))["model"]
    for key in single:
        assert torch.allclose(single[key], resumed["model"][key], rtol=0, atol=1e-4), key


@pytest.mark.slow
def test_a_bad_argument_under_torchrun_is_one_error_line_per_worker(tmp_path):
    """Both workers reject the flag before joining a process group and exit 2. torchrun's launcher then prints its
    own ChildFailedError traceback, which no worker can prevent short of exiting 0. --monitor-interval gives the
    slower worker time to print before the launcher SIGTERMs it (the default 0.1 s polling can beat it)."""
    torchrun = [*TORCHRUN[:3], "--monitor-interval=5", *TORCHRUN[3:]]
    proc = finish(spawn([*torchrun, "-m", "zoo.train", *ARGS, "--lr", "-1", "--out", str(tmp_path)],
                        env=cli_env(OMP_NUM_THREADS="1")))
    assert proc.returncode != 0
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert errors == ["error: --lr must be a positive number, not -1.0"] * 2, proc.stderr
    # The root cause torchrun reports is the workers' user-error exit code, not a crash or a signal.
    assert re.search(r"exitcode\s*:\s*2\b", proc.stderr), proc.stderr
    assert proc.stderr.count("Traceback (most recent call last)") <= 1  # the launcher's, never a worker's
    assert not (tmp_path / "lenet").exists()


@pytest.mark.parametrize("bad", [dict(lr=-1.0), dict(batch_size=63), dict(resume=True), dict(epochs=0)])
def test_user_errors_are_raised_before_joining_a_process_group(monkeypatch, small_cfg, bad):
    """A rank that fails after init_process_group can leave the others waiting in a collective: every user error
    must come first."""
    import zoo.distributed

    def joined(device):
        raise AssertionError("joined a process group before validating the arguments")

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setattr(zoo.distributed, "init_distributed", joined)
    with pytest.raises(UserError):
        fit(small_cfg("lenet", **bad))
