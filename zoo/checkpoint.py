"""Checkpoints that survive a SIGKILL at any moment and never run code when loaded.

Saving writes a temporary file in the same folder, fsyncs it, renames it over the target and fsyncs the folder: a
reader sees the old file or the new one, never half of one. Loading always uses ``torch.load(weights_only=True)``.
"""
from __future__ import annotations

import os
import pickle
import re
import zipfile
from typing import Any

import torch

from zoo.atomic import atomic_open, atomic_write_text  # noqa: F401  (atomic_write_text: COMPAT(remove at merge), bench imports it from here)
from zoo.errors import UserError

FORMAT = "zoo-checkpoint/1"
REQUIRED_KEYS = ("format", "model_name", "model", "optimizer", "epoch", "best_acc", "rng", "recipe")


class CheckpointError(UserError):
    """A checkpoint that is missing, truncated, unsafe or not ours."""


def save_checkpoint(state: dict[str, Any], path: str) -> None:
    with atomic_open(path, "wb") as f:
        torch.save(state, f)


def load_checkpoint(path: str, map_location: Any = "cpu", model_name: str | None = None) -> dict[str, Any]:
    """Load and validate a zoo checkpoint; every failure is a one-line CheckpointError."""
    if not os.path.isfile(path):
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"GLOBAL ([\w.]+)", str(exc))
        if not found:  # e.g. "Unsupported operand 205": garbage bytes, not a pickle that names code
            raise CheckpointError(f"{path} is truncated or not a PyTorch checkpoint (unpickling failed)") from None
        raise CheckpointError(f"refusing to load {path}: it refers to {found.group(1)}; a weights-only load allows "
                              f"tensors and plain data only, since anything else could run code") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError, KeyError, IndexError) as exc:
        raise CheckpointError(f"{path} is truncated or not a PyTorch checkpoint "
                              f"({type(exc).__name__}: {str(exc).strip().splitlines()[0][:160] if str(exc).strip() else ''})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a zoo checkpoint (expected format {FORMAT!r})")
    missing = [k for k in REQUIRED_KEYS if k not in state]
    if missing:
        raise CheckpointError(f"{path} is missing {', '.join(missing)}")
    if model_name is not None and state["model_name"] != model_name:
        raise CheckpointError(f"{path} holds model {state['model_name']!r}, not {model_name!r}")
    return state
