"""The scaling phase: the ideal each setup is measured against, one thread rule for every N, the launch itself."""
from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
import torch

from bench.context import BenchContext, ModelSession
from bench.measure import hardware, numerics
from bench.phases import scale
from bench.phases.scale import (
    IDEAL_PER_DEVICE,
    IDEAL_SAME_CORES,
    ScalePhase,
    ideal_for,
    pin_this_rank,
    thread_plan,
    worker_command,
)


def test_cpu_ideal_is_one_process_with_the_same_cores():
    label, ideal = ideal_for("cpu", 4, 1000.0)
    assert label == IDEAL_SAME_CORES and ideal == 1000.0  # 4 processes sharing the cores one process had
    assert 1500.0 / ideal == pytest.approx(1.5)


def test_gpu_ideal_is_n_times_one_device():
    label, ideal = ideal_for("cuda", 4, 1000.0)
    assert label == IDEAL_PER_DEVICE and ideal == 4000.0
    assert 3000.0 / ideal == pytest.approx(0.75)
    assert ideal_for("cuda", 2, None) == (IDEAL_PER_DEVICE, None)  # no baseline, no efficiency


def test_cpu_splits_fixed_total_cores_into_disjoint_sets():
    cpus = list(range(8))
    for n in (1, 2, 4, 8):
        share, sets = thread_plan("cpu", n, 8, 8, cpus)
        assert share == 8 // n and len(sets) == n
        flat = [c for s in sets for c in s]
        assert len(flat) == len(set(flat)) == 8  # disjoint, and together the same cores for every N


def test_cuda_gives_every_process_the_same_share_for_every_n():
    cpus = list(range(16))
    plans = [thread_plan("cuda", n, 4, 16, cpus) for n in (1, 2, 4)]
    assert {share for share, _ in plans} == {4}  # the 1-process baseline does not keep all 16 threads
    assert [len(sets) for _, sets in plans] == [1, 2, 4]


def test_too_few_cpus_pins_threads_but_no_sets():
    share, sets = thread_plan("cpu", 2, 2, 8, [0, 1])
    assert share == 4 and sets == []


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_launch_pins_the_same_way_for_every_n(device, tmp_path, monkeypatch):
    """The command and environment differ between N only in the process count, the CPU sets and the share the rule
    gives; the pinning arguments are present for every N alike (N=1 included)."""
    ctx = BenchContext(torch.device("cpu"), quick=True, synthetic=True, checkpoints=None, threads=8)
    ctx.device = torch.device(device, 0) if device == "cuda" else torch.device(device)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)  # a CUDA launch names its GPUs
    shares = []
    for n in (1, 2, 4):
        share, sets = thread_plan(device, n, 4, 8, list(range(8)))
        cmd, env = worker_command("mlp", ctx, n, share, sets, str(tmp_path / "r.json"))
        assert cmd[cmd.index("--threads") + 1] == env["OMP_NUM_THREADS"] == str(share)
        assert cmd[cmd.index("--cpus") + 1].count(";") == n - 1
        assert f"--nproc_per_node={n}" in cmd and cmd[cmd.index("-m", 3) + 1] == "bench.phases.scale"
        shares.append(share)
    assert shares == ([8, 4, 2] if device == "cpu" else [2, 2, 2])


def test_a_budget_shortens_the_windows_down_to_the_floor_and_the_command_carries_them(tmp_path):
    assert scale.window_target_s(False, None, 2) == scale.WINDOW_S[False]
    assert scale.window_target_s(False, 1e4, 2) == scale.WINDOW_S[False]  # a large budget never lengthens them
    # (20 s / 2 launches - LAUNCH_S) over 5 windows + 2: the share left after the launches' fixed cost.
    fit = (20.0 / 2 - scale.LAUNCH_S) / (scale.WINDOWS[False] + 2)
    assert scale.window_target_s(False, 20.0, 2) == pytest.approx(min(fit, scale.WINDOW_S[False]))
    assert scale.window_target_s(False, 3.0, 2) == scale.MIN_WINDOW_S  # less than the launches cost: the floor
    ctx = BenchContext(torch.device("cpu"), synthetic=True, checkpoints=None, threads=2)
    cmd, _ = worker_command("mlp", ctx, 1, 2, [], str(tmp_path / "r.json"), 0.125)
    assert cmd[cmd.index("--target-s") + 1] == "0.125" and cmd[cmd.index("--windows") + 1] == "5"


def test_a_rank_pins_its_threads_and_its_own_cpu_set(monkeypatch):
    calls = []
    monkeypatch.setattr(torch, "set_num_threads", lambda n: calls.append(("threads", n)))
    monkeypatch.setattr(os, "sched_setaffinity", lambda pid, cpus: calls.append(("cpus", cpus)), raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "99")
    pin_this_rank(2, "0,1;2,3", local_rank=1)
    assert calls == [("threads", 2), ("cpus", {2, 3})]
    assert os.environ["OMP_NUM_THREADS"] == "2"


def test_the_worker_agrees_on_window_size_through_broadcast_int():
    """Under nccl a CPU tensor cannot be broadcast: the worker uses the seam that puts it on the rank's device."""
    import inspect

    src = inspect.getsource(scale.worker)
    assert "broadcast_int" in src and "dist.broadcast" not in src


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_hung_launch_is_killed_with_its_whole_process_group(tmp_path):
    marker = tmp_path / "child.pid"
    code = ("import subprocess, sys, time; "
            f"p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
            f"open({str(marker)!r}, 'w').write(str(p.pid)); time.sleep(60)")
    with pytest.raises(subprocess.TimeoutExpired):
        scale.run_worker([sys.executable, "-c", code], dict(os.environ), timeout_s=3)
    child = int(marker.read_text())
    deadline = time.monotonic() + 5
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(child)  # torchrun's ranks would be this grandchild: killed with the group, not orphaned


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for init to reap it counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.slow
def test_real_torchrun_launches_on_cpu():
    numerics.apply_policy("cpu")  # as bench.run's probe_machine does before any phase: the workers' policy too
    ctx = BenchContext(torch.device("cpu"), quick=True, synthetic=True, checkpoints=None, threads=2, max_procs=2)
    rows = ScalePhase().run(ModelSession("mlp", torch.nn.Linear(1, 1)), ctx)
    assert [r.processes for r in rows] == [1, 2]
    for r in rows:
        assert r.ok, r.reason
        assert r.dist_backend == "gloo" and r.ideal == IDEAL_SAME_CORES and len(r.window_rates) == r.windows == 3
    assert rows[0].scaling_efficiency == pytest.approx(1.0)
    assert rows[1].ideal_samples_per_s == rows[0].samples_per_s
    assert rows[1].scaling_efficiency == pytest.approx(rows[1].samples_per_s / rows[0].samples_per_s)
    assert rows[0].threads_per_process == 2 and rows[1].threads_per_process == 1


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (nccl)")
def test_real_torchrun_launch_on_cuda():
    n = torch.cuda.device_count()
    ctx = BenchContext(torch.device("cuda"), quick=True, synthetic=True, checkpoints=None, max_procs=n)
    rows = ScalePhase().run(ModelSession("mlp", torch.nn.Linear(1, 1)), ctx)
    for r in rows:
        assert r.ok, r.reason
        assert r.dist_backend == "nccl" and r.ideal == IDEAL_PER_DEVICE
    assert len({r.threads_per_process for r in rows}) == 1


def test_visible_gpus_put_the_runs_gpu_first():
    assert scale.visible_gpus(1, 1, 4, None) == "1"  # --device cuda:1: the 1-process baseline runs on GPU 1
    assert scale.visible_gpus(3, 1, 4, None) == "1,0,2"
    assert scale.visible_gpus(2, 0, 2, "GPU-aa, GPU-bb") == "GPU-aa,GPU-bb"  # this process's own view, passed on
    assert scale.visible_gpus(2, 1, 2, "3,5") == "5,3"  # torch's cuda:1 here is the machine's GPU 5
    with pytest.raises(ValueError, match="need 3 of 2"):
        scale.visible_gpus(3, 0, 2, None)


def test_cuda_launch_sees_only_its_gpus_the_runs_first(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    ctx = BenchContext(torch.device("cpu"), quick=True, synthetic=True, checkpoints=None, threads=8)
    ctx.device = torch.device("cuda", 2)
    for n, want in ((1, "2"), (2, "2,0"), (4, "2,0,1,3")):
        cmd, env = worker_command("mlp", ctx, n, 2, [], str(tmp_path / "r.json"))
        assert env["CUDA_VISIBLE_DEVICES"] == want
        assert cmd[cmd.index("--device") + 1] == "cuda"  # cuda:0 of the launch's view is the run's GPU
    ctx.device = torch.device("cpu")
    cmd, env = worker_command("mlp", ctx, 2, 1, [], str(tmp_path / "r.json"))
    assert env.get("CUDA_VISIBLE_DEVICES") == os.environ.get("CUDA_VISIBLE_DEVICES")  # CPU launches: untouched


def test_max_procs_above_the_gpu_count_is_a_user_error(monkeypatch):
    from bench.plan import pick_max_procs
    from zoo.errors import UserError

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert pick_max_procs(2, torch.device("cuda", 0)) == 2
    assert pick_max_procs(8, torch.device("cpu")) == 8  # CPU processes share the cores: no such limit
    with pytest.raises(UserError, match="--max-procs 3: .* 2 CUDA device"):
        pick_max_procs(3, torch.device("cuda", 0))


def test_the_worker_applies_the_runs_maths_policy(tmp_path, monkeypatch):
    """A scale rank runs the same maths as every other row: TF32 off, cudnn.benchmark on (PyTorch's defaults
    differ), set in the worker itself and reported back with its windows."""
    import json

    from bench.measure import numerics

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", True)
    torch.backends.cuda.matmul.allow_tf32 = True  # a property: set directly (the worker resets it)
    before = torch.get_num_threads()
    result = tmp_path / "r.json"
    try:
        assert scale.worker(["--model", "mlp", "--device", "cpu", "--batch-size", "8", "--windows", "1",
                             "--target-s", "0.01", "--synthetic", "--threads", "1", "--result", str(result)]) == 0
    finally:
        torch.set_num_threads(before)
        torch.set_float32_matmul_precision("highest")
    got = json.loads(result.read_text())
    assert got["maths"] == numerics.apply_policy("cpu")
    assert torch.backends.cudnn.benchmark is True and torch.backends.cudnn.allow_tf32 is False
    assert len(got["window_rates"]) == 1
    assert got["device"] == "cpu" and scale.worker_mismatch(got, torch.device("cpu")) is None


def test_policy_mismatch_names_each_flag_that_differs():
    mine = numerics.apply_policy("cpu")
    assert numerics.policy_mismatch(dict(mine), numerics.policy_state()) is None
    assert numerics.policy_mismatch({**mine, "device": "cuda:0"}, mine) is None  # the launch's own index: not maths
    theirs = {**mine, "cudnn_allow_tf32": True, "float32_matmul_precision": "high"}
    assert numerics.policy_mismatch(theirs, mine) == \
        "cudnn_allow_tf32=True (this run: False), float32_matmul_precision='high' (this run: 'highest')"
    assert numerics.policy_mismatch(None, mine) == "no maths policy reported"  # an older worker's result
    assert numerics.policy_mismatch({}, mine).count("(this run:") == len(numerics.POLICY_FLAGS)


def test_device_identity_is_the_gpus_uuid_not_its_index(monkeypatch):
    props = {0: type("P", (), {"name": "NVIDIA H100 80GB HBM3", "uuid": "GPU-aaaa"})(),
             1: type("P", (), {"name": "NVIDIA H100 80GB HBM3", "uuid": "GPU-bbbb"})()}
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda d: props[torch.device(d).index])
    assert hardware.device_identity("cuda:1") == "NVIDIA H100 80GB HBM3 GPU-bbbb"
    assert hardware.device_identity(torch.device("cuda", 0)) != hardware.device_identity("cuda:1")  # same model
    assert hardware.device_identity("cpu") == "cpu"


def _fake_launches(monkeypatch, report):
    """run_worker stand-in: each launch writes the result a rank 0 would, ``report(n)`` its maths and device."""
    import json

    launched = []

    def run_worker(cmd, env, timeout_s):
        n = int(next(a for a in cmd if a.startswith("--nproc_per_node=")).split("=")[1])
        maths, device = report(n)
        with open(cmd[cmd.index("--result") + 1], "w") as f:
            json.dump({"window_rates": [100.0 * n] * 3, "steps_per_window": 4, "maths": maths, "device": device}, f)
        launched.append(n)
        return 0, ""

    monkeypatch.setattr(scale, "run_worker", run_worker)
    return launched


def test_a_launch_under_another_policy_or_device_is_a_failed_row_with_the_reason(monkeypatch):
    """The run refuses a scale row whose worker ran other maths (cuDNN TF32 on, PyTorch's default) or on another
    device than the run's: one failed row with a one-line reason, the other rows measured; a refused 1-process row
    is no baseline for the others."""
    policy = numerics.apply_policy("cpu")
    ctx = BenchContext(torch.device("cpu"), quick=True, synthetic=True, checkpoints=None, threads=4, max_procs=4)
    session = ModelSession("mlp", torch.nn.Linear(1, 1))
    launched = _fake_launches(monkeypatch, lambda n: ({**policy, "cudnn_allow_tf32": True} if n == 2 else policy,
                                                      "NVIDIA A100 GPU-cccc" if n == 4 else "cpu"))
    rows = ScalePhase().run(session, ctx)
    assert launched == [1, 2, 4] and [r.processes for r in rows] == [1, 2, 4]
    ok, tf32, gpu = rows
    assert ok.ok and ok.samples_per_s == pytest.approx(100.0)
    assert tf32.status == "failed" and tf32.samples_per_s is None and "\n" not in tf32.reason
    assert tf32.reason == "the worker ran under another maths policy: cudnn_allow_tf32=True (this run: False)"
    assert gpu.status == "failed" and gpu.reason == "the worker ran on 'NVIDIA A100 GPU-cccc', not the run's device 'cpu'"
    assert tf32.processes == 2 and tf32.dist_backend == "gloo"  # the key fields stay: the row is in the tables

    _fake_launches(monkeypatch, lambda n: ({**policy, "cudnn_benchmark": False} if n == 1 else policy, "cpu"))
    base, two, four = ScalePhase().run(session, ctx)
    assert not base.ok and "cudnn_benchmark=False" in base.reason
    assert two.ok and two.ideal_samples_per_s is None and two.scaling_efficiency is None  # no baseline to divide by


@pytest.mark.slow
def test_real_gloo_launch_under_another_policy_than_the_parents_is_refused():
    """Real torchrun ranks (gloo) apply the run's policy; a parent that runs other maths (cuDNN TF32 on) refuses
    their rows rather than putting them beside its own."""
    numerics.apply_policy("cpu")
    torch.backends.cudnn.allow_tf32 = True  # the parent now runs PyTorch's default, the workers the policy
    try:
        ctx = BenchContext(torch.device("cpu"), quick=True, synthetic=True, checkpoints=None, threads=2, max_procs=2)
        rows = ScalePhase().run(ModelSession("mlp", torch.nn.Linear(1, 1)), ctx)
    finally:
        numerics.apply_policy("cpu")
    assert [r.processes for r in rows] == [1, 2]
    for r in rows:
        assert r.status == "failed" and r.samples_per_s is None
        assert r.reason == "the worker ran under another maths policy: cudnn_allow_tf32=False (this run: True)"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_device_identity_survives_the_launchs_renumbering():
    """A launch sees the run's GPU as cuda:0 (CUDA_VISIBLE_DEVICES); its identity is the same GPU's as the run's."""
    count = torch.cuda.device_count()
    last = count - 1
    env = dict(os.environ, CUDA_VISIBLE_DEVICES=scale.visible_gpus(1, last, count, os.environ.get("CUDA_VISIBLE_DEVICES")))
    code = "from bench.measure.hardware import device_identity; print(device_identity('cuda'))"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == hardware.device_identity(f"cuda:{last}")
    if count > 1:
        assert hardware.device_identity("cuda:0") != hardware.device_identity(f"cuda:{last}")
