"""One bench.run per results folder: ``OUT/<device>.lock`` holds the pid (and start time) of the run writing
``OUT/<device>/``; a second run is refused before it measures anything, and a lock left by a run that no longer
exists (killed, crashed, or a pid since reused by another process) is taken over.

The lock file is written whole under a temporary name and hard-linked into place, so it is created atomically and
never seen half-written: of two runs starting together exactly one gets it.
"""
from __future__ import annotations

import contextlib
import os

import psutil

from zoo.errors import UserError

START_TOLERANCE_S = 2.0  # a recorded start time this close to the live process's is the same process


class LockHeld(UserError):
    """Another live bench.run holds the folder."""


def lock_path(dev_dir: str) -> str:
    return os.path.normpath(dev_dir) + ".lock"


def _started(pid: int) -> float | None:
    try:
        return psutil.Process(pid).create_time()
    except (psutil.NoSuchProcess, psutil.AccessDenied, ValueError):
        return None


def holder(path: str) -> tuple[int, float] | None:
    """(pid, start time) recorded in a lock file; None when absent or unreadable."""
    try:
        with open(path) as f:
            pid, started = f.read().split()[:2]
        return int(pid), float(started)
    except (OSError, ValueError):
        return None


def alive(pid: int, started: float) -> bool:
    """Whether the recorded process still runs (a live pid started at another time is another process)."""
    if pid == os.getpid():
        return True
    now = _started(pid)
    return now is not None and abs(now - started) <= START_TOLERANCE_S


class RunLock:
    """``with RunLock(dev_dir):`` holds OUT/<device> for this process; LockHeld (exit 2) when another run does."""

    def __init__(self, dev_dir: str):
        self.dev_dir, self.path = dev_dir, lock_path(dev_dir)
        self.held = False
        self.took_over: int | None = None  # the pid of a stale lock taken over

    def acquire(self) -> RunLock:
        me = f"{os.getpid()} {_started(os.getpid()) or 0.0}\n"
        tmp = f"{self.path}.{os.getpid()}.tmp"
        with open(tmp, "w") as f:
            f.write(me)
        try:
            for _ in range(3):
                try:
                    os.link(tmp, self.path)
                    self.held = True
                    return self
                except FileExistsError:
                    found = holder(self.path)
                    if found and alive(*found):
                        raise LockHeld(f"another bench.run (pid {found[0]}) is writing {self.dev_dir}/") from None
                    self.took_over = found[0] if found else None
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(self.path)  # stale: its process is gone
            raise LockHeld(f"another bench.run keeps taking {self.path}")
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)

    def release(self) -> None:
        if self.held and holder(self.path) and holder(self.path)[0] == os.getpid():
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
        self.held = False

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
