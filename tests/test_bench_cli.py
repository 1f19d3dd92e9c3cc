"""The bench command line: bench.run (errors, orchestration with fake measurements, a real tiny run)."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import types

import pytest
import torch

from bench import run

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _python(*args, timeout=120):
    return subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=timeout)


def _one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: ") and "Traceback" not in stderr
    return lines[0]


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_device_cuda_without_cuda_is_one_line_exit_2(tmp_path):
    proc = _python("-m", "bench.run", "--device", "cuda", "--models", "mlp", "--synthetic", "--out", str(tmp_path))
    assert proc.returncode == 2
    assert "cuda" in _one_error_line(proc.stderr).lower()
    assert not os.listdir(tmp_path)  # nothing measured, nothing written


@pytest.mark.parametrize("argv, expect", [
    (["--models", "mlp,resnet9000"], "choose from: mlp, lenet"),
    (["--phases", "train,warp"], "unknown phase 'warp'"),
    (["--backends", "eager,tensorrt"], "unknown backend 'tensorrt'"),
    (["--batch-sizes", "1,x"], "--batch-sizes"),
    (["--batch-sizes", "0"], "--batch-sizes"),
    (["--precisions", "fp8"], "unknown precision"),
    (["--train-variants", "channels_first"], "unknown training variant"),
    (["--data-root", "/nonexistent/data"], "--data-root"),
    (["--checkpoints", "/nonexistent/runs"], "--checkpoints"),
    (["--bogus-flag"], "unrecognized arguments"),
    (["--out", "/dev/null/results"], "--out"),
])
def test_bad_arguments_are_one_line_exit_2(tmp_path, capsys, argv, expect):
    assert run.main(["--device", "cpu", "--out", str(tmp_path), *argv]) == 2
    assert expect in _one_error_line(capsys.readouterr().err)
    assert not os.listdir(tmp_path)


# ---------------------------------------------------------------------------------------------------------------
# Orchestration with fake measurement functions: what is called, with what, and what is written.


@pytest.fixture
def fakes(monkeypatch):
    calls = {"infer": [], "train": [], "export": [], "parity": []}
    from bench.common import record

    def measure_inference(name, model, ctx, *, batch_sizes, backends, onnx_path=None):
        calls["infer"].append(dict(name=name, batch_sizes=batch_sizes, backends=backends, onnx_path=onnx_path,
                                   quick=ctx.quick))
        return [record(name, ctx.device, "infer", backend=b, batch_size=bs, precision="fp32", p50_ms=0.5 * bs,
                       p99_ms=0.6 * bs, mean_ms=0.5 * bs, iqr_ms=0.01, samples=10, samples_per_s=2000.0)
                for bs in batch_sizes for b in backends]

    def measure_training(name, ctx, *, precisions=("fp32",), extra_variants=()):
        calls["train"].append(dict(name=name, precisions=precisions, quick=ctx.quick))
        return [record(name, ctx.device, "train", loader=ld, batch_size=64, precision=p, channels_last=False,
                       compile=None, samples_per_s=100.0 * (i + 1), samples_per_s_iqr=1.0)
                for p in precisions for i, ld in enumerate(("seed", "tutorial", "fast", "compute"))]

    def export_onnx(name, model, path, *, opset=None):
        calls["export"].append(path)
        if name == "lenet" and fakes_state["export_fails"]:
            raise RuntimeError("exporter cannot trace this")
        return {"opset": 18, "exporter": "fake", "export_s": 0.1, "onnx_mb": 1.0}

    def measure_parity(name, model, ctx, onnx_path):
        calls["parity"].append(onnx_path)
        return record(name, ctx.device, "parity", max_abs_diff=1e-7, max_rel_diff=1e-6, argmax_agreement=1.0,
                      parity_ok=True, tolerance=1e-4)

    fakes_state = {"export_fails": False}
    mods = {"bench.infer": dict(measure_inference=measure_inference),
            "bench.train_phase": dict(measure_training=measure_training),
            "bench.export": dict(export_onnx=export_onnx, measure_parity=measure_parity)}
    for modname, attrs in mods.items():
        monkeypatch.setitem(sys.modules, modname, types.SimpleNamespace(**attrs))
    calls["state"] = fakes_state
    return calls


def _records(out):
    with open(os.path.join(out, "cpu", "results.json")) as f:
        return json.load(f)


def test_run_orchestrates_phases(tmp_path, capsys, fakes):
    out = str(tmp_path / "res")
    rc = run.main(["--device", "cpu", "--models", "mlp,alexnet_mnist", "--quick", "--synthetic", "--out", out,
                   "--checkpoints", str(tmp_path)])
    assert rc == 0
    data = _records(out)
    assert data["env"]["quick"] is True and data["env"]["command"].startswith("python -m bench.run")
    recs = data["records"]
    model = [r for r in recs if r["phase"] == "model"]
    assert [r["model"] for r in model] == ["mlp", "alexnet_mnist"]
    assert model[0]["params_total"] > 0 and model[0]["flops_per_sample"] > 0
    assert model[0]["weights"] == "random" and model[0]["data"] == "synthetic"
    # quick: eager + onnxruntime at 1 and min(recipe, 64); compile recorded as skipped, never run
    assert [c["batch_sizes"] for c in fakes["infer"]] == [[1], [64], [1], [64]]
    assert all(c["backends"] == ["eager", "onnxruntime"] and c["quick"] for c in fakes["infer"])
    skipped = [r for r in recs if r["status"] == "skipped"]
    assert {(r["model"], r["backend"], r["batch_size"], r["reason"]) for r in skipped} == {
        (m, "compile", bs, "quick: not run") for m in ("mlp", "alexnet_mnist") for bs in (1, 64)}
    assert fakes["export"][0] == os.path.join(out, "cpu", "onnx", "mlp.onnx")
    assert fakes["infer"][0]["onnx_path"] == fakes["export"][0] == fakes["parity"][0]
    parity = [r for r in recs if r["phase"] == "parity"]
    assert parity[0]["exporter"] == "fake" and parity[0]["opset"] == 18  # export numbers merged in
    assert len([r for r in recs if r["phase"] == "train"]) == 8
    for fname in ("results.csv", "summary.md", "latency.png", "train_throughput.png"):
        assert os.path.exists(os.path.join(out, "cpu", fname))
    assert "cpu/summary.md" in open(os.path.join(out, "README.md")).read()
    progress = [line for line in capsys.readouterr().err.splitlines() if line.startswith("[")]
    assert len(progress) == len(recs)
    assert progress[-1].startswith(f"[{len(recs)}/") and "mlp infer onnxruntime b=64 ... 32 ms p50" in "\n".join(
        progress)


def test_export_failure_and_broken_checkpoint_are_recorded(tmp_path, fakes):
    fakes["state"]["export_fails"] = True
    ckpts = tmp_path / "runs"
    (ckpts / "mlp").mkdir(parents=True)
    (ckpts / "mlp" / "best.pt").write_bytes(b"not a checkpoint")
    out = str(tmp_path / "res")
    rc = run.main(["--device", "cpu", "--models", "mlp,lenet", "--phases", "infer,parity", "--backends",
                   "eager,onnxruntime", "--batch-sizes", "2", "--synthetic", "--checkpoints", str(ckpts),
                   "--out", out])
    assert rc == 1  # results written, and the exit code says something failed
    recs = _records(out)["records"]
    mlp = [r for r in recs if r["model"] == "mlp"]
    assert len(mlp) == 1 and mlp[0]["phase"] == "model" and mlp[0]["status"] == "failed"
    assert "CheckpointError" in mlp[0]["reason"]
    lenet = {(r["phase"], r.get("backend")): r for r in recs if r["model"] == "lenet"}
    assert lenet[("infer", "eager")]["status"] == "ok"
    assert lenet[("infer", "onnxruntime")]["status"] == "failed"
    assert "ONNX export failed" in lenet[("parity", None)]["reason"]
    assert "cannot trace" in lenet[("parity", None)]["reason"]
    assert [c["backends"] for c in fakes["infer"]] == [["eager"]]


def test_interrupt_keeps_what_was_measured(tmp_path, fakes, monkeypatch):
    real = sys.modules["bench.infer"].measure_inference

    def interrupt_on_lenet(name, *a, **kw):
        if name == "lenet":
            raise KeyboardInterrupt
        return real(name, *a, **kw)

    monkeypatch.setattr(sys.modules["bench.infer"], "measure_inference", interrupt_on_lenet)
    out = str(tmp_path / "res")
    rc = run.main(["--device", "cpu", "--models", "mlp,lenet", "--phases", "infer", "--backends", "eager",
                   "--batch-sizes", "1", "--synthetic", "--out", out])
    assert rc == 130
    recs = _records(out)["records"]
    assert {r["model"] for r in recs} == {"mlp"} and any(r["phase"] == "infer" for r in recs)
    assert os.path.exists(os.path.join(out, "cpu", "latency.png"))  # drawn for what was measured
    assert not [f for f in os.listdir(os.path.join(out, "cpu")) if f.endswith(".tmp")]


@pytest.mark.skipif(importlib.util.find_spec("bench.infer") is None, reason="bench.infer not written yet")
def test_real_tiny_run(tmp_path):
    out = str(tmp_path / "res")
    proc = _python("-m", "bench.run", "--models", "mlp", "--phases", "infer", "--backends", "eager",
                   "--batch-sizes", "1", "--quick", "--synthetic", "--device", "cpu", "--out", out, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    for fname in ("results.json", "results.csv", "summary.md"):
        assert os.path.exists(os.path.join(out, "cpu", fname))
    recs = _records(out)["records"]
    infer = [r for r in recs if r["phase"] == "infer"]
    assert len(infer) == 1 and infer[0]["status"] == "ok" and infer[0]["p50_ms"] > 0
    assert infer[0]["backend"] == "eager" and infer[0]["batch_size"] == 1
