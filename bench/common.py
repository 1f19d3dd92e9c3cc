"""What every bench phase shares: the run context, model weights (checkpoint or random), data, env, records.

A record is a flat dict, one row of a table: ``model``, ``device``, ``phase``, ``status`` ("ok" | "skipped" |
"failed"), ``reason`` when not ok, then the phase's own fields. JSON, CSV and Markdown all render the same records.
"""
from __future__ import annotations

import datetime as _dt
import os
import platform
import subprocess
from dataclasses import dataclass, field
from typing import Any

import psutil
import torch
import torchvision
from torch import nn

import zoo
from zoo.checkpoint import load_checkpoint
from zoo.data import make_loaders, real_data_available
from zoo.engine import synchronize


@dataclass
class BenchContext:
    device: torch.device
    quick: bool = False
    data_root: str = "data"
    synthetic: bool = False  # True: never look for real data
    checkpoints: str | None = "runs"  # folder holding NAME/best.pt (or last.pt) from `python -m zoo.train`
    out_dir: str = "results/cpu"  # OUT/<device>
    threads: int = field(default_factory=torch.get_num_threads)
    seed: int = 0

    def uses_real_data(self, name: str) -> bool:
        return not self.synthetic and real_data_available(zoo.get_spec(name).dataset, self.data_root)


def record(model: str, device: torch.device | str, phase: str, **fields: Any) -> dict[str, Any]:
    """A flat result row; ``status`` defaults to ok."""
    row: dict[str, Any] = {"model": model, "device": str(torch.device(device).type), "phase": phase, "status": "ok"}
    row.update(fields)
    return row


def failure(model: str, device: torch.device | str, phase: str, exc: BaseException | str, status: str = "failed",
            **fields: Any) -> dict[str, Any]:
    reason = exc if isinstance(exc, str) else f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ''}"
    return record(model, device, phase, status=status, reason=reason, **fields)


def find_checkpoint(name: str, folder: str | None) -> str | None:
    if not folder:
        return None
    for fname in ("best.pt", "last.pt"):
        path = os.path.join(folder, name, fname)
        if os.path.isfile(path):
            return path
    return None


def prepare_model(name: str, ctx: BenchContext) -> tuple[nn.Module, dict[str, Any]]:
    """The model in eval mode on the device, with its trained checkpoint when one exists, else random init.

    Returns (model, info) where info = {weights, checkpoint, checkpoint_acc, pretrained}. A broken checkpoint raises
    CheckpointError (a UserError); the caller records it.
    """
    spec = zoo.get_spec(name)
    torch.manual_seed(ctx.seed)
    kwargs = {"pretrained": "off"} if spec.uses_pretrained else {}
    path = find_checkpoint(name, ctx.checkpoints)
    model = zoo.get_model(name, **kwargs)
    info: dict[str, Any] = {"weights": "random", "checkpoint": None, "checkpoint_acc": None, "pretrained": False}
    if path:
        state = load_checkpoint(path, model_name=name)
        model.load_state_dict(state["model"])
        info.update(weights="checkpoint", checkpoint=path, checkpoint_acc=state.get("test_acc"),
                    pretrained=bool(state.get("pretrained")))
    return model.to(ctx.device).eval(), info


def example_batch(name: str, batch_size: int, device: torch.device, seed: int = 0) -> torch.Tensor:
    """A fixed, seeded input batch of the model's input shape (what parity and latency run on)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch_size, *zoo.get_spec(name).input_shape, generator=g).to(device)


def test_loader(name: str, ctx: BenchContext, batch_size: int = 512, samples: int | None = None):
    """The model's test split on the fast path (real when present, else synthetic) and its source."""
    real = ctx.uses_real_data(name)
    bundle = make_loaders(zoo.get_spec(name), loader="fast", device=ctx.device, root=ctx.data_root,
                          synthetic=not real, batch_size=batch_size, eval_batch_size=batch_size,
                          train_samples=1, test_samples=samples)
    return bundle.test, bundle.source


def flops_per_sample(model: nn.Module, name: str, device: torch.device, train: bool = False) -> float:
    """FLOPs of one sample's forward pass (forward + backward when ``train``), by torch.utils.flop_counter."""
    from torch.utils.flop_counter import FlopCounterMode

    x = example_batch(name, 2, device)
    was_training = model.training
    model.train(train)
    counter = FlopCounterMode(display=False)
    with counter:
        if train:
            model(x).sum().backward()
        else:
            with torch.no_grad():
                model(x)
    model.zero_grad(set_to_none=True)
    model.train(was_training)
    return counter.get_total_flops() / 2


class PeakMemory:
    """Peak memory over a block: CUDA allocated bytes on cuda, the process RSS high-water mark elsewhere."""

    def __init__(self, device: torch.device):
        self.device = device
        self.peak_mb: float | None = None

    def __enter__(self):
        if self.device.type == "cuda":
            synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            synchronize(self.device)
            self.peak_mb = torch.cuda.max_memory_allocated(self.device) / 2**20
        else:
            self.peak_mb = _rss_peak_mb()
        return False


def _rss_peak_mb() -> float:
    try:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux
    except ImportError:  # Windows
        return psutil.Process().memory_info().peak_wset / 2**20


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=os.path.dirname(os.path.abspath(__file__)))
        # Changes under results/ (a run replacing its own output) do not change what was measured.
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ":/", ":(exclude,top)results"],
                               capture_output=True, text=True, timeout=5, cwd=os.path.dirname(os.path.abspath(__file__)))
        if out.returncode == 0:
            return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        pass
    return None


def environment(ctx: BenchContext) -> dict[str, Any]:
    """Where and when a run was made: the env block of results.json."""
    import onnxruntime

    dev = ctx.device
    if dev.type == "cuda":
        device_name = torch.cuda.get_device_name(dev)
    elif dev.type == "mps":
        device_name = "Apple MPS"
    else:
        device_name = platform.processor() or platform.machine()
        try:
            with open("/proc/cpuinfo") as f:
                for line in f:
                    if line.startswith("model name"):
                        device_name = line.split(":", 1)[1].strip()
                        break
        except OSError:
            pass
    return {
        "torch": torch.__version__, "torchvision": torchvision.__version__, "onnxruntime": onnxruntime.__version__,
        "python": platform.python_version(), "platform": platform.platform(), "device": dev.type,
        "device_name": device_name, "cuda": torch.version.cuda if dev.type == "cuda" else None,
        "cpu_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1), "git_commit": _git_commit(),
        "timestamp": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), "quick": ctx.quick,
    }
