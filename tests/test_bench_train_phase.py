"""The training-throughput and scaling phases produce complete, consistent records (speed itself is not asserted)."""
from __future__ import annotations

import math

import pytest
import torch

from bench.common import BenchContext
from bench.scale import measure_scaling
from bench.train_phase import LOADER_ROWS, measure_training


@pytest.fixture
def ctx(tmp_path):
    return BenchContext(torch.device("cpu"), quick=True, synthetic=True, checkpoints=None, out_dir=str(tmp_path))


def test_training_rows_cover_every_loader_and_relate_to_each_other(ctx):
    rows = measure_training("mlp", ctx, batch_size=32, extra_variants=({"channels_last": True},))
    assert [r["loader"] for r in rows] == list(LOADER_ROWS) + ["compute"]
    for r in rows:
        assert r["status"] == "ok", r
        assert r["phase"] == "train" and r["model"] == "mlp" and r["device"] == "cpu"
        assert r["batch_size"] == 32 and r["precision"] == "fp32" and r["data"] == "synthetic"
        assert r["samples_per_s"] > 0 and math.isfinite(r["samples_per_s"])
        assert r["samples_per_s_iqr"] >= 0 and r["windows"] >= 3 and r["steps_per_window"] >= 1
        assert r["gflops_per_s"] > 0
    by = {r["loader"]: r for r in rows[:4]}
    assert by["seed"]["speedup_vs_seed"] == pytest.approx(1.0)
    for name in ("seed", "tutorial", "fast"):
        assert by[name]["fraction_of_compute"] == pytest.approx(
            by[name]["samples_per_s"] / by["compute"]["samples_per_s"])
    assert "fraction_of_compute" not in by["compute"]
    variant = rows[4]
    assert variant["channels_last"] is True
    assert variant["speedup_vs_fp32_compute"] == pytest.approx(
        variant["samples_per_s"] / by["compute"]["samples_per_s"])


def test_a_failing_variant_is_recorded_and_the_rest_goes_on(ctx):
    rows = measure_training("mlp", ctx, batch_size=16, rows=("compute",),
                           extra_variants=({"precision": "fp64-nonsense"},))
    assert rows[0]["status"] == "ok"
    assert rows[1]["status"] == "failed" and "fp64-nonsense" in rows[1]["reason"]


def test_scaling_runs_real_ddp_processes(ctx):
    rows = measure_scaling("mlp", ctx, max_procs=2, batch_size=32)
    assert [r["processes"] for r in rows] == [1, 2]
    for r in rows:
        assert r["status"] == "ok", r
        assert r["backend"] == "gloo" and r["samples_per_s"] > 0
    assert rows[0]["scaling_efficiency"] == pytest.approx(1.0)
    assert rows[1]["batch_size_global"] == 64
    assert rows[1]["scaling_efficiency"] == pytest.approx(rows[1]["samples_per_s"] / (2 * rows[0]["samples_per_s"]))
