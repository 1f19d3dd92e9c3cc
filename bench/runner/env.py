"""Where, when and how a run is made: the ``env`` block of results.json (bench.records.RunEnv), the machine probes
taken once at the start (maths policy, speed calibration, peak FLOP/s), and which precisions the hardware runs
natively.
"""
from __future__ import annotations

import datetime as dt
import importlib.metadata
import os
import platform
import subprocess
import sys

import numpy as np
import psutil
import torch
import torchvision

from bench.backends.noop import NoopBackend
from bench.context import BenchContext, ModelSession
from bench.measure import timing
from bench.measure.hardware import gpu_facts, physical_peak, with_physical
from bench.measure.machine import calibrate, lacks_native, measure_peaks, read_cpuinfo
from bench.measure.numerics import apply_policy
from bench.measure.timing import CLOCK
from bench.records import RunEnv

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def precision_support(device: torch.device) -> dict[str, str | None]:
    """precision -> None when the device runs it natively, else why not (the reason goes to env.skipped_precisions).

    Without native kernels bf16/fp16 maths is emulated (on a CPU, in fp32 and slower than fp32 itself), so a default
    run does not spend its budget on them. CPUs: AVX512-BF16/AMX flags; CUDA: compute capability (bf16 tensor cores
    from 8.0, fp16 from 7.0), never ``torch.cuda.is_bf16_supported()``, which by default counts emulation (True on a
    T4 or V100); both through bench.measure.machine.lacks_native, the check the peak probe makes. MPS: fp16.
    """
    support: dict[str, str | None] = {"fp32": None}
    if device.type == "cuda":
        for precision in ("bf16", "fp16"):
            why = lacks_native(device, precision)
            support[precision] = None if why is None else f"{torch.cuda.get_device_name(device)}: {why}"
    elif device.type == "mps":
        support["bf16"] = "MPS: fp16 is the native reduced precision; bf16 is not a default there"
        support["fp16"] = None
    else:
        for precision in ("bf16", "fp16"):
            support[precision] = lacks_native(device, precision)
    return support


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "mps":
        return "Apple MPS"
    return read_cpuinfo().model_name or platform.processor() or platform.machine()


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


# The distributions that install the ``onnxruntime`` module (each replaces the others' files: one at a time).
ORT_DISTRIBUTIONS = ("onnxruntime", "onnxruntime-gpu", "onnxruntime-openvino", "onnxruntime-directml")


def installed_distributions(names: tuple[str, ...] = ORT_DISTRIBUTIONS) -> dict[str, str]:
    """name -> version of each of ``names`` installed here (read from metadata: nothing is imported)."""
    found = {}
    for name in names:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return found


def onnxruntime_build(dists: dict[str, str], providers: list[str] | None) -> tuple[str, str | None]:
    """(which ONNX Runtime build this process imports, a warning or None) for env.notes["onnxruntime_build"].

    ``dists``: installed_distributions(); ``providers``: the imported module's get_available_providers() (None when
    it cannot be imported). Two distributions at once share one module folder, so what is imported is whichever
    wrote its files last: the warning says how to keep one."""
    if providers is None:
        what = "not importable" if dists else "not installed"
        return (f"onnxruntime {what}: its rows are skipped (pip install -e \".[cpu]\" or \".[gpu]\")",
                None if not dists else f"{', '.join(dists)} installed but onnxruntime does not import")
    names = ", ".join(f"{n} {v}" for n, v in dists.items()) or "onnxruntime (no distribution metadata)"
    build = f"{names}; providers: {', '.join(providers)}"
    warning = None
    if len(dists) > 1:
        keep = "onnxruntime-gpu" if "onnxruntime-gpu" in dists else next(iter(dists))
        warning = (f"{' and '.join(dists)} are all installed and own the same onnxruntime/ folder; keep one: "
                   f"pip uninstall -y {' '.join(dists)} && pip install {keep}")
    return build, warning


def ort_providers() -> list[str] | None:
    try:
        import onnxruntime
    except ImportError:
        return None
    return list(onnxruntime.get_available_providers())


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
                  command=command, quick=ctx.quick, budget_s=ctx.budget_s, clock=CLOCK,
                  provenance=ctx.provenance)  # the context's own dict: filled as each model is built


def note_onnxruntime(env: RunEnv) -> None:
    """Which ONNX Runtime build is imported (CPU or GPU package, its providers), and a warning line at start-up when
    two builds are installed over each other."""
    build, warning = onnxruntime_build(installed_distributions(), ort_providers())
    env.notes["onnxruntime_build"] = build
    if warning:
        env.notes["onnxruntime_warning"] = warning
        print(f"warning: {warning}", file=sys.stderr)


def note_load(env: RunEnv, key: str) -> None:
    """The OS's 1/5/15-minute load averages (runnable processes), where the OS has them: a busy machine is why a run
    can be noisy or slow, and a reader should see it next to the figures."""
    try:
        env.notes[key] = [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):  # Windows
        pass


def harness_floor(ctx: BenchContext) -> dict[str, float | int | str]:
    """The harness's own cost per call on this machine: the ``noop`` backend's bound call (it returns a tensor that
    exists) timed as a batch-1 inference row is (bench.measure.timing's clock, sampling plan and the device sync
    inside every call). Its p50 is the part of any row's p50 that no backend can remove."""
    backend = NoopBackend(ModelSession(name="noop", model=torch.nn.Identity()), ctx)
    fn = backend.bind(torch.zeros(1, device=ctx.device))
    samples_us = np.asarray(timing.sample_latencies(fn, backend.sync, **timing.sampling_plan(1, ctx.quick))) * 1e6
    p25, p50, p75 = np.percentile(samples_us, [25, 50, 75])  # numpy's linear percentiles, as latency_stats
    return {"p50_us": round(float(p50), 3), "iqr_us": round(float(p75 - p25), 3), "n_calls": int(samples_us.size),
            "how": "noop backend, batch-1 sampling plan, device sync per call"}


THREAD_VARS = ("OMP_", "MKL_", "KMP_", "OPENBLAS_", "GOMP_")
CPUFREQ = "/sys/devices/system/cpu/cpu0/cpufreq"


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip() or None
    except OSError:
        return None


def cgroup_cpu(root: str = "/sys/fs/cgroup") -> dict[str, object]:
    """The cgroup's CPU quota in CPUs (cgroup v2 ``cpu.max``, or v1 ``cpu.cfs_quota_us / cpu.cfs_period_us``; None:
    no quota) and its cpuset. ``os.cpu_count()`` ignores both: a container held to 1.5 CPUs of a 64-core host reads
    64 there."""
    out: dict[str, object] = {}
    v2 = _read(os.path.join(root, "cpu.max"))
    if v2:
        quota, _, period = v2.partition(" ")
        out["quota_cpus"] = None if quota == "max" else round(int(quota) / int(period or 100000), 2)
    else:
        quota, period = _read(os.path.join(root, "cpu", "cpu.cfs_quota_us")), \
            _read(os.path.join(root, "cpu", "cpu.cfs_period_us"))
        if quota and period:
            out["quota_cpus"] = None if int(quota) < 0 else round(int(quota) / int(period), 2)
    cpuset = _read(os.path.join(root, "cpuset.cpus.effective")) or _read(os.path.join(root, "cpuset", "cpuset.cpus"))
    if cpuset:
        out["cpuset"] = cpuset
    if hasattr(os, "sched_getaffinity"):
        out["affinity_cpus"] = len(os.sched_getaffinity(0))
    return out


def slowdowns() -> dict[str, object]:
    """What slows a machine down, where readable: the CPU frequency governor and current / maximum frequency, the
    cgroup's CPU quota and cpuset, the thread-pool variables in force, and a short torch.utils.collect_env summary
    (the OS, compiler, libc, platform: its pip and conda listings are left out, they take tens of seconds)."""
    out: dict[str, object] = {}
    governor = _read(os.path.join(CPUFREQ, "scaling_governor"))
    cur, most = _read(os.path.join(CPUFREQ, "scaling_cur_freq")), _read(os.path.join(CPUFREQ, "cpuinfo_max_freq"))
    out["cpu_governor"] = governor or "not readable"
    if cur and most:
        out["cpu_mhz"] = f"{int(cur) // 1000} of {int(most) // 1000}"
    out["cgroup"] = cgroup_cpu()
    out["thread_vars"] = {k: v for k, v in sorted(os.environ.items()) if k.startswith(THREAD_VARS)} or "none set"
    try:
        from torch.utils import collect_env

        run = collect_env.run
        out["collect_env"] = {"os": collect_env.get_os(run), "gcc": collect_env.get_gcc_version(run),
                              "libc": collect_env.get_libc_version(), "platform": collect_env.get_python_platform()}
    except Exception as exc:  # noqa: BLE001 - a private helper of torch's script may move: say so, go on
        out["collect_env"] = f"not available ({type(exc).__name__})"
    return out


def probe_machine(ctx: BenchContext, env: RunEnv) -> None:
    """Once per run, before any phase: the maths policy every backend runs under, the machine-speed calibration and
    the device's measured peaks (into env, and the peaks into ctx for every row's % of peak)."""
    note_load(env, "load_avg_at_start")
    note_onnxruntime(env)
    env.notes["machine"] = slowdowns()  # before the probes, as the machine was when the run began
    env.maths = dict(apply_policy(ctx.device))
    env.calibration = dict(calibrate(ctx.device, ctx.threads))
    if ctx.device.type == "cuda":
        env.notes["gpu"] = gpu_facts(ctx.device)
    peak, why_not = physical_peak(ctx.device, ctx.threads)
    env.peaks = with_physical(measure_peaks(ctx.device, list(ctx.precisions)), peak, why_not)
    ctx.peaks = dict(env.peaks)
    if "infer" in ctx.phases:
        env.harness_floor = harness_floor(ctx)
