"""ONNX export with a dynamic batch axis, checked by onnx.checker and placed atomically; one export per model per run.

``onnx_for(session, ctx)`` exports a model once into ``ctx.out_dir/onnx/NAME.onnx`` and keeps the result (or the
failure) in ``session.cache``, so the parity phase and every ONNX backend of the infer phase use the same file.
"""
from __future__ import annotations

import copy
import os
import shutil
import tempfile
import time
import warnings
from typing import Any

import onnx
import torch
from torch import nn

from bench.context import BenchContext, ModelSession, example_batch
from bench.records import reason_of

INPUT_NAME, OUTPUT_NAME = "input", "logits"
# The protobuf limit is 2 GiB; past ~1.5 GiB of weights keep them in a side file so the graph file stays loadable.
EXTERNAL_DATA_BYTES = 3 * 2**29
EXPORT_BATCH = 2  # batch 1 would let the tracer specialise the batch axis away


CACHE_KEY = "onnx_export"  # session.cache: the export's info dict, or the OnnxExportError it ended with


class OnnxExportError(RuntimeError):
    """Neither exporter produced a model that passes onnx.checker."""


def onnx_opset(path: str) -> int | None:
    """The default-domain opset a graph file imports."""
    model = onnx.load(path, load_external_data=False)
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return int(imp.version)
    return None


def _export_dynamo(model: nn.Module, x: torch.Tensor, path: str, opset: int | None, external: bool) -> None:
    batch = torch.export.Dim("batch")
    torch.onnx.export(model, (x,), path, dynamo=True, input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                      dynamic_shapes=({0: batch},), opset_version=opset, external_data=external, verbose=False)


def _export_torchscript(model: nn.Module, x: torch.Tensor, path: str, opset: int | None, external: bool) -> None:
    del external  # the TorchScript exporter goes external by itself only past 2 GiB
    with warnings.catch_warnings():  # it is the fallback on purpose; its deprecation notice is noise here
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(model, (x,), path, dynamo=False, input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                          dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}}, opset_version=opset)


def export_onnx(name: str, model: nn.Module, path: str, *, opset: int | None = None) -> dict[str, Any]:
    """Export ``model`` to ``path`` with a dynamic batch axis; the file appears only once onnx.checker passed.

    The dynamo exporter is tried first and the TorchScript one after it fails (``exporter`` says which made the file,
    ``exporter_fallback_reason`` why the first failed). Returns opset, exporter, export_s, onnx_mb, onnx_path, checker.
    Raises OnnxExportError when neither works.
    """
    path = os.path.abspath(path)
    folder, base = os.path.split(path)
    os.makedirs(folder, exist_ok=True)
    param_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    external = param_bytes >= EXTERNAL_DATA_BYTES
    # Export a CPU copy in eval mode: no device constants in the graph, no dropout, the caller's model untouched.
    src = model if next(model.parameters()).device.type == "cpu" else copy.deepcopy(model).cpu()
    was_training = src.training
    src.eval()
    x = example_batch(name, EXPORT_BATCH, torch.device("cpu"))
    errors: list[str] = []
    try:
        for exporter, fn in (("dynamo", _export_dynamo), ("torchscript", _export_torchscript)):
            # A fresh temp folder next to the target: the exporter names side files after the graph file, so the
            # final base name is used inside it and every file moves out with os.replace (same filesystem).
            tmp = tempfile.mkdtemp(prefix=f".{base}.", dir=folder)
            try:
                tmp_path = os.path.join(tmp, base)
                t0 = time.perf_counter()
                with torch.no_grad():
                    fn(src, x, tmp_path, opset, external)
                export_s = time.perf_counter() - t0
                onnx.checker.check_model(tmp_path)  # the path form: works past 2 GiB and with external data
                produced = sorted(os.listdir(tmp))
                onnx_bytes = sum(os.path.getsize(os.path.join(tmp, f)) for f in produced)
                opset_used = onnx_opset(tmp_path)
                for f in produced:  # side files first, so the graph never points at data not yet in place
                    if f != base:
                        os.replace(os.path.join(tmp, f), os.path.join(folder, f))
                os.replace(tmp_path, path)
                stale = path + ".data"
                if base + ".data" not in produced and os.path.exists(stale):
                    os.remove(stale)
                info = {"opset": opset_used, "exporter": exporter, "export_s": round(export_s, 3),
                        "onnx_mb": round(onnx_bytes / 2**20, 3), "onnx_path": path, "checker": "ok"}
                if errors:
                    info["exporter_fallback_reason"] = errors[0]
                return info
            except Exception as exc:  # any exporter or checker error: try the next exporter, keep the reason
                errors.append(f"{exporter}: {reason_of(exc)}")
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
    finally:
        src.train(was_training)
    raise OnnxExportError(f"ONNX export of {name} failed ({'; '.join(errors)})")


def onnx_path_for(out_dir: str, name: str) -> str:
    return os.path.abspath(os.path.join(out_dir, "onnx", f"{name}.onnx"))


def onnx_export_info(session: ModelSession, ctx: BenchContext) -> dict[str, Any]:
    """The export info of ``session``'s model (see ``export_onnx``), exporting on first use only.

    A failed export is cached too and raised again as the same OnnxExportError: the second user of the file gets the
    first failure's reason instead of paying for (and maybe differing in) a second attempt.
    """
    cached = session.cache.get(CACHE_KEY)
    if cached is None:
        try:
            cached = export_onnx(session.name, session.model, onnx_path_for(ctx.out_dir, session.name))
        except OnnxExportError as exc:
            cached = exc
        session.cache[CACHE_KEY] = cached
    if isinstance(cached, OnnxExportError):
        raise cached
    return dict(cached)


def onnx_for(session: ModelSession, ctx: BenchContext) -> str:
    """The path of ``session``'s ONNX file (exported once per run); OnnxExportError when it cannot be made."""
    return onnx_export_info(session, ctx)["onnx_path"]


def onnx_mb(path: str) -> float:
    """Size of the graph file plus its external-data side file, if any."""
    size = os.path.getsize(path) + (os.path.getsize(path + ".data") if os.path.exists(path + ".data") else 0)
    return round(size / 2**20, 3)
