"""Peak memory of one measured row: the total peak and the peak above the row's starting point.

One ``PeakMemory`` block measures one row; rows are measured one at a time so each row's figure is its own.

How, per device:
- CUDA: the caching allocator's counters. After a sync, ``reset_peak_memory_stats`` at entry and the starting
  ``memory_allocated``; ``max_memory_allocated`` after a sync at exit. Exact for tensors (not the allocator's cache,
  not cuDNN workspaces outside it).
- Linux CPU: the kernel's resident-set high-water mark. Writing "5" to ``/proc/self/clear_refs`` resets ``VmHWM`` to
  the current RSS; ``VmHWM`` at exit is then this block's peak. Where that file is not writable, a thread samples
  RSS (``/proc/self/statm``) every few milliseconds, and a rise of ``ru_maxrss`` during the block (the process-wide
  high-water mark, which the block then set) replaces the sampled maximum with the exact value.
- macOS CPU: ``ru_maxrss`` cannot be reset (and is in bytes there, kilobytes on Linux): sampled RSS, corrected by a
  rise of ``ru_maxrss`` as above.
- MPS: ``torch.mps.driver_allocated_memory()`` (what Metal holds for this process) sampled by the same thread.
The method used is kept in ``method`` so a row can say how its memory was measured.
"""
from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Iterator
from typing import Callable

import torch

MB = float(1 << 20)
SAMPLE_INTERVAL_S = 0.002


def ru_maxrss_bytes(platform: str = sys.platform) -> int | None:
    """The process's lifetime peak RSS in bytes: ``ru_maxrss`` is bytes on macOS and kilobytes on Linux."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    value = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(value) if platform == "darwin" else int(value) * 1024


def _proc_status_bytes(field: str) -> int | None:
    """A ``kB`` line of /proc/self/status (VmHWM, VmRSS) in bytes; None where there is no such file."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def current_rss_bytes() -> int:
    """This process's resident set size now."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError, AttributeError):
        import psutil

        return int(psutil.Process().memory_info().rss)


def return_freed_memory() -> bool:
    """Hand memory that earlier rows freed back to the OS (glibc ``malloc_trim``), so the next block's RSS rise is its
    own allocations and not pages the allocator kept. False where that is not available (not glibc)."""
    import gc

    gc.collect()
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
        return True
    except (OSError, AttributeError):
        return False


@contextlib.contextmanager
def frozen_heap() -> Iterator[None]:
    """Collect once, then move every object alive now (the imported torch, ONNX, OpenVINO and Inductor modules, the
    run's records) to the collector's permanent generation for the block, and back after it (``gc.freeze``).

    Rows collect garbage before and after each measurement so a row's memory is its own; with those libraries loaded a
    full collection walked millions of objects, ~0.5 s a time on a 2-core CPU, several times per row (15 s of a
    52 s mlp infer phase). Inside the block a collection walks only what the block made, so everything it freed is
    still found; what was alive at its start stays alive anyway (the block's caller holds it)."""
    import gc

    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def reset_linux_hwm() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False where /proc/self/clear_refs is not writable."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return _proc_status_bytes("VmHWM") is not None
    except OSError:
        return False


class _Sampler:
    """A daemon thread recording the maximum of ``read()`` until stopped."""

    def __init__(self, read: Callable[[], int]):
        self.read, self.peak = read, read()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="peak-memory-sampler", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_INTERVAL_S):
            self.peak = max(self.peak, self.read())

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.read())
        return self.peak


class PeakMemory:
    """``with PeakMemory(device) as mem: ...`` then ``mem.peak_mb`` (total) and ``mem.delta_mb`` (above the start)."""

    def __init__(self, device: torch.device | str):
        self.device = torch.device(device)
        self.method: str | None = None
        self.start_bytes: int | None = None
        self.peak_bytes: int | None = None
        self.end_bytes: int | None = None  # what is held when the block ends (allocated on CUDA, RSS elsewhere)
        self._sampler: _Sampler | None = None
        self._maxrss_start: int | None = None

    @property
    def peak_mb(self) -> float | None:
        return None if self.peak_bytes is None else self.peak_bytes / MB

    @property
    def delta_mb(self) -> float | None:
        if self.peak_bytes is None or self.start_bytes is None:
            return None
        return max(self.peak_bytes - self.start_bytes, 0) / MB

    @property
    def held_mb(self) -> float | None:
        """What the block left allocated, above its start: the steady state, without its transient peaks."""
        if self.end_bytes is None or self.start_bytes is None:
            return None
        return max(self.end_bytes - self.start_bytes, 0) / MB

    def __enter__(self) -> PeakMemory:
        dev = self.device
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
            torch.cuda.reset_peak_memory_stats(dev)
            self.start_bytes = torch.cuda.memory_allocated(dev)
            self.method = "cuda max_memory_allocated"
        elif dev.type == "mps":
            torch.mps.synchronize()
            self._sampler = _Sampler(torch.mps.driver_allocated_memory)
            self.start_bytes = self._sampler.peak
            self.method = "mps driver_allocated_memory, sampled"
        else:
            return_freed_memory()  # pages earlier rows freed go back first: the block's rise is its own
            if sys.platform.startswith("linux") and reset_linux_hwm():
                self.start_bytes = _proc_status_bytes("VmRSS")
                self.method = "VmHWM after clear_refs"
            else:
                self._maxrss_start = ru_maxrss_bytes()
                self._sampler = _Sampler(current_rss_bytes)
                self.start_bytes = self._sampler.peak
                self.method = "RSS sampled every 2 ms"
        return self

    def reset_peak(self) -> None:
        """Forget the peak so far, keeping the start: a peak read after this excludes one-off work done before it
        (cuDNN's algorithm-search workspace on a shape's first call, which a later row would not pay again). Used
        after an inference row's warm calls (bench.phases.infer) and a training row's first step (bench.phases.train.phase).
        On CUDA ``reset_peak_memory_stats`` sets the peak to what is allocated now; on a CPU, freed pages go back to
        the OS first (``return_freed_memory``) so the new high-water mark starts from what is held."""
        dev = self.device
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
            torch.cuda.reset_peak_memory_stats(dev)
            return
        if dev.type == "mps":
            torch.mps.synchronize()
        else:  # pages the warm work freed go back first, as at entry: the peak from here is the row's own
            return_freed_memory()
        if self._sampler is not None:
            self._sampler.peak = self._sampler.read()
            self._maxrss_start = ru_maxrss_bytes() if dev.type != "mps" else self._maxrss_start
        else:
            reset_linux_hwm()

    def __exit__(self, *exc) -> None:
        dev = self.device
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
            self.peak_bytes = torch.cuda.max_memory_allocated(dev)
            self.end_bytes = torch.cuda.memory_allocated(dev)
            return
        if self._sampler is not None:
            if dev.type == "mps":
                torch.mps.synchronize()
            self.peak_bytes = self._sampler.stop()
            self._sampler = None
            if dev.type != "mps":
                self.peak_bytes = self._with_maxrss(self.peak_bytes)
        else:
            self.peak_bytes = _proc_status_bytes("VmHWM")
        if dev.type == "mps":
            self.end_bytes = torch.mps.driver_allocated_memory()
        else:  # freed pages go back first, so what is left is what the block still holds
            return_freed_memory()
            self.end_bytes = current_rss_bytes()

    def _with_maxrss(self, sampled: int) -> int:
        """When the lifetime peak rose inside the block, the block set it: that exact figure beats the samples."""
        end = ru_maxrss_bytes()
        if end is not None and self._maxrss_start is not None and end > self._maxrss_start:
            self.method = "ru_maxrss (set inside the block)"
            return max(end, sampled)
        return sampled
