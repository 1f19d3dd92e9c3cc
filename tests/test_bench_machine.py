"""bench.measure.machine: the calibration probe (fixed, single-threaded, raw samples kept), the measured peaks (a precision
without native support is skipped with its reason) and % of peak. Sizes are shrunk so the tests stay fast."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import bench.measure.machine as machine
from bench.measure.machine import calibrate, lacks_native, measure_peaks, pct_of_peak
from bench.report.load import probe_samples


@pytest.fixture
def small(monkeypatch):
    monkeypatch.setattr(machine, "PEAK_MATMUL_N", {"cpu": (32, 64), "cuda": (256, 512)})
    monkeypatch.setattr(machine, "PEAK_COPY_MB", {"cpu": 1, "cuda": 8})
    monkeypatch.setattr(machine, "PEAK_SECONDS", 0.01)


def test_calibration_keeps_raw_samples_and_medians():
    cal = calibrate("cpu", threads=2)
    assert cal["threads"] == 1 and cal["run_threads"] == 2 and cal["device"] == "cpu"
    assert "perf_counter" in cal["method"]
    assert set(cal["probes"]) == {"matmul_fp32_256", "copy_32MB", "pool_2t"}
    for name, probe in cal["probes"].items():
        if name == "pool_2t":  # capped at 5 s: on a machine whose cores are taken it may end early
            assert 0 < len(probe["samples_ms"]) <= machine.POOL_CALLS
        else:
            assert len(probe["samples_ms"]) == machine.CALIBRATION_CALLS
        assert probe["median_ms"] == pytest.approx(float(np.median(probe["samples_ms"])), rel=1e-3)
        assert probe["what"]
    assert "2 intra-op threads" in cal["probes"]["pool_2t"]["what"]
    assert {k: len(v) for k, v in probe_samples(cal).items()} == {
        k: len(p["samples_ms"]) for k, p in cal["probes"].items()}


def test_calibration_runs_single_threaded_and_restores_threads(monkeypatch):
    seen = []
    real = machine.sample_latencies

    def spy(fn, sync, **kw):
        seen.append(torch.get_num_threads())
        return real(fn, sync, **kw)

    monkeypatch.setattr(machine, "sample_latencies", spy)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        calibrate("cpu")  # the pool probe at the run's threads: torch's count when calibrate is called
        assert seen == [1, 1, 2]
        assert torch.get_num_threads() == 2
        seen.clear()
        calibrate("cpu", threads=1)  # named by its thread count, so runs at other threads never compare it
        assert seen == [1, 1, 1] and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_probe_samples_of_a_missing_or_odd_block():
    assert probe_samples({}) == {}
    assert probe_samples({"probes": {"x": {"samples_ms": []}, "y": "junk"}}) == {}


def test_peaks_measure_each_native_precision_and_skip_the_rest(small, monkeypatch):
    monkeypatch.setattr(machine, "cpu_flags", lambda: {"avx2", "avx512f"})
    peaks = measure_peaks("cpu", ["fp32", "bf16", "int8"])
    assert peaks["fp32_flops_per_s"] > 0 and "2n^3" in peaks["fp32_method"]
    assert peaks["mem_bytes_per_s"] > 0 and "read + written" in peaks["mem_method"]
    assert "bf16_flops_per_s" not in peaks and "avx512_bf16" in peaks["skipped"]["bf16"]
    assert "int8" in peaks["skipped"] and peaks["threads"] == torch.get_num_threads()


def test_bf16_counts_as_native_with_its_cpu_flag(small, monkeypatch):
    monkeypatch.setattr(machine, "cpu_flags", lambda: {"avx512_bf16"})
    assert lacks_native(torch.device("cpu"), "bf16") is None
    assert lacks_native(torch.device("cpu"), "fp16") is not None
    assert measure_peaks("cpu", ["bf16"])["bf16_flops_per_s"] > 0


def test_pct_of_peak_is_a_fraction_or_none():
    peaks = {"fp32_flops_per_s": 100e9}
    assert pct_of_peak(25e9, peaks, "fp32") == pytest.approx(0.25)
    assert pct_of_peak(25e9, peaks, "bf16") is None
    assert pct_of_peak(None, peaks, "fp32") is None
    assert pct_of_peak(1e9, {}, "fp32") is None


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_calibration_and_peaks_run_on_the_device(small):
    cal = calibrate("cuda")
    assert cal["device"].startswith("cuda") and "matmul_fp32_2048" in cal["probes"]
    peaks = measure_peaks("cuda", ["fp32", "bf16", "fp16"])
    assert peaks["fp32_flops_per_s"] > 0 and peaks["mem_bytes_per_s"] > 0


def test_the_peak_is_the_better_of_the_matmul_and_conv_probes(monkeypatch):
    from bench.measure import machine

    monkeypatch.setattr(machine, "_matmul_peak", lambda device, dtype: (2e11, "mm"))
    monkeypatch.setattr(machine, "_conv_peak", lambda device, dtype: (5e11, "conv"))
    monkeypatch.setattr(machine, "_copy_peak", lambda device: (1e10, "copy"))
    peaks = machine.measure_peaks("cpu", ["fp32"])
    assert peaks["fp32_flops_per_s"] == 5e11 and "mm (200 GFLOP/s)" in peaks["fp32_method"]
    assert "conv (500 GFLOP/s)" in peaks["fp32_method"]
    monkeypatch.setattr(machine, "_conv_peak", lambda device, dtype: (1e11, "conv"))
    assert machine.measure_peaks("cpu", ["fp32"])["fp32_flops_per_s"] == 2e11
