"""Deterministic crash points for the tests: ``ZOO_FAULT_AT=<point>[:<epoch>]`` SIGKILLs the process there.

Test-only. Points (``epoch`` is the 1-based epoch being saved; without ``:<epoch>`` the first time the point is hit):
- ``after_metrics_append``: the epoch's metrics line is written, ``last.pt`` is not yet;
- ``mid_checkpoint_write``: part of ``last.pt``'s temporary file is written, before its fsync and rename;
- ``after_rename``: ``last.pt`` is replaced, before ``best.pt`` and before the next epoch.
Unset, the hook is one dictionary lookup.
"""
from __future__ import annotations

import os
import signal

ENV = "ZOO_FAULT_AT"
POINTS = ("after_metrics_append", "mid_checkpoint_write", "after_rename")


def maybe_crash(point: str, epoch: int | None = None) -> None:
    """SIGKILL this process if ``ZOO_FAULT_AT`` names ``point`` (and ``epoch``, when it gives one)."""
    wanted = os.environ.get(ENV)
    if not wanted:
        return
    name, _, at = wanted.partition(":")
    if name == point and (not at or int(at) == epoch):
        os.kill(os.getpid(), signal.SIGKILL)
