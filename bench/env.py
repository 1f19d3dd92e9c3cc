"""Where, when and how a run is made: the ``env`` block of results.json (bench.records.RunEnv), the machine probes
taken once at the start (maths policy, speed calibration, peak FLOP/s), and which precisions the hardware runs
natively.
"""
from __future__ import annotations

import datetime as dt
import os
import platform
import subprocess

import psutil
import torch
import torchvision

from bench.context import BenchContext
from bench.records import RunEnv

# --- TEMPORARY until branches bench-core and bench-infer merge: the lead replaces this block with plain imports
# (from bench.machine import calibrate, measure_peaks; from bench.maths import apply_policy; from bench.timing
# import CLOCK) and drops the None checks in probe_machine.
try:
    from bench.machine import calibrate, measure_peaks
except ImportError:
    calibrate = measure_peaks = None
try:
    from bench.maths import apply_policy
except ImportError:
    apply_policy = None
try:
    from bench.timing import CLOCK
except ImportError:
    CLOCK = None
# --- end of the temporary block

# x86 flags (/proc/cpuinfo) that mean native kernels: without them bf16/fp16 maths on a CPU is emulated in fp32
# and slower than fp32 itself, so a default run does not spend its budget on them. aarch64 names them bf16/fphp.
CPU_NATIVE_FLAGS = {"bf16": ("avx512_bf16", "amx_bf16", "bf16"), "fp16": ("avx512_fp16", "amx_fp16", "fphp")}
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cpu_flags() -> set[str]:
    """The CPU's feature flags from /proc/cpuinfo (empty where there is none, e.g. macOS)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.split(":", 1)[0].strip() in ("flags", "Features"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def precision_support(device: torch.device) -> dict[str, str | None]:
    """precision -> None when the device runs it natively, else why not (the reason goes to env.skipped_precisions).
    """
    support: dict[str, str | None] = {"fp32": None}
    if device.type == "cuda":
        support["bf16"] = None if torch.cuda.is_bf16_supported() else \
            f"{torch.cuda.get_device_name(device)} has no native bf16 (torch.cuda.is_bf16_supported() is False)"
        support["fp16"] = None
    elif device.type == "mps":
        support["bf16"] = "MPS runs fp16 natively; bf16 is not a default there"
        support["fp16"] = None
    else:
        flags, capability = cpu_flags(), torch.backends.cpu.get_cpu_capability()
        for precision, wanted in CPU_NATIVE_FLAGS.items():
            found = [f for f in wanted if f in flags]
            support[precision] = None if found else (
                f"CPU ({capability}) lacks {' / '.join(wanted[:2])}: {precision} would be emulated, slower than fp32")
    return support


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "mps":
        return "Apple MPS"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def git_commit() -> str | None:
    """The checkout's short commit, "-dirty" when tracked files changed (outside results/: a run replacing its own
    output does not change what was measured); None outside a git checkout."""
    def git(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["git", *args], capture_output=True, text=True, timeout=10, cwd=REPO)

    try:
        head = git("rev-parse", "--short", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no", "--", ":/", ":(exclude,top)results")
    except (OSError, subprocess.SubprocessError):
        return None
    if head.returncode != 0:
        return None
    return head.stdout.strip() + ("-dirty" if dirty.returncode == 0 and dirty.stdout.strip() else "")


def onnxruntime_version() -> str | None:
    try:
        import onnxruntime
    except ImportError:
        return None
    return onnxruntime.__version__


def environment(ctx: BenchContext, command: str | None = None) -> RunEnv:
    """The env block known before anything is measured (probe_machine adds the measured parts)."""
    dev = ctx.device
    return RunEnv(device=dev.type, device_index=dev.index if dev.type == "cuda" else None,
                  device_name=device_name(dev), torch=torch.__version__, torchvision=torchvision.__version__,
                  onnxruntime=onnxruntime_version(), python=platform.python_version(), platform=platform.platform(),
                  cuda=torch.version.cuda if dev.type == "cuda" else None,
                  cpu_capability=torch.backends.cpu.get_cpu_capability(), cpu_count=os.cpu_count(),
                  threads=ctx.threads, memory_gb=round(psutil.virtual_memory().total / 2**30, 1),
                  git_commit=git_commit(), timestamp=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                  command=command, quick=ctx.quick, budget_s=ctx.budget_s, clock=CLOCK)


def probe_machine(ctx: BenchContext, env: RunEnv) -> None:
    """Once per run, before any phase: the maths policy every backend runs under, the machine-speed calibration and
    the device's measured peaks (into env, and the peaks into ctx for every row's % of peak)."""
    if apply_policy is not None:
        env.maths = dict(apply_policy(ctx.device))
    if calibrate is not None:
        env.calibration = dict(calibrate(ctx.device))
    if measure_peaks is not None:
        env.peaks = dict(measure_peaks(ctx.device, list(ctx.precisions)))
        ctx.peaks = dict(env.peaks)
