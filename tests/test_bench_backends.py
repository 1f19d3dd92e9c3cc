"""Deployment backends (OpenVINO, ONNX Runtime int8, AOT Inductor, TensorRT): each one's predictions against eager
PyTorch on tiny models with random weights, and the skipped-row reason when its package or device is missing."""
from __future__ import annotations

import os
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

import bench.backends.aot_inductor as aot_inductor
import bench.backends.ort_int8 as ort_int8
import zoo
from bench.backends.aot_inductor import AotInductorBackend
from bench.backends.onnxruntime import OrtCpuBackend, OrtSessionOptions, cpu_binding, host_array
from bench.backends.openvino import OpenVinoBackend, OpenVinoDynamicBackend, cpu_config, read_back
from bench.backends.ort_int8 import BatchReader, OrtInt8Backend, OrtInt8DynamicBackend, calibration_batches
from bench.backends.tensorrt import TensorRtBackend
from bench.context import BenchContext, ModelSession, example_batch
from bench.model.accuracy import row_fields
from bench.model.export import CACHE_KEY as EXPORT_CACHE_KEY
from bench.model.export import onnx_export_info

CPU = torch.device("cpu")
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.fixture
def strict_fp32(monkeypatch):
    """TF32 off for the eager reference on CUDA (cuDNN convolutions default to TF32 on Ampere and later)."""
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)


@pytest.fixture
def small_train_split(monkeypatch):
    """Calibration draws from a 2,000-sample synthetic training split: the sampling logic, without generating 60k."""
    real = ort_int8.open_split
    monkeypatch.setattr(ort_int8, "open_split", lambda *a, **kw: real(*a, **{**kw, "size": 2000}))


def has(module: str) -> bool:
    try:
        __import__(module)
        return True
    except Exception:
        return False


def make(name: str, tmp_path, device=CPU, seed: int = 0) -> tuple[ModelSession, BenchContext]:
    torch.manual_seed(seed)
    ctx = BenchContext(device=torch.device(device), quick=True, synthetic=True, out_dir=str(tmp_path), threads=1)
    return ModelSession(name, zoo.get_model(name).eval().to(device)), ctx


def eager(session: ModelSession, x: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return session.model(x).float().cpu()


def assert_matches_eager(backend, session, device=CPU, batch_sizes=(1, 3)):
    for bs in batch_sizes:
        x = example_batch(session.name, bs, device, seed=bs)
        got = backend.predict(x)
        assert got.dtype == torch.float32 and got.device.type == "cpu" and got.shape == (bs, 10)
        assert (got - eager(session, x)).abs().max().item() < 1e-4
        with torch.inference_mode():
            backend.bind(x)()  # the timed callable runs on the same input
        backend.sync()


# ---- skipped-row reasons -------------------------------------------------------------------------------------------

def test_openvino_missing_package_is_a_reason_with_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)  # `import openvino` now raises ImportError
    why = OpenVinoBackend.available(CPU)
    assert why is not None and 'pip install -e ".[openvino]"' in why


def test_openvino_and_int8_are_cpu_only():
    for cls in (OpenVinoBackend, OrtInt8Backend, OrtInt8DynamicBackend):
        assert "cpu" in (cls.available(torch.device("cuda")) or "")


def test_tensorrt_reasons(monkeypatch):
    assert "cuda" in TensorRtBackend.available(CPU)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert "CUDA device" in TensorRtBackend.available(torch.device("cuda"))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setitem(sys.modules, "torch_tensorrt", None)
    why = TensorRtBackend.available(torch.device("cuda"))
    assert why is not None and 'pip install -e ".[tensorrt]"' in why


def test_aot_inductor_without_a_compiler_says_so(monkeypatch):
    monkeypatch.setattr(aot_inductor.shutil, "which", lambda name: None)
    why = AotInductorBackend.available(CPU)
    assert why is not None and "C++ compiler" in why


def test_precisions_and_names():
    assert OrtInt8Backend.precision == OrtInt8DynamicBackend.precision == "int8"
    assert OpenVinoBackend.precision == AotInductorBackend.precision == TensorRtBackend.precision == "fp32"
    assert {c.name for c in (OpenVinoBackend, OrtInt8Backend, OrtInt8DynamicBackend, AotInductorBackend,
                             TensorRtBackend)} == {"openvino", "onnxruntime-int8", "onnxruntime-int8-dynamic",
                                                   "aot_inductor", "tensorrt"}


# ---- torch.compile -------------------------------------------------------------------------------------------------

def test_compile_is_set_up_per_device_and_says_so_on_the_row(tmp_path):
    from bench.backends.torch_compile import COMPILE_SETUPS, CompileBackend

    for setup in COMPILE_SETUPS.values():  # torch.compile refuses a mode and options together
        assert not ("mode" in setup.kwargs() and "options" in setup.kwargs())
    assert COMPILE_SETUPS["cpu"].as_record() == {"mode": "default", "dynamic": False, "freezing": True}
    assert COMPILE_SETUPS["cuda"].as_record()["mode"] == "default"  # reduce-overhead would copy the input per call
    session, ctx = make("lenet", tmp_path)
    backend = CompileBackend(session, ctx)
    backend.prepare()
    assert backend.fields["options"] == COMPILE_SETUPS["cpu"].as_record()
    assert "freezing=True" in backend.fields["note"]
    assert_matches_eager(backend, session)  # frozen weights: the same logits as eager, within fp32 rounding
    backend.close()


# ---- OpenVINO ------------------------------------------------------------------------------------------------------

@pytest.mark.skipif(not has("openvino"), reason='openvino not installed: pip install -e ".[openvino]"')
@pytest.mark.parametrize("name", ["mlp", "lenet"])
def test_openvino_matches_eager_in_pinned_fp32(name, tmp_path):
    session, ctx = make(name, tmp_path)
    backend = OpenVinoBackend(session, ctx)
    assert backend.available(CPU) is None
    assert backend.prepare() > 0
    assert_matches_eager(backend, session)
    # The CPU plugin's default on AVX512-BF16/AMX CPUs is bf16: every compiled model must report f32.
    assert backend.compiled and all(read_back(c)["INFERENCE_PRECISION_HINT"] == "f32"
                                    for c in backend.compiled.values())
    assert backend.fields["threads"] == 1
    backend.close()


@pytest.mark.skipif(not has("openvino"), reason='openvino not installed: pip install -e ".[openvino]"')
def test_openvino_compiles_a_static_shape_per_batch_and_records_its_options(tmp_path):
    session, ctx = make("lenet", tmp_path)
    backend = OpenVinoBackend(session, ctx)
    backend.prepare()
    x = example_batch("lenet", 3, CPU)
    with torch.inference_mode():
        backend.bind(x)()
    compiled = backend.compiled[3]
    assert list(compiled.inputs[0].get_shape()) == [3, 1, 28, 28]  # static: the plugin plans this shape once
    options = backend.fields["options"]
    assert options["shape"] == "static" and "input tensor set once" in options["call"]
    assert options["PERFORMANCE_HINT"] == "LATENCY" and options["INFERENCE_NUM_THREADS"] == 1
    assert options["INFERENCE_PRECISION_HINT"] == "f32" and options["NUM_STREAMS"] == 1
    out = backend.request.get_output_tensor(0).data  # the timed call ran on the shared input
    assert np.allclose(out, eager(session, x).numpy(), atol=1e-4)
    backend.close()


@pytest.mark.skipif(not has("openvino"), reason='openvino not installed: pip install -e ".[openvino]"')
def test_openvino_dynamic_is_one_model_for_every_batch(tmp_path):
    session, ctx = make("lenet", tmp_path)
    backend = OpenVinoDynamicBackend(session, ctx)
    backend.prepare()
    assert_matches_eager(backend, session, batch_sizes=(1, 3))
    assert list(backend.compiled) == [None] and backend.compiled[None].inputs[0].get_partial_shape().is_dynamic
    assert backend.fields["options"]["shape"] == "dynamic batch"
    backend.close()


def test_openvino_config_is_latency_threads_and_f32():
    assert cpu_config(3) == {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": "3",
                             "INFERENCE_PRECISION_HINT": "f32"}


# ---- ONNX Runtime CPU ----------------------------------------------------------------------------------------------

def test_ort_session_options_are_the_latency_guide_and_recorded():
    opts = OrtSessionOptions(intra_op_num_threads=2)
    so = opts.session_options()
    assert so.intra_op_num_threads == 2 and so.inter_op_num_threads == 1
    assert so.execution_mode == ort.ExecutionMode.ORT_SEQUENTIAL
    assert so.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    assert so.get_session_config_entry("session.intra_op.allow_spinning") == "1"
    assert so.enable_cpu_mem_arena and so.enable_mem_pattern
    no_spin = OrtSessionOptions(intra_op_num_threads=1, allow_spinning=False).session_options()
    assert no_spin.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    record = opts.as_record(io_binding="x")
    assert record["intra_op_num_threads"] == 2 and record["graph_optimization_level"] == "ORT_ENABLE_ALL"
    assert record["io_binding"] == "x"


def test_ort_cpu_io_binding_writes_the_model_output_into_one_buffer(tmp_path):
    session, ctx = make("lenet", tmp_path)
    backend = OrtCpuBackend(session, ctx)
    backend.prepare()
    assert backend.fields["options"]["intra_op_num_threads"] == 1
    assert "output preallocated" in backend.fields["options"]["io_binding"]
    x = example_batch("lenet", 3, CPU)
    call = backend.bind(x)
    before = backend.binding.get_outputs()[0]
    call()
    after = backend.binding.get_outputs()[0]
    assert after.data_ptr() == before.data_ptr()  # no output allocated per call
    assert np.allclose(after.numpy(), eager(session, x).numpy(), atol=1e-4)
    assert_matches_eager(backend, session)
    backend.close()


def test_cpu_binding_binds_the_input_and_a_preallocated_output(tmp_path):
    session, ctx = make("mlp", tmp_path)
    backend = OrtCpuBackend(session, ctx)
    backend.prepare()
    x = example_batch("mlp", 2, CPU)
    binding = cpu_binding(backend.sess, backend.input_name, backend.output_name, host_array(x))
    backend.sess.run_with_iobinding(binding)
    assert np.allclose(binding.get_outputs()[0].numpy(), eager(session, x).numpy(), atol=1e-4)
    backend.close()


# ---- ONNX Runtime int8 ---------------------------------------------------------------------------------------------

def test_calibration_sample_is_seeded_training_data(tmp_path, small_train_split):
    session, ctx = make("mlp", tmp_path)
    first = calibration_batches(session, ctx, samples=64, batch_size=16)
    again = calibration_batches(session, ctx, samples=64, batch_size=16)
    ctx.seed = 1
    other = calibration_batches(session, ctx, samples=64, batch_size=16)
    assert [b.shape for b in first] == [(16, 1, 28, 28)] * 4 and first[0].dtype == np.float32
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert not np.array_equal(first[0], other[0])


def test_batch_reader_feeds_every_batch_once_and_rewinds():
    batches = [np.zeros((2, 3), np.float32), np.ones((2, 3), np.float32)]
    reader = BatchReader("input", batches)
    fed = [reader.get_next(), reader.get_next(), reader.get_next()]
    assert fed[0]["input"] is batches[0] and fed[1]["input"] is batches[1] and fed[2] is None
    reader.rewind()
    assert reader.get_next()["input"] is batches[0]


@pytest.fixture(scope="module")
def fp32_graphs(tmp_path_factory):
    """One fp32 ONNX export per model for the whole module (the export is the slow part, and not under test here):
    bench.model.export's info dict, which a session's cache hands to every later user of the file."""
    folder, made = tmp_path_factory.mktemp("fp32"), {}

    def info(name: str) -> dict:
        if name not in made:
            session, ctx = make(name, folder)
            made[name] = onnx_export_info(session, ctx)
        return made[name]

    return info


def int8_agreement(backend_cls, name: str, tmp_path, fp32_graphs) -> tuple[dict, object]:
    session, ctx = make(name, tmp_path)  # the same seed as the exported graph's weights
    session.cache[EXPORT_CACHE_KEY] = fp32_graphs(name)
    backend = backend_cls(session, ctx)
    assert backend.available(CPU) is None
    assert backend.prepare() > 0
    fields = row_fields(backend.predict, session, ctx, "int8")
    x = example_batch(name, 3, CPU)
    assert torch.isfinite(backend.predict(x)).all()
    with torch.inference_mode():
        backend.bind(x)()
    return fields, backend


def test_ort_int8_static_agrees_with_eager_and_is_quantized(tmp_path, small_train_split, fp32_graphs):
    fields, backend = int8_agreement(OrtInt8Backend, "mlp", tmp_path, fp32_graphs)
    assert fields["argmax_agreement"] >= 0.9 and fields["max_abs_diff"] < 1.0
    path = os.path.join(os.path.dirname(fp32_graphs("mlp")["onnx_path"]), "mlp.int8.onnx")
    ops = {n.op_type for n in onnx.load(path).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops  # QDQ format
    assert "calibration on 512 seeded training samples" in backend.fields["note"]
    assert not [f for f in os.listdir(os.path.dirname(path)) if f.startswith(".")]  # no temp folder left behind


def test_ort_int8_dynamic_agrees_and_says_what_it_quantized(tmp_path, fp32_graphs):
    fields, backend = int8_agreement(OrtInt8DynamicBackend, "mlp", tmp_path, fp32_graphs)
    assert fields["argmax_agreement"] >= 0.9
    assert os.path.exists(os.path.join(os.path.dirname(fp32_graphs("mlp")["onnx_path"]), "mlp.int8-dynamic.onnx"))
    assert "3 of 3 Conv/Gemm/MatMul ops quantized" in backend.fields["note"]  # the MLP's three Linear layers


@pytest.mark.slow
@pytest.mark.parametrize("backend_cls", [OrtInt8Backend, OrtInt8DynamicBackend])
def test_ort_int8_on_a_conv_model(backend_cls, tmp_path, small_train_split, fp32_graphs):
    fields, backend = int8_agreement(backend_cls, "lenet", tmp_path, fp32_graphs)
    assert fields["argmax_agreement"] >= 0.9
    if backend_cls is OrtInt8DynamicBackend:
        assert "2 of 4 Conv/Gemm/MatMul ops quantized, fp32 left: 2 Conv" in backend.fields["note"]  # linears only


# ---- AOT Inductor --------------------------------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.skipif(AotInductorBackend.available(CPU) is not None, reason="no C++ compiler for AOT Inductor")
def test_aot_inductor_package_matches_eager(tmp_path):
    session, ctx = make("lenet", tmp_path)
    backend = AotInductorBackend(session, ctx)
    assert backend.prepare() > 0
    assert os.path.isfile(os.path.join(str(tmp_path), "aoti", "lenet.pt2"))
    assert_matches_eager(backend, session, batch_sizes=(1, 3, 256))  # one package, any batch


@pytest.mark.slow
@needs_cuda
def test_aot_inductor_on_cuda(tmp_path, strict_fp32):
    session, ctx = make("lenet", tmp_path, device="cuda")
    backend = AotInductorBackend(session, ctx)
    assert backend.prepare() > 0
    assert_matches_eager(backend, session, device=torch.device("cuda"))


# ---- TensorRT ------------------------------------------------------------------------------------------------------

@pytest.mark.slow
@needs_cuda
@pytest.mark.skipif(not has("torch_tensorrt"), reason='torch_tensorrt not installed: pip install -e ".[tensorrt]"')
def test_tensorrt_matches_eager(tmp_path, strict_fp32):
    session, ctx = make("lenet", tmp_path, device="cuda")
    backend = TensorRtBackend(session, ctx)
    assert backend.available(ctx.device) is None
    assert backend.prepare() > 0
    assert_matches_eager(backend, session, device=torch.device("cuda"), batch_sizes=(1, 3, 32))


def test_noop_backend_returns_its_input_and_zero_logits():
    from bench.backends import BACKENDS
    from bench.context import BenchContext, ModelSession, example_batch

    ctx = BenchContext(device=torch.device("cpu"))
    session = ModelSession(name="lenet", model=torch.nn.Identity())
    backend = BACKENDS["noop"](session, ctx)
    x = example_batch("lenet", 3, "cpu")
    assert backend.bind(x)() is x
    logits = backend.predict(x)
    assert logits.shape == (3, 10) and not logits.any()
