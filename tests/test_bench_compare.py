"""bench.compare through its command line, on results.json files written here from samples drawn from known
distributions (seeded numpy): identical runs show no change, a 25% slowdown is flagged only beyond a threshold its
interval clears, a newly failing row fails the comparison, a changed machine withholds verdicts unless normalized,
and bad input ends in one error line."""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from bench.analysis import compare
from bench.analysis.compare import fmt_ratio, slowdown_ci, verdict
from bench.analysis.noise import NoiseProfile, RowNoise, write_profile
from bench.records import InferRecord, ParityRecord, RunEnv, ScaleRecord, TrainRecord
from bench.report.files import results_payload as results_to_json
from bench.report.load import load_results

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


def flat_profile(*paths, sd: float = 0.0) -> str:
    """A noise profile for every row and probe of the runs at ``paths``, whose processes disagree by ``sd`` (sigma of
    the log median) with 19 df; written beside the first run."""
    rows: dict[tuple, RowNoise] = {}
    for path in paths:
        try:
            env, recs = load_results(path)
        except ValueError:
            continue
        keys = [r.key() for r in recs] + [("calibration", n) for n in env.calibration.get("probes", {})]
        rows.update({k: RowNoise(k, sd ** 2, 19) for k in keys})
    out = os.path.join(os.path.dirname(str(paths[0])), f"profile_{sd:g}.json")
    write_profile(NoiseProfile("test", 2, 20, rows=rows), [out])
    return out


def run(capsys, *argv) -> tuple[int, str, str]:
    """bench.compare on one-process runs judged with a profile that says processes never disagree (the rule at T on
    the runs' own medians) unless --noise-profile is given: profiles and repeated runs have their own tests."""
    argv = [str(a) for a in argv]
    if "--noise-profile" not in argv:
        argv += ["--noise-profile", flat_profile(*argv[:2])]
    code = compare.main(argv)
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
    assert code == 3  # withheld rows do not pass the gate
    assert "machine changed: verdicts withheld" in out and "changed (slower)" in out
    assert verdicts(out) == ["withheld"] * 3
    code, _, _ = run(capsys, base, b, "--fail-on-regression", "20", "--allow-inconclusive")
    assert code == 0
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


def test_an_interval_straddling_the_threshold_is_inconclusive_and_exits_3(tmp_path, capsys):
    rates = [800.0, 1200.0, 900.0, 1100.0, 1000.0]
    a = write(tmp_path / "a.json", [TrainRecord(model="mlp", row="fast", batch_size=64, window_rates=rates)])
    b = write(tmp_path / "b.json", [TrainRecord(model="mlp", row="fast", batch_size=64,
                                                window_rates=[r / 1.06 for r in rates])])
    profile = flat_profile(a, b, sd=0.02)  # processes 2% apart: 1.06x [1.00, 1.12] straddles 1.05
    code, out, err = run(capsys, a, b, "--fail-on-regression", "5", "--noise-profile", profile)
    assert code == 3 and err == "" and verdicts(out) == ["inconclusive: this data detects >= 1.14x; --repeat 13 on "
                                                         "both sides would detect 1.075x"]
    assert "1 rows not settled (inconclusive, no verdict or withheld): they exit 3 unless --allow-inconclusive" in out
    code, out, _ = run(capsys, a, b, "--fail-on-regression", "5", "--noise-profile", profile, "--allow-inconclusive")
    assert code == 0 and "no verdict or withheld): allowed by --allow-inconclusive" in out


def test_too_few_samples_is_inconclusive_not_a_verdict(tmp_path, capsys):
    a = write(tmp_path / "a.json", [TrainRecord(model="mlp", row="fast", batch_size=64, window_rates=[1000.0])])
    b = write(tmp_path / "b.json", [TrainRecord(model="mlp", row="fast", batch_size=64, window_rates=[500.0])])
    code, out, _ = run(capsys, a, b, "--fail-on-regression", "5")
    assert code == 3 and verdicts(out) == ["inconclusive"] and "no ratio" in out


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
    text = " ".join(text.split())
    assert "95% t interval over the log process medians" in text and "Holm's rule over all rows judged" in text
    assert "no profile: no verdict" in text and "3 when a row is inconclusive" in text


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


# -- the whole report, on constant samples (exact intervals, no bootstrap noise) --------------------------------------


def flat_calibration(ms: float) -> dict:
    return {"probes": {"matmul": {"samples_ms": [ms] * 5}, "copy": {"samples_ms": [2 * ms] * 5}}}


def write_flat(path, recs, cal_ms: float = 1.0, **env) -> str:
    fields = {"device": "cpu", "device_name": "Test CPU", "torch": "2.x", "threads": 2, "complete": True,
              "git_commit": "abc1234", "timestamp": "2030-01-01T00:00:00+00:00", **env}
    path.write_text(json.dumps(results_to_json(RunEnv(calibration=flat_calibration(cal_ms), **fields), recs)))
    return str(path)


def flat_runs(tmp_path, b_scale: float = 1.0, **b_env) -> tuple[str, str]:
    """A and B: eager 25% slower, onnxruntime 25% faster, training 3% faster, a scaling row with too few windows,
    a row that now fails, a parity row (no raw samples), one row only in A and one only in B."""
    def infer(backend, bs, ms, **kw):
        return InferRecord(model="mlp", device="cpu", backend=backend, batch_size=bs, latencies_ms=[ms] * 5, **kw)

    a = [infer("eager", 1, 2.0), infer("onnxruntime", 8, 2.0),
         TrainRecord(model="lenet", device="cpu", row="fast", batch_size=64, window_rates=[1000.0] * 5),
         ScaleRecord(model="lenet", device="cpu", processes=2, batch_size=32, window_rates=[1000.0] * 5),
         infer("compile", 1, 2.0), ParityRecord(model="mlp", device="cpu"), infer("eager", 4, 1.0)]
    b = [infer("eager", 1, 2.5 * b_scale), infer("onnxruntime", 8, 1.6 * b_scale),
         TrainRecord(model="lenet", device="cpu", row="fast", batch_size=64, window_rates=[1030.0 / b_scale] * 5),
         ScaleRecord(model="lenet", device="cpu", processes=2, batch_size=32, window_rates=[1000.0] * 2),
         InferRecord(model="mlp", device="cpu", backend="compile", batch_size=1, status="failed",
                     reason="RuntimeError: boom"),
         ParityRecord(model="mlp", device="cpu"), TrainRecord(model="mlp", device="cpu", row="compute")]
    return write_flat(tmp_path / "a.json", a), write_flat(tmp_path / "b.json", b, cal_ms=b_scale, **b_env)


TABLE = """\
| model   | phase   | row             | procs A/B   | n A/B   | B vs A [95% CI]                    | within-process [95% CI]   | spread A/B   | MDE   | verdict      |
|---------|---------|-----------------|-------------|---------|------------------------------------|---------------------------|--------------|-------|--------------|
| mlp     | infer   | eager b=1       | 1/1         | 5/5     | 1.25x slower [1.25, 1.25] +P       | 1.25x slower [1.25, 1.25] | -/-          | 1.10x | {v[0]:<12} |
| mlp     | infer   | onnxruntime b=8 | 1/1         | 5/5     | 1.25x faster [1.25, 1.25] +P       | 1.25x faster [1.25, 1.25] | -/-          | 1.10x | {v[1]:<12} |
| lenet   | train   | fast b=64       | 1/1         | 5/5     | 1.03x faster [1.03, 1.03] +P       | 1.03x faster [1.03, 1.03] | -/-          | 1.10x | {v[2]:<12} |
| lenet   | scale   | procs=2 b=32    | 1/1         | 5/2     | no ratio (too few or zero samples) | -                         | -/-          | -     | inconclusive |"""


def test_the_whole_report_of_a_gated_comparison(tmp_path, capsys):
    a, b = flat_runs(tmp_path, quick=True, complete=False, threads=1)
    code, out, err = run(capsys, a, b, "--fail-on-regression", "10")
    assert code == 1
    assert out == "\n".join([
        f"A: {a} | Test CPU (cpu) | torch 2.x | threads 2 | commit abc1234 | 2030-01-01T00:00:00+00:00",
        f"B: {b} | Test CPU (cpu) | torch 2.x | threads 1 | commit abc1234 | 2030-01-01T00:00:00+00:00 | QUICK | "
        "INCOMPLETE",
        f"rule: {compare.DECISION_RULE} (T = 10%)",
        f"noise: {os.path.dirname(a)}/profile_0.json (test, 2 threads, 20 processes, ?); 3 rows measured in one "
        "process in either run are judged with it (marked +P); rows measured in >= 2 processes in both runs by "
        "Welch's interval over their own processes",
        "family: Holm's rule over the 3 rows judged (family-wise error 5%); MDE: the smallest change each row would "
        "flag with 80% power at that level; 'processes' = per side, to detect 1.15x",
        "note: torch threads differs: A 2, B 1; changes reflect that too, not only the code",
        "note: one run is --quick and the other is not: their sample counts and settings differ",
        "machine: B vs A calibration 1.00x slower [1.00, 1.00] (copy 1.00x slower [1.00, 1.00], matmul 1.00x slower "
        "[1.00, 1.00]; t interval over the probes' processes): same at T = 10%",
        "",
        TABLE.format(v=["regression", "improvement", "no change"]),
        "now failing: mlp infer compile b=1: RuntimeError: boom",
        "",
        "1 regressions, 1 improvements, 1 no change, 1 inconclusive, 0 no verdict",
        "1 now failing; 1 rows only in A, 1 only in B",
        "1 rows not settled (inconclusive, no verdict or withheld): they exit 3 unless --allow-inconclusive",
        ""])
    assert err == ("FAIL: 1 regressions beyond 10% (worst: mlp infer eager b=1 1.25x slower [1.25, 1.25])\n"
                   "FAIL: 1 rows ok in A now fail in B\n")


def test_the_whole_report_on_a_slower_machine(tmp_path, capsys):
    a, b = flat_runs(tmp_path, b_scale=2.0, device_name="Other CPU", torch="2.y", device="cuda", quick=False)
    code, out, err = run(capsys, a, b)
    assert code == 1 and err == "FAIL: 1 rows ok in A now fail in B\n"
    lines = out.splitlines()
    assert lines[2:3] + lines[5:9] == [
        f"rule: {compare.DECISION_RULE} (T = 5%)",
        "note: device differs: A 'cpu', B 'cuda'; changes reflect that too, not only the code",
        "note: device model differs: A 'Test CPU', B 'Other CPU'; changes reflect that too, not only the code",
        "note: torch version differs: A '2.x', B '2.y'; changes reflect that too, not only the code",
        "machine: B vs A calibration 2.00x slower [2.00, 2.00] (copy 2.00x slower [2.00, 2.00], matmul 2.00x slower "
        "[2.00, 2.00]; t interval over the probes' processes): changed (slower) at T = 5%"]
    assert verdicts(out) == ["withheld"] * 3 + ["inconclusive"]
    assert lines[-4:] == ["", "machine changed: verdicts withheld (re-run on the same machine, or pass --normalize)",
                          "1 now failing; 1 rows only in A, 1 only in B",
                          "4 rows not settled (inconclusive, no verdict or withheld): they exit 3 unless "
                          "--allow-inconclusive"]
    code, out, _ = run(capsys, a, b, "--normalize", "--threshold", "10")
    assert "normalized: every ratio below is divided by the machine's 2.000" in out.splitlines()
    assert TABLE.format(v=["regression", "improvement", "no change"]) in out
    assert "1 regressions, 1 improvements, 1 no change, 1 inconclusive, 0 no verdict" in out.splitlines()


def test_a_faster_machine_and_both_runs_quick(tmp_path, capsys):
    a, b = flat_runs(tmp_path, b_scale=0.5)
    env = json.loads(open(a).read())
    env["env"]["quick"] = True
    open(a, "w").write(json.dumps(env))
    env = json.loads(open(b).read())
    env["env"]["quick"] = True
    open(b, "w").write(json.dumps(env))
    _, out, _ = run(capsys, a, b)
    assert "note: both runs are --quick: few samples, short windows; expect inconclusive rows" in out.splitlines()
    assert ": changed (faster) at T = 5%" in out and verdicts(out) == ["withheld"] * 3 + ["inconclusive"]
    assert [line for line in out.splitlines() if line.startswith("note:")] == [
        "note: both runs are --quick: few samples, short windows; expect inconclusive rows"]


def test_the_gate_names_the_worst_regression(tmp_path, capsys):
    a = write_flat(tmp_path / "a.json", [InferRecord(model=m, backend="eager", batch_size=1, latencies_ms=[1.0] * 3)
                                         for m in ("mlp", "lenet", "alexnet")])
    b = write_flat(tmp_path / "b.json", [InferRecord(model=m, backend="eager", batch_size=1, latencies_ms=[x] * 3)
                                         for m, x in (("mlp", 1.5), ("lenet", 3.0), ("alexnet", 2.0))])
    code, out, err = run(capsys, a, b, "--fail-on-regression", "5")
    assert code == 1 and verdicts(out) == ["regression"] * 3  # three samples a side are enough for a verdict
    assert err == "FAIL: 3 regressions beyond 5% (worst: lenet infer eager b=1 3.00x slower [3.00, 3.00])\n"


def test_no_comparable_row_is_said(tmp_path, capsys):
    a = write_flat(tmp_path / "a.json", [ParityRecord(model="mlp")])
    code, out, _ = run(capsys, a, a)
    assert code == 0 and "no row with raw samples is ok in both runs" in out.splitlines()
    assert "0 regressions, 0 improvements, 0 no change, 0 inconclusive, 0 no verdict" in out.splitlines()


def test_a_failed_row_without_a_reason_and_a_skipped_one(tmp_path, capsys):
    ok = InferRecord(model="mlp", backend="eager", batch_size=1, latencies_ms=[1.0] * 3)
    a = write_flat(tmp_path / "a.json", [ok, dataclasses.replace(ok, backend="compile")])
    b = write_flat(tmp_path / "b.json", [dataclasses.replace(ok, status="failed"),
                                         dataclasses.replace(ok, backend="compile", status="skipped")])
    code, out, err = run(capsys, a, b)
    assert code == 1 and "now failing: mlp infer b=1: no reason recorded" not in out
    assert "now failing: mlp infer eager b=1: no reason recorded" in out.splitlines()
    assert "1 now failing; 0 rows only in A, 0 only in B" in out.splitlines()  # a skipped row is not a failure


@pytest.mark.parametrize("lo, hi, expected", [
    (1.2, 1.2, "no change"), (1.2, 1.3, "inconclusive"), (1 / 1.2, 1 / 1.2, "no change"),
    (0.5, 1 / 1.2, "inconclusive"), (0.5, 0.8, "improvement"), (1.21, 2.0, "regression"),
])
def test_verdict_at_the_threshold_edges(lo, hi, expected):
    assert verdict(lo, hi, 0.2) == expected


def test_junk_calibration_is_a_broken_file(tmp_path, capsys):
    a = write_flat(tmp_path / "a.json", [])
    data = json.loads(open(a).read())
    data["env"]["calibration"]["probes"]["matmul"]["samples_ms"] = ["fast", "slow", "x"]
    b = tmp_path / "b.json"
    b.write_text(json.dumps(data))
    code, out, err = run(capsys, a, b)
    assert (code, out) == (2, "") and err == (f"error: {b}: env.calibration.probes.matmul.samples_ms[0] must be a "
                                              "finite number >= 0, not 'fast'\n")


def test_the_threshold_comes_from_the_gate_when_given(tmp_path, capsys):
    a = write_flat(tmp_path / "a.json", [])
    code, _, err = run(capsys, a, a, "--threshold", "-1")
    assert code == 2 and err == "error: --threshold must be a percentage >= 0, not -1\n"
    code, _, err = run(capsys, a, a, "--threshold", "5", "--fail-on-regression", "-2")
    assert code == 2 and err == "error: --fail-on-regression must be a percentage >= 0, not -2\n"
    code, out, _ = run(capsys, a, a, "--threshold", "7", "--fail-on-regression", "0")
    assert code == 0 and "(T = 0%)" in out and "(T = 7%)" not in out


def test_a_stalled_training_row_is_a_regression_not_a_crash(tmp_path, capsys):
    a = write_flat(tmp_path / "a.json", [TrainRecord(model="mlp", row="fast", batch_size=64, window_rates=[900.0] * 3)])
    b = write_flat(tmp_path / "b.json", [TrainRecord(model="mlp", row="fast", batch_size=64, window_rates=[0.0] * 3)])
    code, out, _ = run(capsys, a, b, "--fail-on-regression", "5")
    assert code == 1 and verdicts(out) == ["regression"] and "infx slower [inf, inf]" in out
    assert "0 rows judged" in out  # a stop is flagged outside the family: no interval to test


def repeated_probes(seed: int, scale: float, spread: float, processes: int = 5) -> dict:
    """Calibration probes taken in ``processes`` processes whose medians spread by ``spread`` (sigma of the log)."""
    rng = np.random.default_rng(seed)
    probes = {}
    for name, ms in (("matmul_fp32_256", 0.3), ("copy_32MB", 1.0)):
        per = [lognormal(seed + k, 20, ms * scale * np.exp(rng.normal(0, spread)), 0.01) for k in range(processes)]
        probes[name] = {"samples_ms": [v for p in per for v in p], "samples_per_repeat": [20] * processes}
    return {"probes": probes}


def test_the_machine_check_judges_its_probes_by_their_own_between_run_spread():
    a = RunEnv(calibration=repeated_probes(1, 1.0, 0.10))
    b = RunEnv(calibration=repeated_probes(2, 1.3, 0.10))
    b.calibration["probes"]["disk_read"] = {"samples_ms": [5.0] * 5}  # only B has it: not compared
    drift = compare.machine_drift(a, b)
    assert sorted(drift["probes"]) == ["copy_32MB", "matmul_fp32_256"]
    assert drift["lo"] < drift["ratio"] < drift["hi"] and drift["ratio"] == pytest.approx(1.3, rel=0.12)
    assert compare.machine_state(drift, 0.05) == "changed (slower)"
    assert drift["interval"].df == 8  # five processes a side: Student's 2n - 2
    assert compare.machine_drift(a, b) == drift  # no resampling: the same files always give the same interval
    assert compare.machine_drift(a, RunEnv()) is None
    # the same machine, its probes 10% apart between processes: not "changed" at 5%, however the medians fall
    same = compare.machine_drift(a, RunEnv(calibration=repeated_probes(3, 1.0, 0.10)))
    assert compare.machine_state(same, 0.05) in ("same", "inconclusive")
    assert compare.machine_state(same, 0.05) != compare.machine_state(drift, 0.05)


def test_one_process_probes_are_not_judged_without_a_profile():
    a, b = RunEnv(calibration=calibration(1)), RunEnv(calibration=calibration(2, scale=1.3))
    drift = compare.machine_drift(a, b)
    assert drift["interval"] is None and drift["lo"] is None and compare.machine_state(drift, 0.05) == "no spread"
    assert drift["ratio"] == pytest.approx(1.3, rel=0.05) and not compare.machine_changed(drift, 0.05)


def test_normalizing_divides_by_the_machine_and_widens_the_interval():
    from bench.measure.stats import LogInterval

    ra = InferRecord(model="mlp", backend="eager", batch_size=1, latencies_ms=[1.0] * 5)
    rb = InferRecord(model="mlp", backend="eager", batch_size=1, latencies_ms=[2.0] * 5)
    machine = LogInterval(np.log(2.0), 0.1, 8)
    change = compare.judge(ra, rb, 0.05, machine, RowNoise((), 0.0, 19))
    # B took 2x with no noise of its own; the machine is 2x slower, its log error 0.1 at 8 df: B's code is 1x, with
    # the machine's interval
    assert change.slowdown == pytest.approx(1.0) and change.lo == pytest.approx(np.exp(-0.1 * 2.306), rel=1e-3)
    assert change.hi == pytest.approx(1 / change.lo)
    assert change.verdict == "inconclusive" and (change.n_a, change.n_b) == (5, 5)


def test_a_noisy_comparison_is_reproducible(tmp_path, capsys, base):
    b = write(tmp_path / "b.json", records(seed=2, slow=1.03), seed=200)
    profile = flat_profile(base, b, sd=0.05)
    first = run(capsys, base, b, "--noise-profile", profile)
    assert run(capsys, base, b, "--noise-profile", profile) == first  # same files, same intervals and verdicts


def test_unknown_env_fields_read_as_question_marks(tmp_path, capsys):
    path = tmp_path / "a.json"
    path.write_text(json.dumps(results_to_json(RunEnv(complete=True), [])))
    _, out, _ = run(capsys, path, path)
    assert out.splitlines()[0] == f"A: {path} | ? (?) | torch ? | threads ? | commit ? | ?"


def test_a_machine_within_noise_of_the_threshold_is_inconclusive(tmp_path, capsys):
    a = write_flat(tmp_path / "a.json", [])
    data = json.loads(open(a).read())
    data["env"]["calibration"] = {"probes": {"matmul": {"samples_ms": [1.02, 1.03, 1.05, 1.07, 1.08]}}}
    b = tmp_path / "b.json"
    b.write_text(json.dumps(data))
    data["env"]["calibration"] = {"probes": {"matmul": {"samples_ms": [1.0] * 5}}}
    (tmp_path / "a.json").write_text(json.dumps(data))
    _, out, _ = run(capsys, a, b, "--noise-profile", flat_profile(a, b, sd=0.02))  # 1.05x [0.98, 1.13]
    line = next(x for x in out.splitlines() if x.startswith("machine:"))
    assert line.endswith("): inconclusive at T = 5%") and "verdicts withheld" not in out


def test_help_documents_every_argument_and_the_exit_status():
    text = " ".join(compare.build_parser().format_help().split())  # independent of the terminal's width
    assert text.startswith("usage: python -m bench.compare [-h] [--threshold PCT] [--fail-on-regression PCT] "
                           "[--normalize] [--noise-profile PATH] [--allow-inconclusive] [--format {text,md,json}] "
                           "[--explain [ROW]] A.json B.json Compare two "
                           "results.json files (B against A). ")
    for needle in (
            " A.json the baseline run B.json the run to judge ",
            " --threshold PCT T for the verdicts when --fail-on-regression is not given (default 5) "
            "--fail-on-regression PCT T = PCT, and exit 1 when any row is a regression beyond it --normalize divide "
            "every ratio by the machine calibration ratio instead of withholding verdicts when the machines differ "
            "--noise-profile PATH the noise profile (a file, or a results folder holding noise_profile.json) that "
            "judges rows measured in one process (default: this machine's in the user cache, made by bench.run "
            "--repeat 5) --allow-inconclusive exit 0 rather than 3 when rows are inconclusive, have no verdict or are "
            "withheld --format {text,md,json} text (default), md "
            "(a table for a pull-request comment) or json (every verdict, for CI) --explain [ROW] op by op, from both "
            "runs' profiles (bench.run --profile): why each flagged row changed, or the rows whose key matches ROW "
            "(e.g. lenet.infer.eager.b1.fp32; wildcards allowed) B vs A = ",
            "divided by the machine's. Exit status: 1 when a row that was ok in A fails in B, or when "
            "--fail-on-regression is given and a row is a regression beyond it; 3 when a row is inconclusive, has no "
            "verdict or is withheld (unless --allow-inconclusive); 2 on bad input; else 0."):
        assert needle in text, needle
    assert text.endswith("else 0.")
