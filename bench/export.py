"""ONNX export with a dynamic batch axis, and the parity of the exported graph against eager PyTorch.

Parity numbers are what they are: a graph that misses the 1e-4 tolerance is an ``ok`` record with ``parity_ok``
False, so the table shows it. Only a run that could not produce the numbers at all is ``failed``.
"""
from __future__ import annotations

import contextlib
import copy
import os
import shutil
import tempfile
import time
import warnings
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

import zoo
from bench.common import BenchContext, example_batch, failure, record, test_loader

TOLERANCE = 1e-4
INPUT_NAME, OUTPUT_NAME = "input", "logits"
# The protobuf limit is 2 GiB; past ~1.5 GiB of weights keep them in a side file so the graph file stays loadable.
EXTERNAL_DATA_BYTES = 3 * 2**29
EXPORT_BATCH = 2  # batch 1 would let the tracer specialise the batch axis away


class OnnxExportError(RuntimeError):
    """Neither exporter produced a model that passes onnx.checker."""


def _error_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0][:200] if text else ''}"


def _onnx_opset(path: str) -> int | None:
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
                opset_used = _onnx_opset(tmp_path)
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
                errors.append(f"{exporter}: {_error_line(exc)}")
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
    finally:
        src.train(was_training)
    raise OnnxExportError(f"ONNX export of {name} failed ({'; '.join(errors)})")


def ort_session(path: str, *, cuda: bool = False, threads: int | None = None) -> ort.InferenceSession:
    """An ONNX Runtime session: intra-op threads = torch's thread count unless given, one inter-op thread."""
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads or torch.get_num_threads()
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.log_severity_level = 3  # warnings about unused initialisers etc. are noise in a benchmark log
    providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if cuda else ["CPUExecutionProvider"]
    return ort.InferenceSession(path, sess_options=so, providers=providers)


@contextlib.contextmanager
def strict_fp32():
    """TF32 off while computing the eager reference: cuDNN convolutions use TF32 by default on Ampere and later."""
    conv, mm = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = conv, mm


def _onnx_mb(path: str) -> float:
    size = os.path.getsize(path) + (os.path.getsize(path + ".data") if os.path.exists(path + ".data") else 0)
    return round(size / 2**20, 3)


def measure_parity(name: str, model: nn.Module, ctx: BenchContext, onnx_path: str, *,
                   export_info: dict[str, Any] | None = None) -> dict[str, Any]:
    """Record of phase "parity": ONNX Runtime (CPU) against eager fp32 on ``ctx.device``.

    max_abs_diff / max_rel_diff over the logits of ``example_batch(name, 8)``; the relative diff is elementwise
    |ort - eager| / max(|eager|, 1e-6), its maximum (so it is large where a logit is near zero: read it with the
    absolute one). argmax_agreement is over the test split (``ctx.quick``: its first 512 samples). The graph must
    also take batch 1 and batch 3 (``dynamic_batch_ok``); if it does not, the record is failed.
    """
    info = dict(export_info or {})
    info.setdefault("onnx_path", os.path.abspath(onnx_path))
    info.setdefault("opset", _onnx_opset(onnx_path))
    info.setdefault("onnx_mb", _onnx_mb(onnx_path))
    model.eval()
    sess = ort_session(onnx_path)
    inp = sess.get_inputs()[0].name
    num_classes = zoo.get_spec(name).num_classes

    def both(x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        with torch.inference_mode(), strict_fp32():
            eager = model(x).float().cpu().numpy()
        onnx_out = sess.run(None, {inp: x.detach().cpu().numpy().astype(np.float32)})[0]
        return eager, onnx_out

    eager, onnx_out = both(example_batch(name, 8, ctx.device, seed=ctx.seed))
    diff = np.abs(onnx_out.astype(np.float64) - eager.astype(np.float64))
    max_abs = float(diff.max())
    max_rel = float((diff / np.maximum(np.abs(eager.astype(np.float64)), 1e-6)).max())
    fields: dict[str, Any] = {**info, "max_abs_diff": max_abs, "max_rel_diff": max_rel, "tolerance": TOLERANCE,
                              "parity_ok": bool(max_abs <= TOLERANCE)}

    try:
        for n in (1, 3):
            e, o = both(example_batch(name, n, ctx.device, seed=ctx.seed + n))
            if o.shape != (n, num_classes):
                raise ValueError(f"batch {n} gave output shape {tuple(o.shape)}, expected {(n, num_classes)}")
            fields["max_abs_diff_b1_b3"] = max(fields.get("max_abs_diff_b1_b3", 0.0), float(np.abs(o - e).max()))
        fields["dynamic_batch_ok"] = True
    except Exception as exc:  # ORT raises its own exception types for shape mismatches
        fields["dynamic_batch_ok"] = False
        return failure(name, ctx.device, "parity", f"exported graph rejects batch 1/3: {_error_line(exc)}", **fields)

    loader, source = test_loader(name, ctx, batch_size=256, samples=512 if ctx.quick else None)
    agree = total = 0
    for x, _ in loader.batches(0):
        e, o = both(x)
        agree += int((e.argmax(1) == o.argmax(1)).sum())
        total += x.shape[0]
    fields.update(argmax_agreement=agree / total if total else None, agreement_samples=total, data=source)
    return record(name, ctx.device, "parity", **fields)


def export_and_check(name: str, model: nn.Module, ctx: BenchContext, path: str, *,
                     opset: int | None = None) -> dict[str, Any]:
    """Export then measure parity; any failure becomes a failed "parity" record instead of an exception."""
    try:
        info = export_onnx(name, model, path, opset=opset)
    except Exception as exc:
        return failure(name, ctx.device, "parity", exc, onnx_path=os.path.abspath(path))
    try:
        return measure_parity(name, model, ctx, info["onnx_path"], export_info=info)
    except Exception as exc:
        return failure(name, ctx.device, "parity", exc, **info)
