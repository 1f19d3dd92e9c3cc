"""How fast the machine is, measured the same way every run: a calibration probe that lets bench.compare tell a code
change from a machine change, and the device's peaks that every row's "% of peak" divides by.

calibrate(device, threads) -> RunEnv.calibration::

    {"method": str, "device": "cpu", "threads": 1, "run_threads": 2, "matmul_precision": "highest",
     "probes": {"matmul_fp32_256": {"what": str, "samples_ms": [...], "median_ms": float}, "copy_32MB": {...},
                "pool_2t": {...}}}

The matmul and the copy run on one thread (a --threads change must not read as a machine change); ``pool_<N>t`` runs
at the run's N threads on a CPU: small ops that every thread of the pool takes a share of, so a co-scheduled or
throttled core, which stalls the whole op, shows in it. Its name carries N, so only runs at the same threads compare
it. Under ``--repeat`` each process calibrates, and the probes' samples carry ``samples_per_repeat`` like rows do.

measure_peaks(device, precisions) -> RunEnv.peaks::

    {"fp32_flops_per_s": float, "fp32_method": str, ..., "mem_bytes_per_s": float, "mem_method": str,
     "threads": int, "skipped": {"int8": "why"}}
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from bench.measure.timing import CLOCK, sample_latencies
from zoo.engine import synchronize

CALIBRATION_CALLS = 50
COPY_MB = 32
# The thread-pool probe: one call = POOL_OPS elementwise adds and sums over POOL_ELEMS fp32 values (1 MB), each far
# above ATen's parallel grain (32768 elements), so each op is split over every intra-op thread and waits for the
# slowest; tens of microseconds an op, where a stolen core shows as a step, not as noise averaged away.
POOL_ELEMS = 1 << 18
POOL_OPS = 8
POOL_CALLS = 100
# Matmul sizes per device type: fixed for the device type (so runs compare), sized so the probe measures compute.
CAL_MATMUL_N = {"cpu": 256, "cuda": 2048, "mps": 2048}
PEAK_MATMUL_N = {"cpu": (512, 1024, 2048), "cuda": (2048, 4096, 8192), "mps": (1024, 2048, 4096)}
PEAK_COPY_MB = {"cpu": 128, "cuda": 1024, "mps": 512}
# 3x3 convolutions (batch, channels, height = width), channels_last: a convolution kernel can reach more of the device
# than its GEMM does (oneDNN on a 2-core AVX-512 CPU: ~550 against torch.mm's ~215 GFLOP/s), so the peak is the best
# of both probes and no row's "% of peak" is against a floor its own kernels beat.
PEAK_CONV_SHAPES = {"cpu": ((32, 64, 56), (32, 256, 14)), "cuda": ((128, 256, 56), (256, 512, 14)),
                    "mps": ((64, 128, 56), (64, 256, 14))}
PEAK_SECONDS = 0.3  # timed seconds per matmul size / copy (the whole peak probe stays under ~10 s on 2 CPU cores)
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@contextlib.contextmanager
def intra_op_threads(threads: int) -> Iterator[None]:
    """torch intra-op threads = ``threads`` for the block, the caller's count restored after: a run or probe started
    in-process (bench.run_bench, a test) must not leave its thread count, and so its float reduction order, behind."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def single_thread() -> contextlib.AbstractContextManager[None]:
    """One intra-op thread for the block: --threads must not read as a machine change."""
    return intra_op_threads(1)


def _probe(fn, device: torch.device, calls: int, max_seconds: float, min_seconds: float = 0.0) -> np.ndarray:
    samples = sample_latencies(fn, lambda: synchronize(device), min_calls=calls, min_seconds=min_seconds, warmup=3,
                               max_seconds=max_seconds)
    return np.asarray(samples) * 1e3


def _entry(what: str, samples_ms: np.ndarray) -> dict[str, Any]:
    return {"what": what, "samples_ms": [float(f"{v:.4g}") for v in samples_ms],
            "median_ms": float(np.median(samples_ms))}


def pool_probe(threads: int) -> tuple[str, dict[str, Any]]:
    """(name, entry) of the thread-pool probe at ``threads`` intra-op threads (restored after)."""
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(POOL_ELEMS, generator=g), torch.randn(POOL_ELEMS, generator=g)
    z = torch.empty_like(x)

    def call() -> None:
        for _ in range(POOL_OPS):
            torch.add(x, y, out=z)
            z.sum()

    with intra_op_threads(threads):
        ms = _probe(call, torch.device("cpu"), POOL_CALLS, 5.0)
    return f"pool_{threads}t", _entry(f"{POOL_OPS}x (torch.add + Tensor.sum) of {POOL_ELEMS} fp32 values at "
                                      f"{threads} intra-op threads", ms)


def calibrate(device: torch.device | str, threads: int | None = None) -> dict[str, Any]:
    """A short, fixed machine-speed probe: a square fp32 matmul and a 32 MB tensor copy, CALIBRATION_CALLS timed calls
    each, single-threaded on the CPU (on an accelerator, on the device); on a CPU also the thread-pool probe at the
    run's ``threads`` (default: torch's current count). Raw samples and medians, for env.calibration.
    """
    device = torch.device(device)
    threads = threads or torch.get_num_threads()
    n = CAL_MATMUL_N.get(device.type, 256)
    g = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=g).to(device)
    b = torch.randn(n, n, generator=g).to(device)
    src = torch.randn(COPY_MB * 2 ** 20 // 4, generator=g).to(device)
    dst = torch.empty_like(src)
    with single_thread():
        mm = _probe(lambda: torch.mm(a, b), device, CALIBRATION_CALLS, 5.0)
        cp = _probe(lambda: dst.copy_(src), device, CALIBRATION_CALLS, 5.0)
    probes = {f"matmul_fp32_{n}": _entry(f"torch.mm of two {n}x{n} fp32 matrices", mm),
              f"copy_{COPY_MB}MB": _entry(f"Tensor.copy_ of {COPY_MB} MB fp32", cp)}
    if device.type == "cpu":
        name, entry = pool_probe(threads)
        probes[name] = entry
    return {
        "method": f"{CALIBRATION_CALLS} timed calls each ({POOL_CALLS} for the pool probe) after 3 warm-up calls; "
                  f"{CLOCK}",
        "device": str(device),
        "threads": 1,
        "run_threads": threads,
        "matmul_precision": torch.get_float32_matmul_precision(),
        "probes": probes,
    }


@dataclass(frozen=True)
class CpuInfo:
    """The first processor block of /proc/cpuinfo: what every reader of that file in bench/ needs."""

    model_name: str | None = None
    flags: frozenset[str] = frozenset()
    mhz: float | None = None  # "cpu MHz": the clock when read (it moves with frequency scaling)


CPUINFO = "/proc/cpuinfo"


def read_cpuinfo(path: str = CPUINFO) -> CpuInfo:
    """The one /proc/cpuinfo reader (an empty CpuInfo where the file does not exist: macOS, Windows)."""
    fields: dict[str, str] = {}
    try:
        with open(path) as f:
            for line in f:
                if not line.strip():
                    if fields:
                        break  # the first processor's block is enough: every field read here is per-machine
                    continue
                key, _, value = line.partition(":")
                fields.setdefault(key.strip(), value.strip())
    except OSError:
        return CpuInfo()
    try:
        mhz = float(fields["cpu MHz"]) if "cpu MHz" in fields else None
    except ValueError:
        mhz = None
    return CpuInfo(model_name=fields.get("model name"), flags=frozenset(fields.get("flags", "").split()), mhz=mhz)


def cpu_flags() -> set[str]:
    return set(read_cpuinfo().flags)


def lacks_native(device: torch.device, precision: str) -> str | None:
    """Why ``precision`` has no native matmul on ``device`` (its peak would measure an emulation), or None."""
    if precision == "fp32":
        return None
    if precision not in DTYPES:
        return f"no {precision} matmul peak probe (torch has no portable {precision} GEMM)"
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        need = (8, 0) if precision == "bf16" else (7, 0)
        if (major, minor) < need:
            return f"compute capability {major}.{minor} has no {precision} tensor cores (needs {need[0]}.{need[1]})"
        return None
    if device.type == "cpu":
        flags = cpu_flags()
        want = {"bf16": {"avx512_bf16", "amx_bf16"}, "fp16": {"avx512_fp16", "amx_fp16"}}[precision]
        if flags & want:
            return None
        return (f"CPU ({torch.backends.cpu.get_cpu_capability()}) lacks {' / '.join(sorted(want))}: "
                f"{precision} matmul would be emulated")
    return None


def _matmul_peak(device: torch.device, dtype: torch.dtype) -> tuple[float, str]:
    best, best_n = 0.0, 0
    for n in PEAK_MATMUL_N.get(device.type, PEAK_MATMUL_N["cpu"]):
        a = torch.randn(n, n, device=device).to(dtype)
        b = torch.randn(n, n, device=device).to(dtype)
        ms = _probe(lambda a=a, b=b: torch.mm(a, b), device, 5, PEAK_SECONDS, PEAK_SECONDS / 3)
        rate = 2 * n ** 3 / (float(np.median(ms)) / 1e3)
        if rate > best:
            best, best_n = rate, n
    sizes = "/".join(str(n) for n in PEAK_MATMUL_N.get(device.type, PEAK_MATMUL_N["cpu"]))
    return best, (f"torch.mm of square matrices n={sizes}, 2n^3 FLOP / median seconds per call, best size n={best_n}, "
                  f"{torch.get_num_threads()} threads, float32 matmul precision "
                  f"{torch.get_float32_matmul_precision()!r}")


def _conv_peak(device: torch.device, dtype: torch.dtype) -> tuple[float, str]:
    best, best_shape = 0.0, None
    shapes = PEAK_CONV_SHAPES.get(device.type, PEAK_CONV_SHAPES["cpu"])
    for n, c, hw in shapes:
        conv = torch.nn.Conv2d(c, c, 3, padding=1, bias=False).to(device=device, dtype=dtype,
                                                                      memory_format=torch.channels_last)
        x = torch.randn(n, c, hw, hw, device=device).to(dtype=dtype, memory_format=torch.channels_last)

        def call(conv=conv, x=x):
            with torch.no_grad():
                return conv(x)

        ms = _probe(call, device, 5, PEAK_SECONDS, PEAK_SECONDS / 3)
        rate = 2 * n * c * c * 9 * hw * hw / (float(np.median(ms)) / 1e3)
        if rate > best:
            best, best_shape = rate, (n, c, hw)
    text = ", ".join(f"{n}x{c}x{hw}x{hw}" for n, c, hw in shapes)
    return best, (f"3x3 conv, channels_last, C->C, inputs {text}, 2*N*C*C*9*H*W FLOP / median seconds per call, "
                  f"best {best_shape}")


def _copy_peak(device: torch.device) -> tuple[float, str]:
    mb = PEAK_COPY_MB.get(device.type, 128)
    src = torch.randn(mb * 2 ** 20 // 4, device=device)
    dst = torch.empty_like(src)
    ms = _probe(lambda: dst.copy_(src), device, 5, PEAK_SECONDS, PEAK_SECONDS / 3)
    nbytes = 2 * src.numel() * src.element_size()  # read once, written once
    return nbytes / (float(np.median(ms)) / 1e3), (f"Tensor.copy_ of {mb} MB, bytes read + written / median seconds, "
                                                    f"{torch.get_num_threads()} threads")


def measure_peaks(device: torch.device | str, precisions: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """Measured peak matmul FLOP/s per precision and memory bandwidth, at the run's threads, for env.peaks.

    A precision the device lacks natively is skipped with the reason (a peak of an emulation would flatter every
    row's % of peak). The peaks are what torch reaches on this machine, not the vendor's datasheet.
    """
    device = torch.device(device)
    peaks: dict[str, Any] = {"threads": torch.get_num_threads(), "skipped": {}}
    for precision in dict.fromkeys(["fp32", *precisions]):
        reason = lacks_native(device, precision)
        if reason is not None:
            peaks["skipped"][precision] = reason
            continue
        mm_rate, mm_method = _matmul_peak(device, DTYPES[precision])
        conv_rate, conv_method = _conv_peak(device, DTYPES[precision])
        peaks[f"{precision}_flops_per_s"] = max(mm_rate, conv_rate)
        peaks[f"{precision}_probes"] = {"matmul": mm_rate, "conv": conv_rate}
        peaks[f"{precision}_method"] = (f"the better of two probes: {mm_method} ({mm_rate / 1e9:.0f} GFLOP/s); "
                                        f"{conv_method} ({conv_rate / 1e9:.0f} GFLOP/s)")
    peaks["mem_bytes_per_s"], peaks["mem_method"] = _copy_peak(device)
    return peaks


def pct_of_peak(flops_per_s: float | None, peaks: dict[str, Any], precision: str) -> float | None:
    """Achieved FLOP/s as a fraction of the measured peak for ``precision`` (None when either is unknown)."""
    peak = peaks.get(f"{precision}_flops_per_s") if isinstance(peaks, dict) else None
    if flops_per_s is None or not peak or peak <= 0:
        return None
    return float(flops_per_s) / float(peak)
