"""The conditions a run was made under (bench.report.conditions): load against cores and calibration against the
same machine's other runs, marked in the index; the matrix crowns no best across loaded and quiet runs."""
from __future__ import annotations

import numpy as np

from bench.analysis.matrix import Run, label_runs, render
from bench.records import InferRecord, RunEnv
from bench.report.conditions import calibration_off, conditions, glance_line, index_cells


def samples(median, spread=0.01, n=50, seed=0):
    return (median * np.exp(np.random.default_rng(seed).normal(0, spread, n))).round(5).tolist()


def env(load=None, mm=0.3, **kw) -> RunEnv:
    notes = {} if load is None else {"load_avg_at_start": [load, 1.0, 1.0], "load_avg_at_end": [1.0, 1.0, 1.0]}
    base = dict(device="cpu", device_name="Test CPU", cpu_count=2, timestamp="2030-01-02T03:04:05+00:00",
                complete=True, notes=notes, calibration={"threads": 1, "run_threads": 2,
                                                         "probes": {"mm": {"samples_ms": samples(mm)}}})
    return RunEnv(**{**base, **kw})


def test_a_load_above_the_core_count_is_loaded():
    assert conditions(env(load=2.4)).loaded and not conditions(env(load=1.9)).loaded
    assert not conditions(env()).loaded  # not recorded: nothing claimed
    assert index_cells({"a": env(load=2.4)})["a"] == "**LOADED** load 2.40/1.00 (1-min, start/end) on 2 cores"
    assert glance_line(env(load=2.4)).startswith("Machine: **LOADED** load 2.40/1.00 (1-min, start/end) on 2 cores: "
                                                 "other processes shared the cores")


def test_calibration_is_off_only_beyond_the_machines_between_process_noise(tmp_path, monkeypatch):
    from bench.analysis.noise import NoiseProfile, RowNoise, cache_path, machine_of, write_profile

    quiet, slow, close = conditions(env(mm=0.3)), conditions(env(mm=0.45)), conditions(env(mm=0.31))
    def noisy(name):  # processes ~5% apart: a bound of ~+13%
        return RowNoise(("calibration", name), 0.05 ** 2, 9)

    [off] = calibration_off(slow, [quiet], noisy)
    assert off.startswith("mm +50.") and "noise bound +13" in off
    assert calibration_off(close, [quiet], noisy) == []  # +3%: within what fresh processes vary by
    assert calibration_off(slow, [quiet], lambda name: RowNoise(("calibration", name), 0.3 ** 2, 9)) == []
    assert calibration_off(quiet, [slow], noisy) == []  # the fastest run is the reference
    other_machine = conditions(env(mm=0.1, device_name="Other CPU"))
    assert calibration_off(slow, [other_machine], lambda name: None) == []  # nothing to compare with
    assert calibration_off(slow, [quiet], lambda name: None) is None  # no profile: not judged
    runs = {"a": env(load=1.0, mm=0.3, threads=2), "b": env(load=1.0, mm=0.45, threads=2)}
    cells = index_cells(runs)  # the tests' cache holds no profile
    assert cells["a"] == "load 1.00/1.00 (1-min, start/end) on 2 cores; calibration not judged (no noise profile)"
    write_profile(NoiseProfile(machine_of(runs["a"]), 2, 10, rows={("calibration", "mm"): noisy("mm")}),
                  [cache_path(machine_of(runs["a"]), 2)])
    cells = index_cells(runs)
    assert cells["a"] == "load 1.00/1.00 (1-min, start/end) on 2 cores"
    assert "; **calibration off**: mm +50." in cells["b"]


def row(p50):
    return InferRecord(model="mlp", device="cpu", backend="eager", batch_size=1, p50_ms=p50, iqr_ms=p50 * 0.02,
                       n_calls=100)


def test_the_matrix_crowns_no_best_across_loaded_and_quiet_runs():
    runs = [Run("q/cpu/results.json", env(load=1.0), [row(2.0)]), Run("l/cpu/results.json", env(load=9.0), [row(1.0)])]
    label_runs(runs)
    text = render(runs, "latency")
    line = next(x for x in text.splitlines() if x.startswith("| infer"))
    assert "**" not in line  # the loaded run is faster, but it is not raced against the quiet one
    assert "Run 2 was made under load" in text and "LOADED" in text
    runs[1] = Run("l2/cpu/results.json", env(load=1.5), [row(1.0)])
    label_runs(runs)
    line = next(x for x in render(runs, "latency").splitlines() if x.startswith("| infer"))
    assert "**1.00" in line  # both quiet: the best is marked
