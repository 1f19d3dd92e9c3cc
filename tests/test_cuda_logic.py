"""The CPU-side logic of the CUDA paths, with the GPU's answers stood in for: which precisions a GPU runs natively,
its physical peak, which device each row's figures belong to. tests/test_cuda_paths.py runs the real paths on a GPU."""
from __future__ import annotations

import pytest
import torch

from bench.backends.torch_eager import EagerBf16Backend
from bench.env import precision_support


@pytest.fixture
def fake_gpu(monkeypatch):
    """A stand-in GPU of a given compute capability whose torch.cuda.is_bf16_supported() says True (emulation)."""

    def make(capability: tuple[int, int], name: str = "Tesla T4"):
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: name)
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        return torch.device("cuda", 0)

    return make


def test_bf16_on_a_gpu_without_bf16_tensor_cores_is_left_out(fake_gpu):
    device = fake_gpu((7, 5))  # T4: is_bf16_supported() is True by default there, through emulation
    support = precision_support(device)
    assert support["bf16"] is not None and "7.5" in support["bf16"] and "Tesla T4" in support["bf16"]
    assert support["fp16"] is None  # fp16 tensor cores from 7.0
    assert "7.5" in EagerBf16Backend.available(device)


def test_bf16_on_ampere_and_later_is_native(fake_gpu):
    device = fake_gpu((8, 0), "NVIDIA A100")
    assert precision_support(device) == {"fp32": None, "bf16": None, "fp16": None}
    assert EagerBf16Backend.available(device) is None


def test_fp16_below_volta_is_left_out(fake_gpu):
    assert "6.1" in precision_support(fake_gpu((6, 1), "GTX 1080"))["fp16"]


def test_tensorrt_must_match_torchs_major_minor():
    from bench.backends.tensorrt import install_command, major_minor, pair_mismatch

    assert major_minor("2.14.1+cu128") == "2.14" and major_minor("2.15.0.dev20260101") == "2.15"
    assert pair_mismatch("2.14.0", "2.14.1+cu128") is None
    assert pair_mismatch(None, "2.14.1") is None  # not installed: missing_package says so
    why = pair_mismatch("2.15.0", "2.14.1+cu128")
    assert "torch-tensorrt 2.15.0 is built for torch 2.15" in why and 'pip install "torch-tensorrt==2.14.*"' in why
    assert install_command("2.9.0") == 'pip install "torch-tensorrt==2.9.*"'


def test_a_mismatched_torch_tensorrt_is_a_skipped_row_with_the_install_command(fake_gpu, monkeypatch):
    import bench.backends.tensorrt as trt

    device = fake_gpu((9, 0), "NVIDIA H100")
    monkeypatch.setattr(trt, "installed_version", lambda dist=trt.DIST: "1.0.0")
    monkeypatch.setattr(trt.TensorRtBackend, "import_package", classmethod(lambda cls: pytest.fail("imported")))
    why = trt.TensorRtBackend.available(device)
    assert "built for torch 1.0" in why and f"=={trt.major_minor(torch.__version__)}.*" in why


def test_onnxruntime_build_says_which_package_and_warns_on_two():
    from bench.env import onnxruntime_build

    build, warning = onnxruntime_build({"onnxruntime-gpu": "1.22.0"}, ["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert build == "onnxruntime-gpu 1.22.0; providers: CUDAExecutionProvider, CPUExecutionProvider" and warning is None
    build, warning = onnxruntime_build({"onnxruntime": "1.22.0", "onnxruntime-gpu": "1.22.0"}, ["CPUExecutionProvider"])
    assert "onnxruntime and onnxruntime-gpu are all installed" in warning
    assert warning.endswith("pip uninstall -y onnxruntime onnxruntime-gpu && pip install onnxruntime-gpu")
    build, warning = onnxruntime_build({}, None)
    assert "not installed" in build and '".[cpu]"' in build and warning is None


def test_without_onnxruntime_its_rows_and_parity_are_skipped_with_the_install_command(monkeypatch, tmp_path):
    import zoo
    from bench.backends.onnxruntime import OrtCpuBackend, OrtCudaBackend
    from bench.backends.ort_int8 import OrtInt8Backend
    from bench.context import BenchContext, ModelSession
    from bench.phases.parity import ParityPhase

    def missing(cls):
        raise ImportError("No module named 'onnxruntime'")

    for cls in (OrtCpuBackend, OrtCudaBackend, OrtInt8Backend):
        monkeypatch.setattr(cls, "import_package", classmethod(missing))
    cpu = torch.device("cpu")
    assert 'pip install -e ".[cpu]"' in OrtCpuBackend.available(cpu)
    assert 'pip install -e ".[cpu]"' in OrtInt8Backend.available(cpu)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert 'pip install -e ".[gpu]"' in OrtCudaBackend.available(torch.device("cuda", 0))
    ctx = BenchContext(cpu, quick=True, synthetic=True, checkpoints=None, out_dir=str(tmp_path), threads=1)
    (row,) = ParityPhase().run(ModelSession("mlp", zoo.get_model("mlp").eval()), ctx)
    assert row.status == "skipped" and '".[cpu]"' in row.reason
