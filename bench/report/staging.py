"""The staged run folder: a run is written into OUT/<device>.incomplete-<UTC time>/ and moved to OUT/<device>/ when it
completes, so OUT/<device>/ always holds the last complete run while one exists, and an interrupted, crashed or
killed run stays readable (marked INCOMPLETE) in its own folder, listed in the index beside the complete one."""
from __future__ import annotations

import contextlib
import datetime as dt
import glob
import os
import shutil

STAGE_MARK = ".incomplete-"
REPLACED_MARK = ".replaced-"


def stage_dir(dev_dir: str, when: dt.datetime | None = None) -> str:
    """A new run's folder beside ``dev_dir`` (created; a second within the same second gets a suffix)."""
    stamp = (when or dt.datetime.now(dt.timezone.utc)).strftime("%Y%m%dT%H%M%SZ")
    base = f"{os.path.normpath(dev_dir)}{STAGE_MARK}{stamp}"
    path, n = base, 1
    while os.path.exists(path):
        path, n = f"{base}-{n}", n + 1
    os.makedirs(path)
    return path


def recover(dev_dir: str) -> None:
    """Finish a promotion a kill cut short: put a replaced complete run back when OUT/<device> is missing, else drop
    it. (Call while holding the folder's lock.)"""
    for old in sorted(glob.glob(glob.escape(os.path.normpath(dev_dir)) + REPLACED_MARK + "*")):
        if not os.path.exists(dev_dir):
            os.rename(old, dev_dir)
        else:
            shutil.rmtree(old, ignore_errors=True)


def promote(stage: str, dev_dir: str) -> None:
    """The completed run in ``stage`` becomes OUT/<device>/: the previous one is moved aside, the new one renamed
    into place, then the old one and every earlier incomplete folder of this device are removed."""
    aside = f"{os.path.normpath(dev_dir)}{REPLACED_MARK}{os.getpid()}"
    if os.path.exists(dev_dir):
        os.rename(dev_dir, aside)
    os.rename(stage, dev_dir)
    shutil.rmtree(aside, ignore_errors=True)
    for old in glob.glob(glob.escape(os.path.normpath(dev_dir)) + STAGE_MARK + "*"):
        with contextlib.suppress(OSError):
            shutil.rmtree(old)
