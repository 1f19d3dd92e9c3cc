"""The CPU-side logic of the CUDA paths, with the GPU's answers stood in for: which precisions a GPU runs natively,
its physical peak, which device each row's figures belong to. tests/test_cuda_paths.py runs the real paths on a GPU."""
from __future__ import annotations

import pytest
import torch

from bench.backends.torch_eager import EagerBf16Backend
from bench.runner.env import precision_support


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
    from bench.runner.env import onnxruntime_build

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


# -- physical peaks ------------------------------------------------------------------------------------------------


def test_h100_sxm_sm_count_and_clocks_give_its_datasheet_figures():
    from bench.measure.hardware import gpu_peak

    fp32 = gpu_peak((9, 0), 132, 1.98e9, "test").flops_per_s["fp32"]
    assert fp32 == pytest.approx(66.9e12, rel=1e-3)  # 132 SMs x 128 FP32 FMA lanes x 2 x 1980 MHz
    tensor = gpu_peak((9, 0), 132, 1.83e9, "test").flops_per_s  # the clock NVIDIA quotes its tensor figures at
    assert tensor["bf16"] == tensor["fp16"] == pytest.approx(989.4e12, rel=1e-3)
    at_max = gpu_peak((9, 0), 132, 1.98e9, "NVML max SM clock")
    assert at_max.flops_per_s["bf16"] == pytest.approx(1070.5e12, rel=1e-3)  # the bound at the max SM clock
    assert "132 SMs" in at_max.method and "1980 MHz" in at_max.method and "NVML max SM clock" in at_max.method


@pytest.mark.parametrize("cap, sms, mhz, fp32, fp16, bf16", [
    ((8, 0), 108, 1410, 19.5e12, 312e12, 312e12),  # A100 SXM
    ((7, 5), 40, 1590, 8.1e12, 65.1e12, None),  # T4: fp16 tensor cores, no bf16
    ((7, 0), 80, 1530, 15.7e12, 125.3e12, None),  # V100 SXM2
])
def test_other_gpus_match_their_datasheets(cap, sms, mhz, fp32, fp16, bf16):
    from bench.measure.hardware import gpu_peak

    flops = gpu_peak(cap, sms, mhz * 1e6, "test").flops_per_s
    assert flops["fp32"] == pytest.approx(fp32, rel=0.01) and flops["fp16"] == pytest.approx(fp16, rel=0.01)
    assert flops.get("bf16") == (pytest.approx(bf16, rel=0.01) if bf16 else None)


def test_an_unknown_gpu_has_no_physical_peak():
    from bench.measure.hardware import gpu_peak

    assert gpu_peak((3, 5), 15, 1e9, "test") is None and gpu_peak((9, 0), 132, 0.0, "none") is None


def test_cpu_peak_from_the_isa_cores_and_clock(tmp_path):
    from bench.measure.hardware import cpu_clock, cpu_peak
    from bench.measure.machine import CpuInfo

    avx2 = CpuInfo("AMD EPYC", frozenset({"sse2", "avx", "avx2", "fma"}), 2445.4)
    clock, source = cpu_clock(avx2, cpufreq_max=str(tmp_path / "absent"))
    assert clock == pytest.approx(2445.4e6) and "cpu MHz" in source and "turbo" in source
    peak = cpu_peak(avx2, 2, clock, source)
    assert peak.flops_per_s == {"fp32": pytest.approx(2 * 32 * 2445.4e6)}  # 2 cores x 8 lanes x FMA x 2 units
    assert "AVX2 + FMA" in peak.method and "cpu MHz" in peak.method
    freq = tmp_path / "cpuinfo_max_freq"
    freq.write_text("3500000\n")  # kHz
    assert cpu_clock(avx2, cpufreq_max=str(freq)) == (3.5e9, "cpufreq cpuinfo_max_freq")
    avx512 = CpuInfo("Xeon", frozenset({"avx2", "fma", "avx512f", "avx512_bf16"}), 2000.0)
    got = cpu_peak(avx512, 2, 2e9, "test").flops_per_s
    assert got["fp32"] == pytest.approx(2 * 64 * 2e9) and got["bf16"] == pytest.approx(2 * got["fp32"])
    assert cpu_peak(avx2, 2, None, "no clock") is None  # a VM without a clock: the probe stays the divisor
    assert cpu_clock(CpuInfo(), cpufreq_max=str(tmp_path / "absent"))[0] is None


def test_the_physical_peak_divides_and_flags_a_probe_above_it():
    from bench.measure.hardware import ABOVE, PhysicalPeak, with_physical
    from bench.measure.machine import pct_of_peak

    measured = {"fp32_flops_per_s": 542e9, "fp32_probes": {"matmul": 217e9, "conv": 542e9},
                "fp32_method": "the better of two probes", "skipped": {}}
    peaks = with_physical(measured, PhysicalPeak({"fp32": 300e9, "bf16": 600e9}, "2 cores x 64 x 2344 MHz"), "")
    assert peaks["fp32_flops_per_s"] == 300e9 and peaks["fp32_above_physical"] == ["conv"]
    assert peaks["fp32_probe_fractions"] == {"matmul": pytest.approx(217 / 300), "conv": pytest.approx(542 / 300)}
    assert f"conv 181% ({ABOVE})" in peaks["fp32_method"] and "matmul 72%" in peaks["fp32_method"]
    assert "bf16_flops_per_s" not in peaks  # not probed here (skipped): nothing to divide
    assert pct_of_peak(150e9, peaks, "fp32") == pytest.approx(0.5)
    kept = with_physical(measured, None, "no cpufreq and no 'cpu MHz' in /proc/cpuinfo")
    assert kept["fp32_flops_per_s"] == 542e9 and kept["physical"]["why_not"].startswith("no cpufreq")


def test_the_one_cpuinfo_reader(tmp_path):
    from bench.measure.machine import read_cpuinfo

    path = tmp_path / "cpuinfo"
    path.write_text("processor\t: 0\nmodel name\t: AMD EPYC 7B13\ncpu MHz\t\t: 2445.404\nflags\t\t: fpu sse2 avx2 fma\n"
                    "\nprocessor\t: 1\nmodel name\t: other\ncpu MHz\t\t: 1.0\n")
    info = read_cpuinfo(str(path))
    assert info.model_name == "AMD EPYC 7B13" and info.mhz == pytest.approx(2445.404)
    assert info.flags == frozenset({"fpu", "sse2", "avx2", "fma"})
    assert read_cpuinfo(str(tmp_path / "none")).flags == frozenset()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_physical_peak_of_this_gpu_bounds_its_matmul():
    from bench.measure.hardware import physical_peak
    from bench.measure.machine import measure_peaks

    device = torch.device("cuda", torch.cuda.current_device())
    peak, why = physical_peak(device, 1)
    if peak is None:
        pytest.skip(why)
    measured = measure_peaks(device, ["fp32"])
    assert measured["fp32_probes"]["matmul"] < peak.flops_per_s["fp32"]  # torch.mm does the FLOPs it is counted
    assert torch.cuda.get_device_name(device) and "SMs" in peak.method


# -- which device a row's figures belong to ------------------------------------------------------------------------


def test_a_row_computed_on_another_device_gets_no_peak_and_labelled_host_memory():
    from bench.backends.onnxruntime import OrtCpuBackend
    from bench.backends.torch_eager import EagerBackend
    from bench.context import BenchContext
    from bench.phases.infer import row_peaks
    from bench.records import InferRecord
    from bench.report.infer_tables import mem_cell

    ctx = BenchContext(torch.device("cpu"), quick=True, synthetic=True, checkpoints=None, threads=1)
    ctx.device, ctx.peaks = torch.device("cuda", 0), {"fp32_flops_per_s": 67e12}
    ort_cpu, eager = OrtCpuBackend(None, ctx), EagerBackend(None, ctx)
    assert ort_cpu.compute_device().type == ort_cpu.memory_device().type == "cpu"
    assert row_peaks(ort_cpu, ctx) == {}  # not a fraction of the GPU's peak
    assert row_peaks(eager, ctx) is ctx.peaks
    ctx.device = torch.device("cpu")
    assert row_peaks(ort_cpu, ctx) is ctx.peaks  # on a CPU run the CPU provider is the run's device
    host = InferRecord(model="m", device="cuda", backend="onnxruntime", peak_mem_mb=120.0, mem_device="cpu")
    gpu = InferRecord(model="m", device="cuda", backend="eager", peak_mem_mb=30.0, mem_device="cuda")
    assert mem_cell(host) == "120 host" and mem_cell(gpu) == "30.0"


def test_tensorrt_and_cuda_aot_inductor_report_no_torch_allocator_memory():
    from bench.backends.aot_inductor import AotInductorBackend
    from bench.backends.tensorrt import TensorRtBackend
    from bench.context import BenchContext

    ctx = BenchContext(torch.device("cpu"), quick=True, synthetic=True, checkpoints=None, threads=1)
    assert AotInductorBackend(None, ctx).memory_device() == torch.device("cpu")  # host RSS sees it on a CPU run
    ctx.device = torch.device("cuda", 0)
    assert AotInductorBackend(None, ctx).memory_device() is None
    assert TensorRtBackend(None, ctx).memory_device() is None


def test_cuda_graph_times_the_replay_alone_from_the_input_in_its_buffer():
    """Eager, compile, TensorRT and ORT-CUDA read an input already on the device; the graph's timed call must not
    add a device-to-device copy they do not pay: the input goes into the graph's buffer at bind, before timing."""
    from bench.backends.cuda_graph import CudaGraphBackend
    from bench.context import BenchContext

    class FakeGraph:
        replays = 0

        def replay(self):
            self.replays += 1

    ctx = BenchContext(torch.device("cpu"), quick=True, synthetic=True, checkpoints=None, threads=1)
    backend, graph, static_x = CudaGraphBackend(None, ctx), FakeGraph(), torch.zeros(2, 3)
    backend.graphs = {2: (graph, static_x, torch.zeros(2, 10))}
    x = torch.arange(6.0).reshape(2, 3)
    call = backend.bind(x)
    assert torch.equal(static_x, x)  # copied once, at bind
    static_x.zero_()
    call()
    assert graph.replays == 1 and static_x.abs().sum() == 0  # the timed call copies nothing


def test_nvml_facts_record_driver_clocks_power_persistence_and_mig():
    from bench.measure.hardware import nvml_facts

    class FakeNvml:
        NVML_CLOCK_SM, NVML_CLOCK_MEM = 1, 2

        def nvmlSystemGetDriverVersion(self):
            return b"570.86.15"

        def nvmlSystemGetCudaDriverVersion(self):
            return 12080

        def nvmlDeviceGetClockInfo(self, handle, kind):
            return 1755 if kind == 1 else 0

        def nvmlDeviceGetMaxClockInfo(self, handle, kind):
            return {1: 1980, 2: 2619}[kind]

        def nvmlDeviceGetPowerManagementLimit(self, handle):
            return 700000  # mW

        def nvmlDeviceGetPersistenceMode(self, handle):
            return 1

        def nvmlDeviceGetMigMode(self, handle):
            raise RuntimeError("NVML_ERROR_NOT_SUPPORTED")

    facts = nvml_facts(FakeNvml(), "h")
    assert facts == {"driver": "570.86.15", "driver_cuda": 12080, "sm_clock_mhz": 1755, "sm_clock_max_mhz": 1980,
                     "mem_clock_max_mhz": 2619, "power_limit_w": pytest.approx(700.0), "persistence_mode": 1,
                     "mig_mode": None}  # a query that fails is None, never guessed


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_env_records_the_cuda_build_cudnn_and_nvml_or_why_not():
    from bench.measure.hardware import gpu_facts

    facts = gpu_facts(torch.device("cuda", torch.cuda.current_device()))
    assert facts["torch_cuda"] == torch.version.cuda and facts["cudnn"] == torch.backends.cudnn.version()
    assert facts["sms"] > 0 and ("driver" in facts or facts["nvml"])


def test_tensorrt_builds_one_engine_per_timed_batch_size(monkeypatch, tmp_path):
    """A stand-in torch_tensorrt records each engine's optimisation profile: the batch-1 row runs an engine built
    for batch 1, not one tuned for the largest batch; the accuracy pass has its own."""
    import sys
    import types

    import zoo
    from bench.backends.tensorrt import TensorRtBackend
    from bench.context import BenchContext, ModelSession, example_batch
    from bench.model.accuracy import EVAL_BATCH_SIZE

    built = []

    class Input:
        def __init__(self, min_shape, opt_shape, max_shape, dtype):
            self.profile = (min_shape[0], opt_shape[0], max_shape[0])

    def compile_(exported, arg_inputs, device, disable_tf32, min_block_size):
        assert disable_tf32 is True and min_block_size == 1
        built.append(arg_inputs[0].profile)
        return exported.module()

    fake = types.SimpleNamespace(__version__="2.14.0", Input=Input, dynamo=types.SimpleNamespace(compile=compile_))
    monkeypatch.setitem(sys.modules, "torch_tensorrt", fake)
    ctx = BenchContext(torch.device("cpu"), quick=True, synthetic=True, checkpoints=None, out_dir=str(tmp_path),
                       threads=1, batch_sizes=[1, 8])
    torch.manual_seed(0)
    session = ModelSession("mlp", zoo.get_model("mlp").eval())
    backend = TensorRtBackend(session, ctx)
    assert backend.prepare() == 0.0
    for bs in (1, 8, 1):
        x = example_batch("mlp", bs, torch.device("cpu"), seed=bs)
        with torch.inference_mode():
            torch.testing.assert_close(backend.bind(x)(), session.model(x))
    assert built == [(1, 1, 1), (8, 8, 8)]  # one engine per batch size, reused by a second bind
    backend.predict(example_batch("mlp", 3, torch.device("cpu"), seed=0))
    assert built[-1] == (1, EVAL_BATCH_SIZE, EVAL_BATCH_SIZE) and "one per timed batch size" in backend.fields["note"]


def test_the_tutorial_loop_rung_says_which_maths_it_runs_under():
    from bench.measure.numerics import apply_policy
    from bench.records import TRAIN_ROWS

    policy = apply_policy("cpu")
    assert "not PyTorch's defaults" in policy["tutorial_loop_rung"] and "allow_tf32 on" in policy["tutorial_loop_rung"]
    assert "under the run's maths policy" in TRAIN_ROWS["tutorial_loop"] and "cuDNN TF32 on" in TRAIN_ROWS["tutorial_loop"]


def test_the_summary_says_which_peak_is_physical():
    from bench.measure.hardware import PhysicalPeak, with_physical
    from bench.records import RunEnv
    from bench.report.files import render_summary

    measured = {"fp32_flops_per_s": 542e9, "fp32_probes": {"matmul": 217e9, "conv": 542e9}, "fp32_method": "probes",
                "skipped": {}}
    env = RunEnv(device="cpu", device_name="Test CPU", peaks=with_physical(measured, PhysicalPeak({"fp32": 300e9},
                                                                                                "2 cores x 64"), ""))
    text = render_summary(env, [])
    assert "fp32 300 GFLOP/s (physical)" in text and "conv 181% (fewer FLOPs than counted)" in text
