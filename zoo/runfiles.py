"""The files of one run folder (``OUT/MODEL/``) and the repairs a resume makes to them after a kill."""
from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass

from zoo.atomic import atomic_write_text


@dataclass(frozen=True)
class RunPaths:
    run_dir: str
    last: str
    best: str
    metrics: str

    @classmethod
    def of(cls, out: str, model: str) -> RunPaths:
        run_dir = os.path.join(out, model)
        return cls(run_dir, os.path.join(run_dir, "last.pt"), os.path.join(run_dir, "best.pt"),
                   os.path.join(run_dir, "metrics.jsonl"))


def trim_metrics(path: str, done_epochs: int) -> None:
    """Drop metric lines of epochs the checkpoint does not hold (a run killed between the two writes)."""
    if not os.path.exists(path):
        return
    kept = []
    with open(path) as f:
        for line in f:
            try:
                if json.loads(line)["epoch"] <= done_epochs:
                    kept.append(line if line.endswith("\n") else line + "\n")
            except (ValueError, KeyError, TypeError):
                continue  # a torn last line
    atomic_write_text(path, "".join(kept))


def remove_stale_temporaries(run_dir: str) -> None:
    """Temporary files of saves that a SIGKILL interrupted (the targets themselves are intact)."""
    for name in os.listdir(run_dir):
        if name.startswith((".last.pt.", ".best.pt.", ".metrics.jsonl.")) and name.endswith(".tmp"):
            with contextlib.suppress(OSError):
                os.remove(os.path.join(run_dir, name))


def append_line(path: str, record: dict) -> None:
    """One JSON line, appended and fsynced."""
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()
        os.fsync(f.fileno())
