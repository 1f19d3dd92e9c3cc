"""``python -m bench.gpu_smoke``: the first command on a freshly lent GPU, one command that touches every CUDA path.

Two steps, each under a hard time limit so the whole command ends within about five minutes on one GPU (after the
install, README "First run on a GPU"):
1. the CUDA tests (CUDA_TESTS: every test that runs only where CUDA is), their outcome read from pytest's JUnit XML;
2. a short ``bench.run`` on the GPU with every CUDA backend (SMOKE_BACKENDS) on two models (SMOKE_MODELS): the train,
   infer and parity phases, plus scale with two GPUs or more, written to OUT/cuda/ (default results/cuda/).
Then a one-screen verdict (also written to OUT/cuda/smoke.txt): the device, each step's outcome, and per backend or
phase how many rows are ok / skipped / failed with the first reason. FAIL when a test failed, a step timed out, a row
failed or the run is incomplete; PASS (with skips) when something was only skipped; PASS otherwise. The exit code
is 0 for PASS, 1 for FAIL, 2 for bad input.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import dataclass, field

from bench.records import InferRecord, ModelRecord, Record, RunEnv

SMOKE_MODELS = ("lenet", "cifar_cnn")
SMOKE_BACKENDS = ("eager", "eager:bf16", "eager:fp16", "compile", "cuda_graph", "onnxruntime-cuda", "tensorrt")
SMOKE_PHASES = ("train", "infer", "parity")
# Every test that runs only where CUDA is: whole files that skip without CUDA, and -k cuda of the mixed ones.
CUDA_TEST_FILES = ("tests/test_cuda_paths.py",)
CUDA_TEST_MIXED = ("tests/test_bench_memory.py", "tests/test_bench_scale.py", "tests/test_tune.py",
                   "tests/test_bench_timing.py", "tests/test_cuda_logic.py")
TESTS_TIMEOUT_S = 140  # the two limits fit in 5 minutes with ~20 s for start-up and the verdict
RUN_TIMEOUT_S = 140
RUN_BUDGET_S = 60  # bench.run's own measuring budget; compiles and engine builds come on top, inside RUN_TIMEOUT_S
MAX_LINES = 6  # failed / skipped tests listed by name


@dataclass
class StepResult:
    """One step's outcome: its exit code (None when it timed out) and seconds."""

    name: str
    rc: int | None
    seconds: float


@dataclass
class PytestCounts:
    passed: int = 0
    failed: int = 0
    skipped: int = 0
    failures: list[str] = field(default_factory=list)  # "name: first line of the message"
    skips: list[str] = field(default_factory=list)


def pytest_command(junit: str, python: str = sys.executable) -> list[str]:
    """pytest over the CUDA tests, -rs (skip reasons), results to ``junit``."""
    return [python, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", f"--junitxml={junit}",
            *CUDA_TEST_FILES, *CUDA_TEST_MIXED, "-k", "cuda or CUDA or gpu or GPU or test_cuda_paths"]


def run_command(gpus: int, out: str, python: str = sys.executable) -> list[str]:
    """The short bench.run: every CUDA backend on SMOKE_MODELS, scale only with two GPUs or more."""
    phases = [*SMOKE_PHASES, "scale"] if gpus >= 2 else list(SMOKE_PHASES)
    cmd = [python, "-m", "bench.run", "--device", "cuda", "--quick", "--models", ",".join(SMOKE_MODELS),
           "--phases", ",".join(phases), "--backends", ",".join(SMOKE_BACKENDS), "--budget", str(RUN_BUDGET_S),
           "--out", out]
    if gpus >= 2:
        cmd += ["--max-procs", "2"]
    return cmd


def read_junit(path: str) -> PytestCounts:
    """Counts and the failed / skipped tests of a pytest JUnit XML file (an empty count when it is missing)."""
    counts = PytestCounts()
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError):
        return counts
    for case in root.iter("testcase"):
        name = f"{case.get('classname', '').rsplit('.', 1)[-1]}::{case.get('name')}"
        bad = case.find("failure") if case.find("failure") is not None else case.find("error")
        skip = case.find("skipped")
        if bad is not None:
            counts.failed += 1
            counts.failures.append(f"{name}: {first_line(bad.get('message'))}")
        elif skip is not None:
            counts.skipped += 1
            counts.skips.append(f"{name}: {first_line(skip.get('message'))}")
        else:
            counts.passed += 1
    return counts


def first_line(text: str | None, width: int = 100) -> str:
    return text.strip().splitlines()[0][:width] if text and text.strip() else ""


def group_of(record: Record) -> str:
    """The verdict line a row counts in: an inference row's backend (and precision below fp32), else its phase."""
    if isinstance(record, InferRecord):
        return record.backend if record.precision == "fp32" else f"{record.backend}:{record.precision}"
    return record.phase


def row_lines(records: list[Record]) -> tuple[list[str], Counter]:
    """One line per backend / phase (ok, skipped, failed counts and the first not-ok reason), and the totals."""
    groups: dict[str, Counter] = {}
    reasons: dict[str, str] = {}
    for r in records:
        if isinstance(r, ModelRecord):
            continue
        key = group_of(r)
        groups.setdefault(key, Counter())[r.status] += 1
        if r.status != "ok" and key not in reasons:
            reasons[key] = first_line(r.reason, 90)
    totals: Counter = Counter()
    lines = []
    for key, c in groups.items():
        totals.update(c)
        parts = ", ".join(f"{c[s]} {s}" for s in ("ok", "skipped", "failed") if c[s])
        lines.append(f"  {key:<24} {parts}" + (f": {reasons[key]}" if key in reasons else ""))
    return lines, totals


def verdict_word(tests: StepResult, counts: PytestCounts, run: StepResult, env: RunEnv | None,
                 totals: Counter) -> str:
    if tests.rc != 0 or run.rc is None or counts.failed:  # pytest 5: no test collected, as bad as a failure here
        return "FAIL"
    if env is None or not env.complete or totals["failed"]:
        return "FAIL"
    return "PASS (with skips)" if counts.skipped or totals["skipped"] else "PASS"


def step_text(step: StepResult) -> str:
    return f"timed out after {step.seconds:.0f} s" if step.rc is None else f"exit {step.rc} in {step.seconds:.0f} s"


def render(tests: StepResult, counts: PytestCounts, run: StepResult, env: RunEnv | None, records: list[Record],
           out_dir: str) -> str:
    """The one-screen verdict."""
    lines, totals = row_lines(records)
    head = "GPU smoke: no results.json was written"
    if env is not None:
        head = (f"GPU smoke: {env.device_name} (cuda:{env.device_index}), torch {env.torch}, CUDA {env.cuda}, "
                f"{env.notes.get('onnxruntime_build', 'onnxruntime ?')}")
    out = [head, f"tests : {counts.passed} passed, {counts.failed} failed, {counts.skipped} skipped "
                 f"({step_text(tests)})"]
    out += [f"  FAILED {t}" for t in counts.failures[:MAX_LINES]]
    out += [f"  skipped {t}" for t in counts.skips[:MAX_LINES]]
    done = f"{env.done_rows}/{env.planned_rows} rows, complete={env.complete}" if env is not None else "no rows"
    out.append(f"run   : {done} ({step_text(run)}) -> {out_dir}")
    out += lines
    out.append(f"verdict: {verdict_word(tests, counts, run, env, totals)}")
    return "\n".join(out)


def timed(name: str, cmd: list[str], timeout_s: float) -> StepResult:
    """Run ``cmd`` (its output shown as it goes) under a hard limit; the whole process group goes on timeout."""
    import time

    from bench.phases.scale import run_worker

    print(f"$ {' '.join(cmd)}", flush=True)
    t0 = time.perf_counter()
    try:
        rc, _ = run_worker(cmd, dict(os.environ), timeout_s)
    except subprocess.TimeoutExpired:
        return StepResult(name, None, time.perf_counter() - t0)
    return StepResult(name, rc, time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.gpu_smoke", description=__doc__.splitlines()[0])
    p.add_argument("--out", default="results", help="output root (default results/): the run goes to OUT/cuda/")
    args = p.parse_args(argv)
    import torch

    if not torch.cuda.is_available():
        print(f"error: bench.gpu_smoke needs a CUDA device; this torch {torch.__version__} sees none", file=sys.stderr)
        return 2
    from bench.report.load import load_results

    cuda_dir = os.path.join(args.out, "cuda")
    os.makedirs(cuda_dir, exist_ok=True)
    junit = os.path.join(cuda_dir, "smoke_tests.xml")
    tests = timed("tests", pytest_command(junit), TESTS_TIMEOUT_S)
    run = timed("run", run_command(torch.cuda.device_count(), args.out), RUN_TIMEOUT_S)
    try:
        env, records = load_results(os.path.join(cuda_dir, "results.json"))
    except ValueError:
        env, records = None, []
    text = render(tests, read_junit(junit), run, env, records, cuda_dir)
    from zoo.atomic import atomic_write_text

    atomic_write_text(os.path.join(cuda_dir, "smoke.txt"), text + "\n")
    print(text)
    return 0 if text.rsplit("verdict: ", 1)[1].startswith("PASS") else 1


if __name__ == "__main__":
    sys.exit(main())
