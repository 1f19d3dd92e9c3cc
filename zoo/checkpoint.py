"""Checkpoints that survive a SIGKILL at any moment and never run code when loaded.

The layout is declared once, as ``CheckpointState``: ``to_dict()`` is what is saved, and ``REQUIRED_KEYS`` (what
``load_checkpoint`` insists on) are its fields without defaults. Saving goes through ``zoo.atomic.atomic_open``
(a reader sees the old file or the new one, never half of one). Loading always uses
``torch.load(weights_only=True)``.
"""
from __future__ import annotations

import dataclasses
import os
import pickle
import re
import zipfile
from dataclasses import dataclass, field
from typing import Any

import torch

from zoo.atomic import atomic_open
from zoo.errors import UserError
from zoo.faults import maybe_crash

FORMAT = "zoo-checkpoint/1"


@dataclass
class CheckpointState:
    """One saved epoch of a run: everything ``--resume`` needs to continue bit-exactly, plus provenance."""

    model_name: str
    model: dict[str, Any]  # state_dict of the unwrapped model (no DDP "module." prefix)
    optimizer: dict[str, Any]
    epoch: int  # epochs completed
    best_acc: float
    rng: dict[str, Any]  # {"torch": CPU RNG state, "cuda": ...}
    recipe: dict[str, Any]  # ModelSpec.as_dict()
    scaler: dict[str, Any] | None = None  # GradScaler state (fp16)
    test_acc: float | None = None
    config: dict[str, Any] = field(default_factory=dict)  # the settings a resumed run keeps
    pretrained: bool = False
    data: str | None = None  # "real" | "synthetic"
    versions: dict[str, str] = field(default_factory=dict)
    world_size: int = 1
    tune: dict[str, Any] | None = None  # zoo.tune.TuneChoice.to_dict(): the execution choice a resume reuses

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, **{f.name: getattr(self, f.name) for f in dataclasses.fields(self)}}


REQUIRED_KEYS = ("format",) + tuple(
    f.name for f in dataclasses.fields(CheckpointState)
    if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING)


class CheckpointError(UserError):
    """A checkpoint that is missing, truncated, unsafe or not ours."""


def save_checkpoint(state: CheckpointState | dict[str, Any], path: str) -> None:
    """Write ``state`` to ``path`` atomically."""
    if isinstance(state, CheckpointState):
        state = state.to_dict()
    with atomic_open(path, "wb") as f:
        torch.save(state, f)
        if os.environ.get("ZOO_FAULT_AT"):
            f.flush()  # the bytes reach the temporary file before the test's kill
            maybe_crash("mid_checkpoint_write", state.get("epoch"))


def _torch_load(path: str, map_location: Any) -> Any:
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"GLOBAL ([\w.]+)", str(exc))
        if not found:  # e.g. "Unsupported operand 205": garbage bytes, not a pickle that names code
            raise CheckpointError(f"{path} is truncated or not a PyTorch checkpoint (unpickling failed)") from None
        raise CheckpointError(f"refusing to load {path}: it refers to {found.group(1)}; a weights-only load allows "
                              f"tensors and plain data only, since anything else could run code") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError, KeyError, IndexError) as exc:
        first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else ""
        raise CheckpointError(f"{path} is truncated or not a PyTorch checkpoint ({type(exc).__name__}: {first})") \
            from None


def load_checkpoint(path: str, map_location: Any = "cpu", model_name: str | None = None) -> dict[str, Any]:
    """Load and validate a zoo checkpoint; every failure is a one-line CheckpointError."""
    if not os.path.isfile(path):
        raise CheckpointError(f"no checkpoint at {path}")
    state = _torch_load(path, map_location)
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a zoo checkpoint (expected format {FORMAT!r})")
    missing = [k for k in REQUIRED_KEYS if k not in state]
    if missing:
        raise CheckpointError(f"{path} is missing {', '.join(missing)}")
    if model_name is not None and state["model_name"] != model_name:
        raise CheckpointError(f"{path} holds model {state['model_name']!r}, not {model_name!r}")
    return state
