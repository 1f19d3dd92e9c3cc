"""ONNX export (bench.model.export) and the parity phase (bench.phases.parity): checker, dynamic batch, atomic files,
exporter fallback, one export shared per model, parity records and the tolerance boundary."""
from __future__ import annotations

import os

import numpy as np
import onnx
import pytest
import torch

import bench.model.export as export
import bench.phases.parity as parity_mod
import zoo
from bench.backends.onnxruntime import ort_session
from bench.context import BenchContext, ModelSession, example_batch
from bench.model.export import export_onnx, onnx_export_info
from bench.phases.parity import ParityPhase, parity_ok
from bench.records import PARITY_ABS_TOLERANCE


def make_model(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return zoo.get_model(name).eval()


@pytest.fixture(scope="module")
def ctx(tmp_path_factory):
    return BenchContext(device=torch.device("cpu"), quick=True, synthetic=True, checkpoints=None,
                        out_dir=str(tmp_path_factory.mktemp("out")), threads=1)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """mlp and lenet exported once for the module: name -> (model, export info)."""
    folder = tmp_path_factory.mktemp("onnx")
    out = {}
    for name in ("mlp", "lenet"):
        model = make_model(name)
        out[name] = (model, export_onnx(name, model, str(folder / f"{name}.onnx")))
    return out


def session_with(name: str, model: torch.nn.Module, info: dict | None = None) -> ModelSession:
    """A session whose ONNX export is already made (``info``), as onnx_for leaves it."""
    session = ModelSession(name, model)
    if info is not None:
        session.cache[export.CACHE_KEY] = info
    return session


def parity(session: ModelSession, ctx: BenchContext):
    (record,) = ParityPhase().run(session, ctx)
    return record


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
    sess = ort_session(info["onnx_path"], threads=1, providers=["CPUExecutionProvider"])
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
    r = parity(session_with(name, model, info), ctx)
    assert r.phase == "parity" and r.status == "ok" and r.model == name and r.device == "cpu"
    assert r.parity_ok is True and r.tolerance == PARITY_ABS_TOLERANCE == 1e-4
    assert 0 <= r.max_abs_diff <= 1e-4 and r.max_rel_diff >= 0 and r.max_abs_diff_b1_b3 <= 1e-4
    assert r.dynamic_batch_ok is True
    assert r.agreement_samples == 512 and r.data == "synthetic"  # quick: the first 512 test samples
    assert r.argmax_agreement >= 0.99
    assert r.exporter == "dynamo" and r.export_s == info["export_s"] and r.checker == "ok"
    assert r.onnx_path == info["onnx_path"] and r.opset == info["opset"]


def test_a_small_parity_budget_takes_agreement_over_a_stated_prefix(exported, tmp_path):
    model, info = exported["mlp"]
    tight = BenchContext(device=torch.device("cpu"), synthetic=True, checkpoints=None, out_dir=str(tmp_path),
                         threads=1)
    tight.budget_for = lambda name, phase: 1e-6  # far less than one batch takes: one batch, and it says so
    r = parity(session_with("mlp", model, info), tight)
    assert r.status == "ok" and r.agreement_samples == parity_mod.AGREEMENT_BATCH


def test_tolerance_boundary():
    assert parity_ok(PARITY_ABS_TOLERANCE) is True  # exactly at the tolerance passes
    assert parity_ok(float(np.nextafter(PARITY_ABS_TOLERANCE, 1.0))) is False  # the next float above fails
    assert parity_ok(0.0) is True and parity_ok(float("nan")) is False and parity_ok(float("inf")) is False


def test_a_parity_miss_is_recorded_not_hidden(exported, ctx):
    model, info = exported["lenet"]
    other = make_model("lenet")
    with torch.no_grad():
        other.load_state_dict(model.state_dict())
        other.fc2.bias += 1e-2  # the graph now disagrees with this module by exactly that much
    r = parity(session_with("lenet", other, info), ctx)
    assert r.status == "ok" and r.parity_ok is False
    assert r.max_abs_diff == pytest.approx(1e-2, rel=1e-3)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the legacy exporter, used on purpose for a static graph
def test_a_static_batch_graph_fails_the_record(ctx, tmp_path):
    model = make_model("mlp")
    path = str(tmp_path / "static.onnx")
    with torch.no_grad():
        torch.onnx.export(model, (example_batch("mlp", 8, torch.device("cpu")),), path, dynamo=False)
    r = parity(session_with("mlp", model, {"onnx_path": path, "exporter": "torchscript"}), ctx)
    assert r.status == "failed" and r.dynamic_batch_ok is False
    assert "batch 1/3" in r.reason
    assert r.max_abs_diff <= 1e-4  # the batch-8 numbers that could be measured are kept


def test_dynamo_failure_falls_back_to_torchscript(ctx, tmp_path, monkeypatch):
    real_export = torch.onnx.export

    def flaky(*args, **kwargs):
        if kwargs.get("dynamo", True):
            raise RuntimeError("dynamo says no\nstack trace line")
        return real_export(*args, **kwargs)

    monkeypatch.setattr(torch.onnx, "export", flaky)
    run_ctx = BenchContext(device=torch.device("cpu"), quick=True, synthetic=True, out_dir=str(tmp_path), threads=1)
    r = parity(session_with("lenet", make_model("lenet")), run_ctx)
    assert r.status == "ok" and r.exporter == "torchscript"
    assert r.exporter_fallback_reason == "dynamo: RuntimeError: dynamo says no"
    assert r.parity_ok is True and r.dynamic_batch_ok is True
    assert r.onnx_path == export.onnx_path_for(str(tmp_path), "lenet") and os.path.isfile(r.onnx_path)


def test_failed_export_is_a_failed_record_and_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "onnx" / "mlp.onnx"
    path.parent.mkdir()
    path.write_bytes(b"previous export")

    def broken(*args, **kwargs):
        raise RuntimeError("unsupported operator aten::magic")

    monkeypatch.setattr(torch.onnx, "export", broken)
    run_ctx = BenchContext(device=torch.device("cpu"), quick=True, synthetic=True, out_dir=str(tmp_path), threads=1)
    r = parity(session_with("mlp", make_model("mlp")), run_ctx)
    assert r.phase == "parity" and r.status == "failed"
    assert "dynamo: RuntimeError: unsupported operator" in r.reason and "torchscript:" in r.reason
    assert path.read_bytes() == b"previous export"
    assert sorted(os.listdir(path.parent)) == ["mlp.onnx"]


def test_external_data_moves_with_the_graph(ctx, tmp_path, monkeypatch):
    monkeypatch.setattr(export, "EXTERNAL_DATA_BYTES", 1)  # force the side file that a >2 GB model would need
    model = make_model("mlp")
    info = export_onnx("mlp", model, str(tmp_path / "mlp.onnx"))
    files = sorted(os.listdir(tmp_path))
    assert files == ["mlp.onnx", "mlp.onnx.data"]
    assert info["onnx_mb"] * 2**20 == pytest.approx(sum(os.path.getsize(tmp_path / f) for f in files), abs=2e3)
    assert export.onnx_mb(info["onnx_path"]) == pytest.approx(info["onnx_mb"], abs=2e-3)
    assert parity(session_with("mlp", model, info), ctx).parity_ok is True


def test_parity_and_infer_share_one_export(ctx, monkeypatch):
    session = session_with("mlp", make_model("mlp"))
    calls = []
    real = export.export_onnx
    monkeypatch.setattr(export, "export_onnx", lambda *a, **k: calls.append(a) or real(*a, **k))
    assert parity(session, ctx).status == "ok"
    assert export.onnx_for(session, ctx) == onnx_export_info(session, ctx)["onnx_path"]
    assert len(calls) == 1
