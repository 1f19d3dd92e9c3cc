"""The bench.run command line: argument errors, device handling, a real tiny run. (The driver's behaviour on fake
phases is in test_bench_run.py.)"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from bench import run
from bench.phases.base import Phase
from bench.records import BACKEND_NAMES, TrainRecord
from zoo.errors import UserError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _python(*args, timeout=120):
    return subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=timeout)


def _one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: ") and "Traceback" not in stderr
    return lines[0]


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_device_cuda_without_cuda_is_one_line_exit_2(tmp_path):
    proc = _python("-m", "bench.run", "--device", "cuda:1", "--models", "mlp", "--synthetic", "--out", str(tmp_path))
    assert proc.returncode == 2
    assert "cuda" in _one_error_line(proc.stderr).lower()
    assert not os.listdir(tmp_path)  # nothing measured, nothing written


class _NoopPhase(Phase):
    name, record_type = "train", TrainRecord

    def planned_rows(self, name, ctx):
        return 0

    def run(self, session, ctx):
        return []


FAKE_PHASES = {"train": _NoopPhase()}


@pytest.mark.parametrize("argv, expect", [
    (["--models", "mlp,resnet9000"], "choose from: mlp, lenet"),
    (["--models", ","], "--models is empty"),
    (["--phases", "train,warp"], "unknown phase 'warp'; choose from: train"),
    (["--backends", "eager,warp9"], "unknown backend 'warp9'"),
    (["--backends", "eager:fp8"], "unknown precision 'fp8' in backend 'eager:fp8'"),
    (["--backends", ""], "--backends is empty"),
    (["--batch-sizes", "1,x"], "--batch-sizes"),
    (["--batch-sizes", "0"], "--batch-sizes"),
    (["--batch-sizes", ","], "--batch-sizes"),
    (["--precisions", "fp8"], "unknown precision 'fp8'"),
    (["--train-variants", "channels_first"], "unknown training variant"),
    (["--threads", "0"], "--threads must be a positive integer"),
    (["--tta-target", "mlp=2"], "the accuracy is a fraction in (0, 1]"),
    (["--tta-target", "mlp"], "expected MODEL=ACCURACY"),
    (["--tta-target", "nosuchnet=0.5"], "unknown model 'nosuchnet'"),
    (["--threads", "two"], "--threads: invalid int value"),
    (["--budget", "-5"], "--budget must be a positive number"),
    (["--budget", "soon"], "--budget must be a positive number"),
    (["--budget", "inf"], "--budget must be a positive number"),
    (["--max-procs", "0"], "--max-procs must be a positive integer"),
    (["--precision", "0"], "--precision must be a percent between 0 and 100"),
    (["--precision", "nan"], "--precision must be a percent between 0 and 100"),
    (["--precision", "five"], "--precision: invalid float value"),
    (["--device", "tpu"], "unknown device 'tpu'"),
    (["--data-root", "/nonexistent/data"], "--data-root"),
    (["--checkpoints", "/nonexistent/runs"], "--checkpoints"),
    (["--data-root", "data", "--synthetic"], "not allowed with argument"),
    (["--bogus-flag"], "unrecognized arguments"),
    (["--out", "/dev/null/results"], "--out"),
])
def test_bad_arguments_are_one_line_exit_2(tmp_path, capsys, argv, expect):
    assert run.main(["--device", "cpu", "--out", str(tmp_path), *argv], phases=FAKE_PHASES,
                    probe=lambda ctx, env: None) == 2
    assert expect in _one_error_line(capsys.readouterr().err)
    assert not os.listdir(tmp_path)  # validated before anything is measured or written


def test_every_registered_backend_selector_is_accepted_and_others_are_named():
    from bench.backends import BACKENDS
    from bench.plan import pick_backends

    assert pick_backends(",".join(BACKENDS), torch.device("cpu"), quick=False)[0] == list(BACKENDS)
    missing = [name for name in BACKEND_NAMES if not any(key.partition(":")[0] == name for key in BACKENDS)]
    if missing:  # a backend the record vocabulary names but this checkout does not implement: unknown, exit 2
        with pytest.raises(UserError, match=f"unknown backend '{missing[0]}'"):
            pick_backends(missing[0], torch.device("cpu"), quick=False)


def test_cuda_index_is_checked_and_made_current(monkeypatch):
    """The CUDA bookkeeping of --device cuda:N, run on any machine with CUDA's answers stubbed."""
    from bench.plan import pick_device

    current = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_device", current.append)
    assert pick_device("cuda:1") == torch.device("cuda", 1) and current == [1]
    assert pick_device("cuda") == torch.device("cuda", 0) and current == [1, 0]
    with pytest.raises(UserError, match=r"2 CUDA device\(s\)"):
        pick_device("cuda:2")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_device_is_current_for_the_whole_run(tmp_path):
    seen = {}

    class Probe(_NoopPhase):
        def run(self, session, ctx):
            seen["current"] = torch.cuda.current_device()
            seen["param_device"] = next(session.model.parameters()).device
            return []

    last = torch.cuda.device_count() - 1
    out = str(tmp_path / "res")
    assert run.main(["--device", f"cuda:{last}", "--models", "mlp", "--synthetic", "--out", out],
                    phases={"train": Probe()}, probe=lambda ctx, env: None) == 0
    assert seen == {"current": last, "param_device": torch.device("cuda", last)}
    with open(os.path.join(out, "cuda", "results.json")) as f:
        assert json.load(f)["env"]["device_index"] == last


@pytest.mark.slow
def test_real_tiny_run(tmp_path):
    out = str(tmp_path / "res")
    proc = _python("-m", "bench.run", "--models", "mlp", "--quick", "--synthetic", "--device", "cpu", "--out", out,
                   "--checkpoints", str(tmp_path), timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    for fname in ("results.json", "results.csv", "summary.md"):
        assert os.path.exists(os.path.join(out, "cpu", fname))
    with open(os.path.join(out, "cpu", "results.json")) as f:
        data = json.load(f)
    assert data["env"]["complete"] is True and data["env"]["done_rows"] == len(data["records"])
    model = [r for r in data["records"] if r["phase"] == "model"]
    assert len(model) == 1 and model[0]["params_total"] > 0 and model[0]["flops_per_sample"] > 0
