"""bench.measure.memory.PeakMemory: a row's peak and its rise above the row's start, per platform."""
from __future__ import annotations

import sys

import pytest
import torch

from bench.measure import memory
from bench.measure.memory import PeakMemory

SIZE_MB = 128
linux = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self")


def _allocate_and_free(mb: int) -> None:
    x = torch.ones(mb * (1 << 20) // 4)  # written, so every page is resident
    del x


@linux
@pytest.mark.parametrize("resettable", [True, False], ids=["clear_refs", "sampled"])
def test_a_known_allocation_shows_in_delta(monkeypatch, resettable):
    if not resettable:  # the fallback for kernels / sandboxes where clear_refs is not writable
        monkeypatch.setattr(memory, "reset_linux_hwm", lambda: False)
    with PeakMemory("cpu") as mem:
        _allocate_and_free(SIZE_MB)
    assert mem.delta_mb == pytest.approx(SIZE_MB, abs=SIZE_MB * 0.15)
    assert mem.peak_mb >= mem.delta_mb
    assert mem.method


@linux
def test_a_block_that_allocates_nothing_shows_no_rise():
    _allocate_and_free(SIZE_MB)  # the allocation above, if any, is behind us: the block must not inherit it
    with PeakMemory("cpu") as mem:
        pass
    assert mem.delta_mb < 8
    assert mem.peak_mb > 0


def test_each_block_has_its_own_peak():
    with PeakMemory("cpu") as big:
        _allocate_and_free(SIZE_MB)
    with PeakMemory("cpu") as small:
        _allocate_and_free(8)
    assert small.delta_mb < big.delta_mb / 2


def test_ru_maxrss_is_bytes_on_macos_and_kilobytes_on_linux(monkeypatch):
    import resource

    class Usage:
        ru_maxrss = 1000

    monkeypatch.setattr(resource, "getrusage", lambda who: Usage())
    assert memory.ru_maxrss_bytes("darwin") == 1000
    assert memory.ru_maxrss_bytes("linux") == 1000 * 1024


def test_macos_path_takes_a_risen_ru_maxrss_in_bytes(monkeypatch):
    """On macOS the lifetime peak cannot be reset; when it rises inside the block the block set it."""
    readings = iter([500 << 20, 900 << 20])  # bytes, as macOS reports them
    monkeypatch.setattr(memory.sys, "platform", "darwin")
    monkeypatch.setattr(memory, "ru_maxrss_bytes", lambda platform=None: next(readings))
    monkeypatch.setattr(memory, "current_rss_bytes", lambda: 400 << 20)
    with PeakMemory("cpu") as mem:
        pass
    assert mem.start_bytes == 400 << 20
    assert mem.peak_mb == pytest.approx(900)
    assert mem.delta_mb == pytest.approx(500)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_delta_counts_a_known_tensor():
    dev = torch.device("cuda")
    keep = torch.ones(1 << 20, device=dev)  # allocated before: part of the start, not the delta
    with PeakMemory(dev) as mem:
        x = torch.ones(SIZE_MB * (1 << 20) // 4, device=dev)
        del x
    assert mem.delta_mb == pytest.approx(SIZE_MB, abs=2)
    assert mem.peak_mb >= mem.delta_mb + 4 - 0.5
    del keep


def test_held_is_what_the_block_keeps_and_peak_is_what_it_touched():
    import torch

    from bench.measure.memory import PeakMemory

    kept = []
    with PeakMemory("cpu") as mem:
        kept.append(torch.ones(16 * 2**20))  # 64 MB kept
        scratch = torch.ones(32 * 2**20)  # 128 MB, freed before the block ends
        del scratch
    assert mem.held_mb is not None and 48 <= mem.held_mb <= 80, mem.held_mb
    assert mem.delta_mb is not None and mem.delta_mb >= 150, mem.delta_mb


def test_reset_peak_forgets_a_one_off_allocation_but_keeps_the_start():
    import torch

    from bench.measure.memory import PeakMemory, return_freed_memory

    with PeakMemory("cpu") as mem:
        scratch = torch.ones(64 * 2**20)  # 256 MB, a one-off (like a first call's search workspace)
        del scratch
        return_freed_memory()
        mem.reset_peak()
        kept = torch.ones(8 * 2**20)  # 32 MB after the reset: the row's own
    assert mem.delta_mb is not None and 24 <= mem.delta_mb < 150, mem.delta_mb
    del kept


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_reset_peak_forgets_a_one_off_allocation():
    dev = torch.device("cuda")
    with PeakMemory(dev) as mem:
        scratch = torch.ones(256 * (1 << 20) // 4, device=dev)
        del scratch
        mem.reset_peak()
        kept = torch.ones(SIZE_MB * (1 << 20) // 4, device=dev)
    assert mem.delta_mb == pytest.approx(SIZE_MB, abs=2)
    del kept


def test_cuda_reset_peak_on_a_fake_allocator_keeps_the_start_and_forgets_the_one_off(monkeypatch):
    """The CUDA path's arithmetic on a stand-in allocator: an earlier row's 100 MB is the start (in the total peak,
    not above the start); a one-off 256 MB workspace before the reset is in neither; what the row holds and its
    steady work after the reset are."""
    from helpers import FakeCudaAllocator

    alloc = FakeCudaAllocator(monkeypatch)
    alloc.hold(100)  # earlier rows, still held
    with PeakMemory("cuda") as whole:
        alloc.hold(40)  # the row's data, model and optimizer
        alloc.transient(256)  # its first call: cuDNN's algorithm-search workspace
        alloc.transient(16)
    assert whole.method == "cuda max_memory_allocated"
    assert (whole.peak_mb, whole.delta_mb, whole.held_mb) == (396, 296, 40)  # without a reset: the one-off counts
    alloc.free(40)
    with PeakMemory("cuda") as mem:
        alloc.hold(40)
        alloc.transient(256)
        mem.reset_peak()
        alloc.transient(16)  # a steady call's activations
    assert mem.start_bytes == 100 << 20
    assert (mem.peak_mb, mem.delta_mb, mem.held_mb) == (156, 56, 40)


def test_a_frozen_heap_still_collects_the_cycles_made_inside_it_and_thaws_after():
    import gc
    import weakref

    from bench.measure.memory import frozen_heap

    class Node:
        pass

    before = Node()
    before.self = before  # alive when the block starts: frozen, never walked inside it
    with frozen_heap():
        assert gc.get_freeze_count() > 0
        made = Node()
        made.self = made  # a cycle: only the collector frees it
        dead = weakref.ref(made)
        del made
        gc.collect()
        assert dead() is None  # what the block made and dropped is still found
    assert gc.get_freeze_count() == 0
    gone = weakref.ref(before)
    del before
    gc.collect()
    assert gone() is None  # thawed: collectable again
