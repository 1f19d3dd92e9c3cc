"""Ctrl-C during ``python -m zoo.train``: a prompt exit 130, one note instead of a traceback, last.pt intact."""
from __future__ import annotations

import os
import signal
import time

import pytest
from helpers import cli_command, cli_env, finish, kill_group, spawn

from zoo.checkpoint import load_checkpoint


@pytest.mark.slow
def test_sigint_exits_130_promptly_and_keeps_a_completed_epoch(tmp_path):
    args = ["--model", "lenet", "--synthetic", "--device", "cpu", "--epochs", "200", "--train-samples", "1024",
            "--test-samples", "64", "--no-progress", "--out", str(tmp_path)]
    last = tmp_path / "lenet" / "last.pt"
    proc = spawn(cli_command(*args), env=cli_env())
    try:
        deadline = time.monotonic() + 120
        while not last.exists():
            assert proc.poll() is None, f"training ended before its first checkpoint: {proc.communicate()}"
            assert time.monotonic() < deadline, "no last.pt after 120 s"
            time.sleep(0.05)
        time.sleep(0.3)  # into the next epoch's steps
        sent = time.monotonic()
        os.kill(proc.pid, signal.SIGINT)
        done = finish(proc, timeout=30)
        waited = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            kill_group(proc)
    assert done.returncode == 130, (done.returncode, done.stderr)
    assert waited < 10, f"took {waited:.1f} s to stop"
    assert "Traceback" not in done.stderr and "Traceback" not in done.stdout, done.stderr
    assert "interrupted" in done.stderr.strip().splitlines()[-1]
    ckpt = load_checkpoint(str(last), model_name="lenet")
    assert 1 <= ckpt["epoch"] < 200
    assert not [n for n in os.listdir(tmp_path / "lenet") if n.endswith(".tmp")]
