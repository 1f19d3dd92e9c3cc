"""The device's physical peak FLOP/s, derived from the hardware, never from a kernel's speed.

A probe (torch.mm, a 3x3 convolution) measures what a kernel reaches, and credits it with the FLOPs of the direct
algorithm: a Winograd or FFT convolution does fewer, so a conv probe can read above the hardware (542 GFLOP/s
against torch.mm's 217 on a 2-core CPU). "% of peak" divides by the physical peak instead:

- GPU: SMs x FLOP per clock per SM for the precision x the SM clock. FLOP per clock per SM by compute capability
  (GPU_FP32_LANES: FP32 FMA lanes x 2; GPU_TENSOR_FLOP_PER_CLK: dense fp16/bf16 tensor-core FLOP, no sparsity), from
  NVIDIA's architecture whitepapers; the clock is NVML's max SM clock where nvidia-ml-py is installed, else
  ``torch.cuda.get_device_properties().clock_rate`` (cudaDevAttrClockRate, the max SM clock). An H100 SXM: 132 SMs
  x 256 x 1.98 GHz = 66.9 TFLOP/s fp32; 132 x 4096 x 1.83 GHz (the tensor clock NVIDIA quotes) = 989.4 TFLOP/s bf16;
  at the 1.98 GHz max SM clock the bound is 1070 TFLOP/s, an upper bound the hardware may not sustain.
- CPU: cores (the run's threads) x SIMD FLOP per cycle from the ISA (flags in /proc/cpuinfo: AVX-512 16 fp32 lanes,
  AVX2 8, SSE 4; x2 for FMA; x2 for two FMA units, assumed, so it stays an upper bound) x the clock:
  cpufreq's cpuinfo_max_freq where the kernel has it, else cpuinfo's "cpu MHz" (the clock when read: turbo may be
  higher, the method says so). Where no clock can be read (some VMs), there is no physical peak: the probe is used.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from bench.measure.machine import CpuInfo, read_cpuinfo

# FP32 FMA lanes per SM by compute capability (major, minor): x2 FLOP per FMA.
GPU_FP32_LANES = {(6, 0): 64, (6, 1): 128, (7, 0): 64, (7, 5): 64, (8, 0): 64, (8, 6): 128, (8, 7): 128,
                  (8, 9): 128, (9, 0): 128, (10, 0): 128}
# Dense fp16 / bf16 tensor-core FLOP per clock per SM (V100 and T4: fp16 only; A100 2048; H100 4096; B200 8192).
GPU_TENSOR_FLOP_PER_CLK = {(7, 0): 1024, (7, 5): 1024, (8, 0): 2048, (8, 6): 1024, (8, 7): 1024, (8, 9): 1024,
                           (9, 0): 4096, (10, 0): 8192}
CPUFREQ_MAX = "/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq"


@dataclass(frozen=True)
class PhysicalPeak:
    """precision -> FLOP/s derived from the hardware, and how (the clock's source included)."""

    flops_per_s: dict[str, float]
    method: str


def gpu_peak(capability: tuple[int, int], sms: int, clock_hz: float, clock_source: str) -> PhysicalPeak | None:
    """The physical peak of a GPU, or None for a compute capability not in the tables."""
    cap = tuple(capability)
    lanes = GPU_FP32_LANES.get(cap)
    if lanes is None or not sms or not clock_hz:
        return None
    flops = {"fp32": sms * 2 * lanes * clock_hz}
    tensor = GPU_TENSOR_FLOP_PER_CLK.get(cap)
    if tensor:
        flops["fp16"] = sms * tensor * clock_hz
        if cap >= (8, 0):
            flops["bf16"] = flops["fp16"]
    text = (f"{sms} SMs x FLOP/clock/SM of compute capability {cap[0]}.{cap[1]} (fp32: {2 * lanes}"
            + (f"; dense fp16/bf16 tensor: {tensor}" if tensor else "") + f") x {clock_hz / 1e6:.0f} MHz SM clock "
            f"({clock_source})")
    return PhysicalPeak(flops, text)


def simd_flop_per_cycle(flags: frozenset[str] | set[str]) -> tuple[int, str]:
    """(fp32 FLOP per cycle per core, the ISA it comes from), assuming two FMA units (an upper bound)."""
    if "avx512f" in flags:
        lanes, isa = 16, "AVX-512"
    elif "avx2" in flags or "avx" in flags:
        lanes, isa = 8, "AVX2" if "avx2" in flags else "AVX"
    elif "asimd" in flags or "sse2" in flags:
        lanes, isa = 4, "NEON" if "asimd" in flags else "SSE2"
    else:
        return 0, "unknown ISA"
    fma = "fma" in flags or "asimd" in flags or "avx512f" in flags
    return lanes * (2 if fma else 1) * 2, f"{isa}{' + FMA' if fma else ''}, 2 units assumed"


def cpu_clock(info: CpuInfo, cpufreq_max: str = CPUFREQ_MAX) -> tuple[float | None, str]:
    """(Hz, where it comes from), or (None, why not)."""
    try:
        with open(cpufreq_max) as f:
            return float(f.read().strip()) * 1e3, "cpufreq cpuinfo_max_freq"
    except (OSError, ValueError):
        pass
    if info.mhz:
        return info.mhz * 1e6, "/proc/cpuinfo 'cpu MHz' when read (no cpufreq: turbo may run higher)"
    return None, "no cpufreq and no 'cpu MHz' in /proc/cpuinfo"


def cpu_peak(info: CpuInfo, cores: int, clock_hz: float | None, clock_source: str) -> PhysicalPeak | None:
    """The physical fp32 peak of ``cores`` CPU cores, or None without a clock or a known ISA."""
    per_cycle, isa = simd_flop_per_cycle(info.flags)
    if not clock_hz or not per_cycle or cores < 1:
        return None
    flops = {"fp32": cores * per_cycle * clock_hz}
    if {"avx512_bf16", "amx_bf16"} & info.flags:
        flops["bf16"] = 2 * flops["fp32"]  # AVX512-BF16 dot products: two bf16 pairs per fp32 lane
    return PhysicalPeak(flops, f"{cores} cores x {per_cycle} fp32 FLOP/cycle ({isa}) x {clock_hz / 1e6:.0f} MHz "
                               f"({clock_source})")


def nvml_handle(device: torch.device) -> tuple[Any, Any, str]:
    """(the pynvml module, this device's NVML handle, "") or (None, None, why not). nvidia-ml-py is optional (the
    gpu extra installs it)."""
    try:
        import pynvml
    except ImportError:
        return None, None, "nvidia-ml-py is not installed (pip install -e \".[gpu]\")"
    try:
        pynvml.nvmlInit()
        return pynvml, pynvml.nvmlDeviceGetHandleByPciBusId(pci_bus_id(device)), ""
    except Exception as exc:  # no driver access, an unknown bus id, properties without PCI ids
        return None, None, f"NVML: {type(exc).__name__}: {exc}"


def gpu_clock(device: torch.device) -> tuple[float | None, str]:
    """The GPU's max SM clock in Hz and its source (NVML where installed, else the CUDA device attribute)."""
    nvml, handle, _ = nvml_handle(device)
    if nvml is not None:
        try:
            return nvml.nvmlDeviceGetMaxClockInfo(handle, nvml.NVML_CLOCK_SM) * 1e6, "NVML max SM clock"
        except Exception:  # an NVML without the query: the CUDA attribute below
            pass
    khz = getattr(torch.cuda.get_device_properties(device), "clock_rate", 0)
    if khz:
        return khz * 1e3, "cudaDevAttrClockRate (max SM clock)"
    return None, "neither NVML nor the CUDA device properties give a clock"


def pci_bus_id(device: torch.device) -> str:
    """The PCI bus id NVML names a torch device by (CUDA_VISIBLE_DEVICES renumbers torch's indices, not these)."""
    props = torch.cuda.get_device_properties(device)
    return f"{props.pci_domain_id:08x}:{props.pci_bus_id:02x}:{props.pci_device_id:02x}.0"


ABOVE = "fewer FLOPs than counted"  # a probe or row above the physical peak: its kernel does less than the count


def with_physical(peaks: dict, peak: PhysicalPeak | None, why_not: str) -> dict:
    """``peaks`` (bench.measure.machine.measure_peaks) with the physical peak as every precision's divisor.

    Each precision the derivation covers gets ``{p}_flops_per_s`` = the physical peak (what "% of peak" divides by),
    ``{p}_probe_fractions`` (each probe / the physical peak) and ``{p}_above_physical`` (the probes above it, flagged
    ABOVE); its method says both. Without a physical peak (no clock, unknown hardware) the probe stays the divisor
    and ``physical`` says why."""
    out = dict(peaks)
    if peak is None:
        out["physical"] = {"method": None, "why_not": why_not}
        return out
    out["physical"] = {"method": peak.method, "flops_per_s": dict(peak.flops_per_s)}
    for precision, flops in peak.flops_per_s.items():
        probes = peaks.get(f"{precision}_probes")
        if not isinstance(probes, dict):
            continue  # not probed (skipped): no divisor to replace
        fractions = {name: rate / flops for name, rate in probes.items()}
        above = sorted(name for name, f in fractions.items() if f > 1.0)
        out[f"{precision}_flops_per_s"] = flops
        out[f"{precision}_probe_fractions"] = fractions
        out[f"{precision}_above_physical"] = above
        shown = ", ".join(f"{name} {f:.0%}" + (f" ({ABOVE})" if f > 1.0 else "") for name, f in fractions.items())
        out[f"{precision}_method"] = (f"physical peak {flops / 1e9:.0f} GFLOP/s: {peak.method}; probes as a "
                                      f"fraction of it: {shown}. {peaks.get(f'{precision}_method', '')}")
    return out


def physical_peak(device: torch.device, threads: int) -> tuple[PhysicalPeak | None, str]:
    """(the device's physical peak or None, why none when None)."""
    if device.type == "cuda":
        clock_hz, source = gpu_clock(device)
        props = torch.cuda.get_device_properties(device)
        peak = gpu_peak((props.major, props.minor), props.multi_processor_count, clock_hz or 0.0, source)
        return peak, "" if peak else (f"compute capability {props.major}.{props.minor} is not in the tables"
                                      if clock_hz else source)
    if device.type == "cpu":
        info = read_cpuinfo()
        clock_hz, source = cpu_clock(info)
        peak = cpu_peak(info, threads, clock_hz, source)
        return peak, "" if peak else (source if not clock_hz else "no known SIMD ISA in /proc/cpuinfo")
    return None, f"no physical peak tables for {device.type}"


def device_identity(device: torch.device | str) -> str:
    """Which physical device ``device`` is, whatever index CUDA_VISIBLE_DEVICES gives it in a process: the device
    type for a CPU; a GPU's name and UUID (cudaDeviceProp.uuid, one per GPU or MIG instance) on CUDA."""
    device = torch.device(device)
    if device.type != "cuda":
        return device.type
    props = torch.cuda.get_device_properties(device)
    return f"{props.name} {props.uuid}"


def nvml_facts(nvml: Any, handle: Any) -> dict[str, Any]:
    """What NVML says about the GPU a run measured on: driver, the CUDA version the driver supports, clocks (now and
    max), power limit, persistence and MIG mode. A query that fails is recorded as None, never guessed."""
    def ask(fn, *args, scale: float = 1.0):
        try:
            value = getattr(nvml, fn)(*args)
        except Exception:
            return None
        if isinstance(value, bytes):
            value = value.decode()
        return value * scale if isinstance(value, (int, float)) and scale != 1.0 else value

    mig = ask("nvmlDeviceGetMigMode", handle)
    return {
        "driver": ask("nvmlSystemGetDriverVersion"),
        "driver_cuda": ask("nvmlSystemGetCudaDriverVersion"),  # e.g. 12080 for 12.8
        "sm_clock_mhz": ask("nvmlDeviceGetClockInfo", handle, getattr(nvml, "NVML_CLOCK_SM", 1)),
        "sm_clock_max_mhz": ask("nvmlDeviceGetMaxClockInfo", handle, getattr(nvml, "NVML_CLOCK_SM", 1)),
        "mem_clock_max_mhz": ask("nvmlDeviceGetMaxClockInfo", handle, getattr(nvml, "NVML_CLOCK_MEM", 2)),
        "power_limit_w": ask("nvmlDeviceGetPowerManagementLimit", handle, scale=1e-3),  # NVML gives mW
        "persistence_mode": ask("nvmlDeviceGetPersistenceMode", handle),
        "mig_mode": list(mig) if isinstance(mig, (list, tuple)) else mig,  # [current, pending]; 1 = enabled
    }


def gpu_facts(device: torch.device) -> dict[str, Any]:
    """env.notes["gpu"]: the CUDA build and cuDNN version torch runs with, the device's properties, and NVML's facts
    where nvidia-ml-py is installed (else why not)."""
    props = torch.cuda.get_device_properties(device)
    facts: dict[str, Any] = {"torch_cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
                             "capability": f"{props.major}.{props.minor}", "sms": props.multi_processor_count,
                             "memory_gb": round(props.total_memory / 2**30, 1)}
    nvml, handle, why = nvml_handle(device)
    if nvml is None:
        facts["nvml"] = why
    else:
        facts.update(nvml_facts(nvml, handle))
    return facts
