"""One maths policy for every backend, so an fp32 row means the same arithmetic whichever engine produced it.

PyTorch's defaults differ between engines: cuDNN may run fp32 convolutions in TF32 on Ampere and later, while ONNX
Runtime's CUDA provider has its own TF32 switch. A latency table that compares them is only fair when both do
IEEE fp32, so the run sets the policy once (``apply_policy``), records it in ``RunEnv.maths``, and builds ORT's CUDA
options from the same choices (``ort_cuda_options``). Lower precisions are explicit rows (``eager:bf16``), never a
silent TF32 inside an fp32 row.
"""
from __future__ import annotations

import contextlib
from typing import Any

import torch

# ORT's counterpart of cudnn.benchmark: "EXHAUSTIVE" tries every cuDNN forward algorithm once per shape
# (cudnnFindConvolutionForwardAlgorithmEx) and keeps the fastest; "HEURISTIC" asks cuDNN's heuristics,
# "DEFAULT" always uses IMPLICIT_PRECOMP_GEMM (ONNX Runtime docs, CUDA Execution Provider, cudnn_conv_algo_search).
ORT_CONV_ALGO_SEARCH = "EXHAUSTIVE"


# The process-wide flags the policy sets, as RunEnv.maths names them: what a scale worker reports back and the run
# checks (bench.phases.scale), since each torchrun rank is a process of its own.
POLICY_FLAGS = ("cudnn_benchmark", "cudnn_allow_tf32", "cuda_matmul_allow_tf32", "float32_matmul_precision")


def policy_state() -> dict[str, Any]:
    """POLICY_FLAGS as this process has them now: read, never set."""
    return {
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
        "cuda_matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
    }


def policy_mismatch(theirs: Any, mine: dict[str, Any]) -> str | None:
    """One line naming each of POLICY_FLAGS on which ``theirs`` (another process's report) differs from ``mine``;
    None when they agree."""
    if not isinstance(theirs, dict):
        return "no maths policy reported"
    diffs = [f"{k}={theirs.get(k)!r} (this run: {mine.get(k)!r})" for k in POLICY_FLAGS if theirs.get(k) != mine.get(k)]
    return ", ".join(diffs) or None


def apply_policy(device: torch.device | str) -> dict[str, Any]:
    """Set the run's maths policy (process-wide) and return it as the ``RunEnv.maths`` dict.

    cudnn.benchmark on: cuDNN times its algorithms per input shape on first use and keeps the fastest; the timed
    calls come after the backend's warm-up, so the search is never inside a sample. TF32 off for cuDNN convolutions
    and CUDA matmuls, and float32 matmul precision "highest": fp32 rows are IEEE fp32 on every GPU generation.
    The flags are set on the CPU too (they are global and harmless there) so the recorded policy is the real state.
    """
    device = torch.device(device)
    torch.backends.cudnn.benchmark = True
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")
    return {
        **policy_state(),
        "ort_cuda_cudnn_conv_algo_search": ORT_CONV_ALGO_SEARCH,
        "ort_cuda_use_tf32": 0,
        "ort_cpu": "fp32 (the CPU provider has no reduced-precision fp32 mode)",
        # The tutorials ran PyTorch's defaults (cudnn.benchmark off, cuDNN TF32 on); the bench's tutorial_loop rung
        # keeps their loop but not those defaults, so every rung of the ladder does the same arithmetic.
        "tutorial_loop_rung": "this policy, not PyTorch's defaults (cudnn.benchmark off, cudnn.allow_tf32 on)",
        "device": str(device),
    }


def ort_cuda_options(device: torch.device | str, stream: Any = None) -> dict[str, Any]:
    """Provider options for ORT's CUDAExecutionProvider matching ``apply_policy``, on ``device``'s GPU.

    Each key as the ONNX Runtime docs (CUDA Execution Provider, "Configuration Options") define it:
    - device_id: the GPU the session allocates on and runs on (default 0, which is wrong under --device cuda:1);
      taken from ``device``, or torch's current device when ``device`` has no index.
    - cudnn_conv_algo_search: how cuDNN picks a convolution algorithm; EXHAUSTIVE benchmarks them all on the first
      run of a shape (the counterpart of torch.backends.cudnn.benchmark; the cost lands in warm-up, not in samples).
    - use_tf32: 1 (ORT's default) lets fp32 matmuls and convolutions use TF32 tensor cores on Ampere and later; 0
      keeps IEEE fp32, the same maths as torch with allow_tf32 off.
    - user_compute_stream (only when ``stream`` is given, a torch.cuda.Stream): ORT runs its kernels on that stream
      instead of its own (it implies has_user_compute_stream). Without it ORT uses its own stream, and the bench's
      sync() is a device-wide synchronize, which waits for that stream too.
    """
    device = torch.device(device)
    if device.type != "cuda":
        raise ValueError(f"ORT CUDA options need a cuda device, not {device}")
    index = device.index if device.index is not None else torch.cuda.current_device()
    options: dict[str, Any] = {
        "device_id": int(index),
        "cudnn_conv_algo_search": ORT_CONV_ALGO_SEARCH,
        "use_tf32": 0,
    }
    if stream is not None:
        options["user_compute_stream"] = str(stream.cuda_stream)  # ORT reads the handle as a decimal string
    return options


@contextlib.contextmanager
def strict_fp32():
    """TF32 off inside the block, whatever the process-wide policy is, restored after: for references that must be
    IEEE fp32 even when called outside a bench run (the parity phase's eager side, tests)."""
    conv, mm = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    precision = torch.get_float32_matmul_precision()
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = conv, mm
        torch.set_float32_matmul_precision(precision)
