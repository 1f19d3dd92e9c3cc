"""bench.compare through its command line, on results.json files written here from samples drawn from known
distributions (seeded numpy): identical runs show no change, a 25% slowdown is flagged only beyond a threshold its
interval clears, a newly failing row fails the comparison, a changed machine withholds verdicts unless normalized,
and bad input ends in one error line."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from bench import compare
from bench.compare import fmt_ratio, slowdown_ci, verdict
from bench.records import InferRecord, RunEnv, ScaleRecord, TrainRecord, results_to_json

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def lognormal(seed: int, n: int, median: float, sigma: float = 0.1) -> list[float]:
    return np.random.default_rng(seed).lognormal(np.log(median), sigma, n).tolist()


def calibration(seed: int, scale: float = 1.0) -> dict:
    probes = {"matmul_fp32_256": lognormal(seed, 50, 0.3 * scale, 0.03),
              "copy_32MB": lognormal(seed + 1, 50, 1.0 * scale, 0.03)}
    return {"method": "test", "threads": 1,
            "probes": {k: {"samples_ms": v, "median_ms": float(np.median(v))} for k, v in probes.items()}}


def records(seed: int, slow: float = 1.0, infer_status: str = "ok") -> list:
    """An inference row (1000 calls around 2 ms), a training row (9 windows around 1000 samples/s) and a scaling row,
    all ``slow`` times slower."""
    infer = InferRecord(model="mlp", device="cpu", backend="eager", batch_size=1, status=infer_status,
                        latencies_ms=lognormal(seed, 1000, 2.0 * slow) if infer_status == "ok" else [],
                        reason=None if infer_status == "ok" else "RuntimeError: boom")
    train = TrainRecord(model="lenet", device="cpu", row="fast", batch_size=64,
                        window_rates=lognormal(seed + 1, 9, 1000.0 / slow, 0.01))
    scale = ScaleRecord(model="lenet", device="cpu", processes=2, batch_size=32,
                        window_rates=lognormal(seed + 2, 9, 1800.0 / slow, 0.01))
    return [infer, train, scale]


def write(path, recs, cal_scale: float = 1.0, seed: int = 0, **env) -> str:
    env = RunEnv(device="cpu", device_name="test cpu", torch="2.x", threads=2, calibration=calibration(seed, cal_scale),
                 complete=True, **env)
    path.write_text(json.dumps(results_to_json(env, recs)))
    return str(path)


def run(capsys, *argv) -> tuple[int, str, str]:
    code = compare.main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def verdicts(out: str) -> list[str]:
    """The verdict column of the printed table."""
    rows = [line for line in out.splitlines() if line.startswith("| ") and "verdict" not in line]
    return [row.rstrip(" |").rsplit("|", 1)[1].strip() for row in rows]


@pytest.fixture
def base(tmp_path):
    return write(tmp_path / "a.json", records(seed=1), seed=100)


def test_identical_runs_show_no_change(tmp_path, capsys, base):
    b = write(tmp_path / "b.json", records(seed=2), seed=200)
    code, out, err = run(capsys, base, b, "--fail-on-regression", "5")
    assert code == 0 and err == ""
    assert verdicts(out) == ["no change"] * 3
    assert "0 regressions, 0 improvements, 3 no change" in out
    assert "machine: B vs A calibration" in out and ": same at T = 5%" in out


def test_a_25_percent_slowdown_is_flagged_beyond_20_not_30(tmp_path, capsys, base):
    b = write(tmp_path / "b.json", records(seed=2, slow=1.25), seed=200)
    code, out, err = run(capsys, base, b, "--fail-on-regression", "20")
    assert code == 1 and "FAIL: 3 regressions beyond 20%" in err
    assert verdicts(out) == ["regression"] * 3
    assert "1.25x slower [1.2" in out  # latency and throughput both read as B's slowdown
    code, out, _ = run(capsys, base, b, "--fail-on-regression", "30")
    assert code == 0 and verdicts(out) == ["no change"] * 3
    code, out, _ = run(capsys, base, b)  # default T = 5%: reported, exit 0 without the gate
    assert code == 0 and verdicts(out) == ["regression"] * 3


def test_a_speedup_is_an_improvement(tmp_path, capsys, base):
    b = write(tmp_path / "b.json", records(seed=2, slow=0.8), seed=200)
    code, out, _ = run(capsys, base, b, "--fail-on-regression", "10")
    assert code == 0 and verdicts(out) == ["improvement"] * 3 and "1.25x faster" in out


def test_a_newly_failing_row_fails_the_comparison(tmp_path, capsys, base):
    b = write(tmp_path / "b.json", records(seed=2, infer_status="failed"), seed=200)
    code, out, err = run(capsys, base, b)
    assert code == 1
    assert "now failing: mlp infer eager b=1: RuntimeError: boom" in out and "now fail" in err


def test_a_changed_machine_withholds_verdicts_unless_normalized(tmp_path, capsys, base):
    # B ran on a machine 40% slower (calibration and every row alike): nothing changed in the code.
    b = write(tmp_path / "b.json", records(seed=2, slow=1.4), cal_scale=1.4, seed=200)
    code, out, _ = run(capsys, base, b, "--fail-on-regression", "20")
    assert code == 0
    assert "machine changed: verdicts withheld" in out and "changed (slower)" in out
    assert verdicts(out) == ["withheld"] * 3
    code, out, _ = run(capsys, base, b, "--fail-on-regression", "20", "--normalize")
    assert code == 0 and "normalized" in out and verdicts(out) == ["no change"] * 3
    # normalized, a real 25% slowdown on top of the machine's 40% is still caught
    worse = write(tmp_path / "c.json", records(seed=3, slow=1.4 * 1.25), cal_scale=1.4, seed=300)
    code, out, _ = run(capsys, base, worse, "--fail-on-regression", "20", "--normalize")
    assert code == 1 and verdicts(out) == ["regression"] * 3


def test_withheld_verdicts_still_report_a_newly_failing_row(tmp_path, capsys, base):
    b = write(tmp_path / "b.json", records(seed=2, slow=1.4, infer_status="failed"), cal_scale=1.4, seed=200)
    code, out, _ = run(capsys, base, b)
    assert code == 1 and "verdicts withheld" in out and "now failing" in out


def test_an_interval_straddling_the_threshold_is_inconclusive(tmp_path, capsys):
    rates = [800.0, 1200.0, 900.0, 1100.0, 1000.0]
    a = write(tmp_path / "a.json", [TrainRecord(model="mlp", row="fast", batch_size=64, window_rates=rates)])
    b = write(tmp_path / "b.json", [TrainRecord(model="mlp", row="fast", batch_size=64,
                                                window_rates=[r / 1.06 for r in rates])])
    code, out, _ = run(capsys, a, b, "--fail-on-regression", "5")
    assert code == 0 and verdicts(out) == ["inconclusive"]


def test_too_few_samples_is_inconclusive_not_a_verdict(tmp_path, capsys):
    a = write(tmp_path / "a.json", [TrainRecord(model="mlp", row="fast", batch_size=64, window_rates=[1000.0])])
    b = write(tmp_path / "b.json", [TrainRecord(model="mlp", row="fast", batch_size=64, window_rates=[500.0])])
    code, out, _ = run(capsys, a, b, "--fail-on-regression", "5")
    assert code == 0 and verdicts(out) == ["inconclusive"] and "no ratio" in out


def test_rows_match_on_their_whole_key(tmp_path, capsys):
    fp32 = TrainRecord(model="mlp", row="fast", batch_size=64, window_rates=lognormal(1, 9, 1000.0, 0.01))
    bf16 = TrainRecord(model="mlp", row="fast", batch_size=64, precision="bf16",
                       window_rates=lognormal(2, 9, 3000.0, 0.01))
    slow_bf16 = TrainRecord(model="mlp", row="fast", batch_size=64, precision="bf16",
                            window_rates=lognormal(3, 9, 1000.0, 0.01))
    a = write(tmp_path / "a.json", [fp32, bf16])
    b = write(tmp_path / "b.json", [fp32, slow_bf16, InferRecord(model="mlp", backend="eager", batch_size=1)])
    code, out, _ = run(capsys, a, b)
    assert sorted(verdicts(out)) == ["no change", "regression"]
    assert "0 rows only in A, 1 only in B" in out


def test_environment_differences_are_noted(tmp_path, capsys, base):
    b = write(tmp_path / "b.json", records(seed=2), seed=200, quick=True)
    env = json.loads(open(b).read())
    env["env"]["threads"] = 1
    env["env"]["torch"] = "2.y"
    open(b, "w").write(json.dumps(env))
    _, out, _ = run(capsys, base, b)
    assert "note: torch threads differs" in out and "note: torch version differs" in out
    assert "--quick and the other is not" in out


def test_missing_calibration_is_said_not_guessed(tmp_path, capsys):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    for path, seed in ((a, 1), (b, 2)):
        path.write_text(json.dumps(results_to_json(RunEnv(device="cpu"), records(seed))))
    code, out, _ = run(capsys, a, b)
    assert code == 0 and "no calibration probe in both runs" in out and verdicts(out) == ["no change"] * 3


def test_verdict_rule_needs_the_whole_interval_beyond_the_threshold():
    assert verdict(1.21, 1.30, 0.20) == "regression"
    assert verdict(1.19, 1.30, 0.20) == "inconclusive"
    assert verdict(0.90, 1.10, 0.20) == "no change"
    assert verdict(0.70, 0.80, 0.20) == "improvement"  # 0.80 < 1 / 1.2
    assert verdict(0.70, 0.85, 0.20) == "inconclusive"


def test_ratios_read_as_b_against_a_in_both_directions():
    # latency up 25% and throughput down 20% are both B taking 1.25x the time
    lat = slowdown_ci([2.0] * 5, [2.5] * 5, lower_is_better=True)
    rate = slowdown_ci([1000.0] * 5, [800.0] * 5, lower_is_better=False)
    assert lat == pytest.approx((1.25, 1.25, 1.25)) and rate == pytest.approx((1.25, 1.25, 1.25))
    assert fmt_ratio(1.27, 1.24, 1.30) == "1.27x slower [1.24, 1.30]"
    assert fmt_ratio(0.8, 0.78, 0.82) == "1.25x faster [1.22, 1.28]"


def test_help_states_the_decision_rule():
    text = compare.build_parser().format_help()
    assert "WHOLE interval" in " ".join(text.split()) and "inconclusive" in text


def _one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: ") and "Traceback" not in stderr
    return lines[0]


@pytest.mark.parametrize("content, says", [
    (None, "no such file"), ("{broken", "not JSON"), ('{"records": 3}', "not a bench results file"),
    ("[]", "not a bench results file"), ('{"schema_version": 1, "records": []}', "schema version"),
    ('{"schema_version": 2, "env": {}, "records": [{"phase": "infer", "p50": 1}]}', "record 0"),
    ('{"schema_version": 2, "env": {"nope": 1}, "records": []}', "unknown field"),
])
def test_bad_files_end_in_one_error_line(tmp_path, capsys, base, content, says):
    bad = tmp_path / "bad.json"
    if content is not None:
        bad.write_text(content)
    code, out, err = run(capsys, base, bad)
    assert code == 2 and out == ""
    line = _one_error_line(err)
    assert str(bad) in line and says in line


@pytest.mark.parametrize("flags", [["--fail-on-regression", "-5"], ["--threshold", "nan"], ["--threshold", "x"],
                                   ["--bogus"]])
def test_bad_flags_end_in_one_error_line(capsys, base, flags):
    try:
        code = compare.main([base, base, *flags])
    except SystemExit as exc:  # argparse's own errors exit from inside parse_args
        code = exc.code
    out = capsys.readouterr()
    assert code == 2 and out.out == ""
    _one_error_line(out.err)


def test_the_module_runs_as_a_command(tmp_path, base):
    proc = subprocess.run([sys.executable, "-m", "bench.compare", base, str(tmp_path / "missing.json")],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stdout == ""
    assert "no such file" in _one_error_line(proc.stderr)
