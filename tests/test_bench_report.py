"""bench.report (tables, files, plots, the README index) and bench.compare's verdicts, from hand-made records."""
from __future__ import annotations

import csv
import json
import os

import pytest

from bench import compare, plots, report


def _env(device="cpu", quick=False, **kw):
    env = {"torch": "2.x", "torchvision": "0.x", "onnxruntime": "1.x", "python": "3.11", "platform": "Linux",
           "device": device, "device_name": f"Test {device.upper()}", "cuda": None, "cpu_threads": 2, "cpu_count": 2,
           "memory_gb": 16.0, "git_commit": "abc1234", "timestamp": "2030-01-01T00:00:00+00:00", "quick": quick}
    env.update(kw)
    return env


def _train(model, loader, sps, *, precision="fp32", status="ok", **kw):
    rec = {"model": model, "device": "cpu", "phase": "train", "status": status, "loader": loader, "batch_size": 64,
           "precision": precision, "channels_last": False, "compile": None}
    if status == "ok":
        rec.update(samples_per_s=sps, samples_per_s_iqr=sps * 0.05, windows=5, steps_per_window=10)
    rec.update(kw)
    return rec


def _infer(model, backend, bs, p50, *, status="ok", **kw):
    rec = {"model": model, "device": "cpu", "phase": "infer", "status": status, "backend": backend, "batch_size": bs,
           "precision": "fp32"}
    if status == "ok":
        rec.update(p50_ms=p50, p90_ms=p50 * 1.1, p99_ms=p50 * 1.3, mean_ms=p50 * 1.05, iqr_ms=p50 * 0.02,
                   samples=100, samples_per_s=bs / (p50 * 1.05e-3), threads=2)
    rec.update(kw)
    return rec


def sample_records():
    model = {"device": "cpu", "phase": "model", "status": "ok", "weights": "random", "checkpoint": None,
             "checkpoint_acc": None, "pretrained": False, "data": "synthetic"}
    return [
        {**model, "model": "mlp", "params_total": 669706, "params_trainable": 669706, "flops_per_sample": 1.34e6,
         "input_shape": "1x28x28"},
        _train("mlp", "seed", 1000.0), _train("mlp", "tutorial", 1500.0),
        _train("mlp", "fast", 9000.0, speedup_vs_seed=9.0, fraction_of_compute=0.9, gflops_per_s=12.5),
        _train("mlp", "compute", 10000.0),
        _train("mlp", "fast", 11000.0, precision="bf16"),
        _infer("mlp", "eager", 1, 0.2), _infer("mlp", "onnxruntime", 1, 0.1, speedup_vs_eager=2.0),
        _infer("mlp", "compile", 1, None, status="skipped", reason="quick: not run"),
        _infer("mlp", "eager", 64, 1.0), _infer("mlp", "onnxruntime", 64, 0.2),
        {"model": "mlp", "device": "cpu", "phase": "parity", "status": "ok", "opset": 18, "exporter": "dynamo",
         "max_abs_diff": 2e-7, "max_rel_diff": 1e-5, "argmax_agreement": 1.0, "agreement_samples": 512,
         "parity_ok": True, "tolerance": 1e-4, "onnx_mb": 2.6, "export_s": 1.2},
        {**model, "model": "lenet", "params_total": 215370, "params_trainable": 215370, "flops_per_sample": 6.05e6,
         "input_shape": "1x28x28", "weights": "checkpoint", "checkpoint_acc": 0.987},
        _train("lenet", "seed", 500.0), _train("lenet", "tutorial", None, status="failed",
                                               reason="RuntimeError: loader exploded"),
        {"model": "lenet", "device": "cpu", "phase": "parity", "status": "ok", "opset": 18, "exporter": "dynamo",
         "max_abs_diff": 3e-3, "max_rel_diff": 0.2, "argmax_agreement": 0.99, "parity_ok": False, "tolerance": 1e-4},
        {"model": "cifar_cnn", "device": "cpu", "phase": "model", "status": "failed",
         "reason": "CheckpointError: runs/cifar_cnn/best.pt is truncated"},
    ]


def test_summary_renders_every_table():
    text = report.render_summary(_env(quick=True), sample_records())
    assert text.startswith("# QUICK RUN")
    for heading in ("## Zoo", "## Training throughput", "## Inference latency", "## ONNX parity",
                    "## Failed and skipped", "How to read this"):
        assert heading in text
    assert "669,706" in text and "98.7%" in text  # params with separators, checkpoint accuracy
    assert "9.00x" in text and "90.0%" in text  # fast vs seed, fast % of compute
    bf16 = [line for line in text.splitlines() if line.startswith("| mlp") and "bf16" in line]
    assert len(bf16) == 1 and "11,000" in bf16[0]  # the extra precision is a row of its own
    assert "onnxruntime p50 ms" in text and "2.00x" in text  # backends side by side, speedup vs eager
    assert "5.00x" in text  # eager 1.0 / ORT 0.2 at b=64: computed when the record lacks it
    assert "PASS" in text and "FAIL" in text
    assert "quick: not run" in text and "loader exploded" in text and "is truncated" in text
    assert "![latency.png](latency.png)" in text


def test_summary_says_when_a_phase_did_not_run():
    records = [r for r in sample_records() if r["phase"] != "train"]
    text = report.render_summary(_env(), records)
    assert text.startswith("# Benchmark on Test CPU")
    assert "QUICK" not in text.split("\n")[0]
    assert "_training phase not run_" in text
    assert "train_throughput.png" not in text
    assert "_nothing failed or was skipped_" in report.render_summary(_env(), [])


def test_csv_has_the_union_of_keys(tmp_path):
    records = sample_records()
    report.write_results(str(tmp_path), _env(), records, plots=False)
    with open(tmp_path / "results.csv") as f:
        rows = list(csv.DictReader(f))
    union = {k for r in records for k in r}
    assert set(rows[0]) == union
    assert len(rows) == len(records)
    assert rows[0]["checkpoint"] == ""  # None is an empty cell
    assert rows[-1]["reason"].startswith("CheckpointError")


def test_json_round_trips_and_non_finite_becomes_null(tmp_path):
    records = sample_records()
    report.write_results(str(tmp_path), _env(), records, plots=False)
    env, loaded = report.load_results(str(tmp_path / "results.json"))
    assert env == _env() and loaded == records
    report.write_results(str(tmp_path), _env(), [_infer("mlp", "eager", 1, float("nan"))], plots=False)
    with open(tmp_path / "results.json") as f:
        assert json.load(f)["records"][0]["p50_ms"] is None


def test_writes_are_atomic(tmp_path):
    report.write_results(str(tmp_path), _env(), sample_records())
    before = (tmp_path / "results.json").read_text()
    with pytest.raises(TypeError):  # a value JSON cannot hold: nothing is written, the old files stay whole
        report.write_results(str(tmp_path), _env(), [{"model": "x", "phase": "infer", "p50_ms": object()}])
    assert (tmp_path / "results.json").read_text() == before
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp") or f.startswith(".")]
    assert {"results.json", "results.csv", "summary.md", "latency.png", "train_throughput.png"} <= set(
        os.listdir(tmp_path))


def test_plots_skip_missing_phases_and_remove_stale_ones(tmp_path):
    written = plots.write_plots(str(tmp_path), sample_records())
    assert sorted(os.path.basename(p) for p in written) == ["latency.png", "train_throughput.png"]
    assert (tmp_path / "latency.png").read_bytes()[:4] == b"\x89PNG"
    only_failed = [_infer("mlp", "eager", 1, None, status="failed", reason="boom")]
    assert plots.write_plots(str(tmp_path), only_failed) == []
    assert not (tmp_path / "latency.png").exists() and not (tmp_path / "train_throughput.png").exists()


def test_readme_index_lists_every_run(tmp_path):
    report.write_results(str(tmp_path / "cpu"), _env("cpu", quick=True), sample_records(), plots=False)
    report.write_results(str(tmp_path / "cuda"), _env("cuda"), sample_records()[:3], plots=False)
    os.makedirs(tmp_path / "mps")
    (tmp_path / "mps" / "results.json").write_text("{not json")
    text = open(report.write_index(str(tmp_path))).read()
    assert "[cpu/summary.md](cpu/summary.md)" in text and "[cuda/summary.md](cuda/summary.md)" in text
    assert "Test CPU" in text and "Test CUDA" in text and "abc1234" in text
    cpu_row = next(line for line in text.splitlines() if line.startswith("| cpu"))
    assert "QUICK" in cpu_row
    assert "unreadable" in next(line for line in text.splitlines() if line.startswith("| mps"))


def test_report_cli_rerenders(tmp_path, capsys):
    report.write_results(str(tmp_path / "cpu"), _env(), sample_records(), plots=False)
    os.remove(tmp_path / "cpu" / "summary.md")
    assert report.main([str(tmp_path / "cpu" / "results.json")]) == 0
    assert (tmp_path / "cpu" / "summary.md").exists() and (tmp_path / "README.md").exists()
    assert report.main([str(tmp_path / "missing.json")]) == 2
    assert capsys.readouterr().err.strip().startswith("error:")


# ---------------------------------------------------------------------------------------------------------------
# compare


def test_compare_flags_a_large_regression_with_tight_iqr():
    a = [_infer("mlp", "eager", 64, 1.0)]  # iqr 2% of p50
    b = [_infer("mlp", "eager", 64, 1.5)]
    result = compare.compare(a, b, ["p50_ms", "samples_per_s"])
    verdicts = {m: rows[0][-1] for m, rows in result["tables"].items()}
    assert verdicts == {"p50_ms": "regression", "samples_per_s": "regression"}
    metric, _, worse = max(result["regressions"], key=lambda r: r[2])
    assert metric == "p50_ms" and worse == pytest.approx(50.0)


def test_compare_calls_a_small_change_with_wide_iqr_noise():
    a = [_train("mlp", "fast", 1000.0, samples_per_s_iqr=100.0)]  # 10% IQR
    b = [_train("mlp", "fast", 970.0, samples_per_s_iqr=100.0)]
    change, threshold, word = compare.verdict("samples_per_s", 1000.0, 970.0, 0.1, 0.1)
    assert word == "within noise" and change == pytest.approx(-3.0) and threshold == pytest.approx(20.0)
    assert compare.compare(a, b, ["samples_per_s"])["tables"]["samples_per_s"][0][-1] == "within noise"
    # Even with no IQR at all, 2% is the floor: 1.5% is noise, 5% faster is an improvement.
    assert compare.verdict("p50_ms", 1.0, 1.015, None, None)[2] == "within noise"
    assert compare.verdict("p50_ms", 1.0, 0.95, None, None)[2] == "improvement"


def test_compare_matches_on_variant_not_just_model():
    a = [_train("mlp", "fast", 1000.0), _train("mlp", "fast", 3000.0, precision="bf16")]
    b = [_train("mlp", "fast", 1000.0), _train("mlp", "fast", 1000.0, precision="bf16")]
    result = compare.compare(a, b, ["samples_per_s"])
    words = sorted(row[-1] for row in result["tables"]["samples_per_s"])
    assert words == ["regression", "within noise"]
    assert compare.compare(a, [], ["samples_per_s"])["only_a"]
