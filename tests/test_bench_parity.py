"""ONNX export (bench.export): checker, dynamic batch, atomic files, exporter fallback, parity records."""
from __future__ import annotations

import os

import numpy as np
import onnx
import pytest
import torch

import bench.export as export
from bench.common import BenchContext, example_batch, prepare_model
from bench.export import export_and_check, export_onnx, measure_parity, ort_session


@pytest.fixture(scope="module")
def ctx():
    return BenchContext(device=torch.device("cpu"), quick=True, synthetic=True, checkpoints=None)


@pytest.fixture(scope="module")
def exported(ctx, tmp_path_factory):
    """mlp and lenet exported once for the module: name -> (model, export info)."""
    folder = tmp_path_factory.mktemp("onnx")
    out = {}
    for name in ("mlp", "lenet"):
        model, _ = prepare_model(name, ctx)
        out[name] = (model, export_onnx(name, model, str(folder / f"{name}.onnx")))
    return out


@pytest.mark.parametrize("name", ["mlp", "lenet"])
def test_export_passes_the_checker_and_leaves_only_its_files(exported, name):
    _, info = exported[name]
    path = info["onnx_path"]
    assert info["exporter"] == "dynamo" and info["checker"] == "ok"
    assert isinstance(info["opset"], int) and info["opset"] >= 17
    assert info["export_s"] > 0 and info["onnx_mb"] > 0
    onnx.checker.check_model(path)
    leftovers = [f for f in os.listdir(os.path.dirname(path)) if f.startswith(".")]
    assert leftovers == []  # the temp folders are gone


@pytest.mark.parametrize("name", ["mlp", "lenet"])
def test_batch_axis_is_dynamic(exported, name):
    model, info = exported[name]
    sess = ort_session(info["onnx_path"])
    inp = sess.get_inputs()[0].name
    for n in (1, 3, 17):
        x = example_batch(name, n, torch.device("cpu"), seed=n)
        out = sess.run(None, {inp: x.numpy()})[0]
        assert out.shape == (n, 10)
        with torch.inference_mode():
            np.testing.assert_allclose(out, model(x).numpy(), atol=1e-4, rtol=0)


@pytest.mark.parametrize("name", ["mlp", "lenet"])
def test_parity_record(exported, ctx, name):
    model, info = exported[name]
    r = measure_parity(name, model, ctx, info["onnx_path"], export_info=info)
    assert r["phase"] == "parity" and r["status"] == "ok" and r["model"] == name and r["device"] == "cpu"
    assert r["parity_ok"] is True and r["tolerance"] == 1e-4
    assert 0 <= r["max_abs_diff"] <= 1e-4 and r["max_rel_diff"] >= 0
    assert r["dynamic_batch_ok"] is True
    assert r["agreement_samples"] == 512 and r["data"] == "synthetic"  # quick: the first 512 test samples
    assert r["argmax_agreement"] >= 0.99
    assert r["exporter"] == "dynamo" and r["export_s"] == info["export_s"] and r["checker"] == "ok"


def test_a_parity_miss_is_recorded_not_hidden(exported, ctx):
    model, info = exported["lenet"]
    other, _ = prepare_model("lenet", ctx)
    with torch.no_grad():
        other.load_state_dict(model.state_dict())
        other.fc2.bias += 1e-2  # the graph now disagrees with this module by exactly that much
    r = measure_parity("lenet", other, ctx, info["onnx_path"])
    assert r["status"] == "ok" and r["parity_ok"] is False
    assert r["max_abs_diff"] == pytest.approx(1e-2, rel=1e-3)
    assert r["opset"] == info["opset"] and r["onnx_mb"] == pytest.approx(info["onnx_mb"], abs=1e-3)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the legacy exporter, used on purpose for a static graph
def test_a_static_batch_graph_fails_the_record(ctx, tmp_path):
    model, _ = prepare_model("mlp", ctx)
    path = str(tmp_path / "static.onnx")
    with torch.no_grad():
        torch.onnx.export(model, (example_batch("mlp", 8, torch.device("cpu")),), path, dynamo=False)
    r = measure_parity("mlp", model, ctx, path)
    assert r["status"] == "failed" and r["dynamic_batch_ok"] is False
    assert "batch 1/3" in r["reason"]
    assert r["max_abs_diff"] <= 1e-4  # the batch-8 numbers that could be measured are kept


def test_dynamo_failure_falls_back_to_torchscript(ctx, tmp_path, monkeypatch):
    real_export = torch.onnx.export

    def flaky(*args, **kwargs):
        if kwargs.get("dynamo", True):
            raise RuntimeError("dynamo says no\nstack trace line")
        return real_export(*args, **kwargs)

    monkeypatch.setattr(torch.onnx, "export", flaky)
    model, _ = prepare_model("lenet", ctx)
    r = export_and_check("lenet", model, ctx, str(tmp_path / "lenet.onnx"))
    assert r["status"] == "ok" and r["exporter"] == "torchscript"
    assert r["exporter_fallback_reason"] == "dynamo: RuntimeError: dynamo says no"
    assert r["parity_ok"] is True and r["dynamic_batch_ok"] is True


def test_failed_export_is_a_failed_record_and_keeps_the_old_file(ctx, tmp_path, monkeypatch):
    path = tmp_path / "mlp.onnx"
    path.write_bytes(b"previous export")

    def broken(*args, **kwargs):
        raise RuntimeError("unsupported operator aten::magic")

    monkeypatch.setattr(torch.onnx, "export", broken)
    model, _ = prepare_model("mlp", ctx)
    r = export_and_check("mlp", model, ctx, str(path))
    assert r["phase"] == "parity" and r["status"] == "failed"
    assert "dynamo: RuntimeError: unsupported operator" in r["reason"] and "torchscript:" in r["reason"]
    assert path.read_bytes() == b"previous export"
    assert sorted(os.listdir(tmp_path)) == ["mlp.onnx"]


def test_external_data_moves_with_the_graph(ctx, tmp_path, monkeypatch):
    monkeypatch.setattr(export, "EXTERNAL_DATA_BYTES", 1)  # force the side file that a >2 GB model would need
    model, _ = prepare_model("mlp", ctx)
    info = export_onnx("mlp", model, str(tmp_path / "mlp.onnx"))
    files = sorted(os.listdir(tmp_path))
    assert files == ["mlp.onnx", "mlp.onnx.data"]
    assert info["onnx_mb"] * 2**20 == pytest.approx(sum(os.path.getsize(tmp_path / f) for f in files), abs=2e3)
    r = measure_parity("mlp", model, ctx, info["onnx_path"], export_info=info)
    assert r["parity_ok"] is True
