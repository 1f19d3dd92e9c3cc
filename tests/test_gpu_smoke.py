"""bench.gpu_smoke on the CPU: its commands, its reading of pytest's JUnit XML and the verdict on stand-in records
(the command itself needs a GPU)."""
from __future__ import annotations

import pytest
import torch

from bench import gpu_smoke
from bench.gpu_smoke import PytestCounts, StepResult, pytest_command, read_junit, render, run_command
from bench.records import InferRecord, ModelRecord, ParityRecord, RunEnv, TrainRecord


def test_the_run_has_every_cuda_backend_on_two_models_and_scale_only_with_two_gpus():
    one = run_command(1, "results", python="py")
    assert one[:3] == ["py", "-m", "bench.run"] and one[one.index("--device") + 1] == "cuda"
    assert one[one.index("--backends") + 1].split(",") == ["eager", "eager:bf16", "eager:fp16", "compile",
                                                          "cuda_graph", "onnxruntime-cuda", "tensorrt"]
    assert one[one.index("--models") + 1] == "lenet,cifar_cnn" and "--quick" in one
    assert "scale" not in one[one.index("--phases") + 1] and "--max-procs" not in one
    two = run_command(2, "out", python="py")
    assert two[two.index("--phases") + 1].split(",")[-1] == "scale" and two[two.index("--max-procs") + 1] == "2"
    assert two[two.index("--out") + 1] == "out"
    assert gpu_smoke.TESTS_TIMEOUT_S + gpu_smoke.RUN_TIMEOUT_S <= 300  # the whole command within five minutes
    assert gpu_smoke.RUN_BUDGET_S < gpu_smoke.RUN_TIMEOUT_S


def test_the_tests_step_runs_the_cuda_tests_into_junit():
    cmd = pytest_command("x.xml", python="py")
    assert cmd[:3] == ["py", "-m", "pytest"] and "--junitxml=x.xml" in cmd and "-rs" in cmd
    assert "tests/test_cuda_paths.py" in cmd and "tests/test_bench_scale.py" in cmd


def test_the_plan_parses_with_bench_runs_own_parser():
    from bench.run import build_parser

    args = build_parser().parse_args(run_command(2, "out", python="py")[3:])
    assert args.device == "cuda" and args.quick and args.max_procs == 2 and args.budget == str(gpu_smoke.RUN_BUDGET_S)


JUNIT = """<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest" tests="4">
<testcase classname="tests.test_cuda_paths" name="test_a"/>
<testcase classname="tests.test_cuda_paths" name="test_b"><failure message="assert 1 == 2&#10;more">tb</failure></testcase>
<testcase classname="tests.test_tune" name="test_c"><skipped message="needs two GPUs"/></testcase>
<testcase classname="tests.test_tune" name="test_d"><error message="fixture broke"/></testcase>
</testsuite></testsuites>"""


def test_read_junit_counts_and_names(tmp_path):
    path = tmp_path / "j.xml"
    path.write_text(JUNIT)
    c = read_junit(str(path))
    assert (c.passed, c.failed, c.skipped) == (1, 2, 1)
    assert c.failures == ["test_cuda_paths::test_b: assert 1 == 2", "test_tune::test_d: fixture broke"]
    assert c.skips == ["test_tune::test_c: needs two GPUs"]
    assert read_junit(str(tmp_path / "missing.xml")) == PytestCounts()


def fake_run(**env_fields):
    env = RunEnv(device="cuda", device_index=0, device_name="NVIDIA H100 80GB HBM3", torch="2.14.1", cuda="12.8",
                 complete=True, planned_rows=5, done_rows=5, notes={"onnxruntime_build": "onnxruntime-gpu 1.22.0"},
                 **env_fields)
    records = [ModelRecord(model="lenet", device="cuda"),
               InferRecord(model="lenet", device="cuda", backend="eager", batch_size=1),
               InferRecord(model="lenet", device="cuda", backend="eager", precision="bf16", batch_size=1),
               InferRecord(model="lenet", device="cuda", backend="tensorrt", batch_size=1, status="skipped",
                           reason='torch_tensorrt is not installed: pip install -e ".[tensorrt]"\nmore'),
               TrainRecord(model="lenet", device="cuda", row="fast"),
               ParityRecord(model="lenet", device="cuda")]
    return env, records


OK = StepResult("tests", 0, 60.0)


def test_the_verdict_names_the_device_each_backend_and_the_first_reason():
    env, records = fake_run()
    text = render(OK, PytestCounts(passed=40), StepResult("run", 0, 90.0), env, records, "results/cuda")
    lines = text.splitlines()
    assert lines[0] == ("GPU smoke: NVIDIA H100 80GB HBM3 (cuda:0), torch 2.14.1, CUDA 12.8, "
                        "onnxruntime-gpu 1.22.0")
    assert lines[1] == "tests : 40 passed, 0 failed, 0 skipped (exit 0 in 60 s)"
    assert "eager                    1 ok" in text and "eager:bf16               1 ok" in text
    assert 'tensorrt                 1 skipped: torch_tensorrt is not installed: pip install -e ".[tensorrt]"' in text
    assert "train                    1 ok" in text and "parity                   1 ok" in text
    assert "model" not in text.split("->")[1]  # the model record is no row of any backend
    assert lines[-1] == "verdict: PASS (with skips)" and len(lines) <= 24  # one screen


@pytest.mark.parametrize("tests, counts, run, change, want", [
    (OK, PytestCounts(passed=3), StepResult("run", 0, 1), None, "PASS"),
    (StepResult("tests", 1, 1), PytestCounts(passed=2, failed=1, failures=["t: x"]), StepResult("run", 0, 1), None,
     "FAIL"),
    (StepResult("tests", None, 140), PytestCounts(), StepResult("run", 0, 1), None, "FAIL"),  # timed out
    (StepResult("tests", 5, 1), PytestCounts(), StepResult("run", 0, 1), None, "FAIL"),  # no CUDA test collected
    (OK, PytestCounts(passed=3), StepResult("run", None, 140), None, "FAIL"),
    (OK, PytestCounts(passed=3), StepResult("run", 0, 1), "incomplete", "FAIL"),
    (OK, PytestCounts(passed=3), StepResult("run", 1, 1), "failed_row", "FAIL"),
])
def test_the_verdict_word(tests, counts, run, change, want):
    env, records = fake_run()
    records = [r for r in records if r.status == "ok"]
    if change == "incomplete":
        env.complete = False
    if change == "failed_row":
        records.append(InferRecord(model="lenet", device="cuda", backend="compile", batch_size=1, status="failed",
                                   reason="boom"))
    text = render(tests, counts, run, env, records, "out")
    assert text.splitlines()[-1] == f"verdict: {want}"
    if run.rc is None:
        assert "timed out after 140 s" in text


def test_no_results_is_a_fail_that_says_so():
    text = render(OK, PytestCounts(passed=1), StepResult("run", 2, 3), None, [], "out")
    assert text.startswith("GPU smoke: no results.json was written") and text.endswith("verdict: FAIL")


@pytest.mark.skipif(torch.cuda.is_available(), reason="the no-CUDA error")
def test_without_cuda_it_is_one_error_line(capsys, tmp_path):
    assert gpu_smoke.main(["--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: bench.gpu_smoke needs a CUDA device") and err.count("\n") == 1
