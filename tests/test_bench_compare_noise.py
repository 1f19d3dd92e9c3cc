"""bench.compare on runs measured in several processes (``--repeat``) and in one, on samples drawn per process with a
process-level shift (seeded numpy, never live timings): processes of the same code 1.7x apart give no verdict and
exit 3, a 25% shift of every process is flagged, a one-process row gets no verdict without this machine's noise
profile (and the output names the command that makes one) and is judged with it when there is one; every row says
what it could detect; and the json and md renderings of the same comparison."""
from __future__ import annotations

import json

import numpy as np
import pytest

from bench.analysis import compare, noise
from bench.records import InferRecord, ParityRecord, RunEnv, TrainRecord
from bench.report.files import results_payload as results_to_json


def draws(seed: int, medians: list[float], n: int = 300, sigma: float = 0.05) -> tuple[list[float], list[int]]:
    """(pooled samples, samples_per_repeat): one process per median, each process's samples around its median."""
    rng = np.random.default_rng(seed)
    per = [rng.lognormal(np.log(m), sigma, n).tolist() for m in medians]
    return [v for p in per for v in p], [n] * len(medians)


def calibration(medians: list[float]) -> dict:
    samples, sizes = draws(99, medians, n=50, sigma=0.02)
    return {"probes": {"matmul": {"samples_ms": samples, "samples_per_repeat": sizes if len(sizes) > 1 else []}}}


def write(path, procs: list[float], *, seed: int, train_procs: list[float] | None = None) -> str:
    """A run whose eager b=1 row took one process per entry of ``procs`` (its median, ms) and, optionally, a
    training row (samples/s per process); machine probes alike in every run."""
    lat, sizes = draws(seed, procs)
    recs = [InferRecord(model="mlp", device="cpu", backend="eager", batch_size=1, latencies_ms=lat,
                        samples_per_repeat=sizes if len(procs) > 1 else []),
            ParityRecord(model="mlp", device="cpu")]
    if train_procs:
        rates, tsizes = draws(seed + 1, train_procs, n=9, sigma=0.01)
        recs.append(TrainRecord(model="mlp", device="cpu", row="fast", batch_size=64, window_rates=rates,
                                samples_per_repeat=tsizes if len(train_procs) > 1 else []))
    env = RunEnv(device="cpu", device_name="Test CPU", torch="2.x", threads=2, repeat=len(procs), complete=True,
                 calibration=calibration([1.0] * len(procs)))
    path.write_text(json.dumps(results_to_json(env, recs)))
    return str(path)


def run(capsys, *argv) -> tuple[int, str, str]:
    code = compare.main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def as_json(capsys, *argv) -> tuple[int, dict]:
    code, out, _ = run(capsys, *argv, "--format", "json")
    return code, json.loads(out)


def profile(tmp_path, sd: float, keys=(("mlp", "infer", "eager", 1, "fp32"), ("calibration", "matmul")),
            df: int = 4) -> str:
    """This machine's noise profile as a --repeat 5 run would leave it, with processes ``sd`` apart (log sigma)."""
    env = RunEnv(device="cpu", device_name="Test CPU", threads=2)
    rows = {tuple(k): noise.RowNoise(tuple(k), sd ** 2, df) for k in keys}
    path = noise.cache_path(noise.machine_of(env), 2)
    noise.write_profile(noise.NoiseProfile(noise.machine_of(env), 2, df + 1, "2030-01-01", "test", rows), [path])
    return path


def test_processes_of_the_same_code_17x_apart_give_no_verdict_and_exit_3(tmp_path, capsys):
    a = write(tmp_path / "a.json", [0.10, 0.17, 0.10], seed=1, train_procs=[1000.0, 1700.0, 1000.0])
    b = write(tmp_path / "b.json", [0.17, 0.10, 0.17], seed=2, train_procs=[1700.0, 1000.0, 1700.0])
    code, doc = as_json(capsys, a, b, "--fail-on-regression", "10")
    assert code == 3 and doc["exit_code"] == 3
    assert [r["rule_verdict"] for r in doc["rows"]] == ["inconclusive", "inconclusive"]
    for row in doc["rows"]:
        assert row["processes_a"] == row["processes_b"] == 3 and row["method"] == "welch" and row["df"] == 4
        assert row["lo"] < 1 < row["hi"]
        assert row["spread_a"] == pytest.approx(0.7, abs=0.05)
        assert row["mde"] > 2 and row["processes_needed"] is None  # 3 processes 1.7x apart tell little; 200 not 1.15x
    infer = doc["rows"][0]  # the pooled calls alone would have called it: their interval excludes 1
    assert infer["within_lo"] > 1.1
    code, out, _ = run(capsys, a, b, "--fail-on-regression", "10", "--allow-inconclusive")
    assert code == 0 and f"this data detects >= {infer['mde']:.2f}x; detecting 1.15x would take over 200 " in out
    quiet_a = write(tmp_path / "c.json", [0.10, 0.11, 0.10], seed=3, train_procs=[1000.0, 1100.0, 1000.0])
    quiet_b = write(tmp_path / "d.json", [0.11, 0.10, 0.11], seed=4, train_procs=[1100.0, 1000.0, 1100.0])
    code, out, _ = run(capsys, quiet_a, quiet_b, "--fail-on-regression", "10")
    assert code == 3 and "on both sides would detect 1.15x" in out


def test_a_25_percent_shift_of_every_process_is_flagged(tmp_path, capsys):
    a = write(tmp_path / "a.json", [0.100, 0.105, 0.097], seed=1, train_procs=[1000.0, 1040.0, 980.0])
    b = write(tmp_path / "b.json", [0.125, 0.131, 0.121], seed=2, train_procs=[800.0, 832.0, 784.0])
    code, out, err = run(capsys, a, b, "--fail-on-regression", "10")
    assert code == 1 and "FAIL: 2 regressions beyond 10%" in err
    code, doc = as_json(capsys, a, b, "--fail-on-regression", "10")
    assert code == 1 and doc["exit_code"] == 1 and doc["family"] == {"rule": "holm", "alpha": 0.05, "rows": 2}
    assert [r["verdict"] for r in doc["rows"]] == ["regression", "regression"]
    infer = doc["rows"][0]
    assert infer["slowdown"] == pytest.approx(1.25, rel=0.02) and infer["unit"] == "ms per call"
    assert infer["median_a"] == pytest.approx(0.1007, rel=0.02) and infer["median_b"] == pytest.approx(0.1257, rel=0.02)
    assert infer["p"] < 0.025 and 1.1 < infer["mde"] < 1.4  # Holm's first step over 2 rows: p <= 0.025
    assert doc["rows"][1]["unit"] == "samples/s" and doc["rows"][1]["slowdown"] == pytest.approx(1.25, rel=0.02)


def test_a_one_process_row_without_a_profile_gets_no_verdict_and_names_the_command(tmp_path, capsys):
    a = write(tmp_path / "a.json", [0.10], seed=1)
    far = write(tmp_path / "b.json", [0.20], seed=2)  # 2x slower: still one process each, nothing to judge it by
    code, out, _ = run(capsys, a, far, "--fail-on-regression", "10")
    assert code == 3 and "no verdict: one process, no noise profile for this row" in out
    assert "make this machine's noise profile once: python -m bench.run --repeat 5 --threads 2" in out
    assert "machine: B vs A calibration 1.00x" in out and "not judged, its probes have no between-run spread" in out
    code, doc = as_json(capsys, a, far, "--fail-on-regression", "10")
    row = doc["rows"][0]
    assert row["verdict"] == "no verdict" and row["slowdown"] == pytest.approx(2.0, rel=0.03) and row["lo"] is None
    assert doc["noise"] == {"profiles": [], "make": "python -m bench.run --repeat 5 --threads 2"}
    assert doc["machine"]["state"] == "no spread"


def test_a_one_process_row_is_judged_with_this_machines_profile(tmp_path, capsys):
    a = write(tmp_path / "a.json", [0.10], seed=1)
    same_code = write(tmp_path / "b.json", [0.17], seed=2)  # another process of the same code, 1.7x slower
    far = write(tmp_path / "c.json", [0.40], seed=3)
    path = profile(tmp_path, sd=0.3)  # this machine's processes spread that much
    code, doc = as_json(capsys, a, same_code, "--fail-on-regression", "10")
    row = doc["rows"][0]
    assert code == 3 and row["verdict"] == "inconclusive" and row["method"] == "noise profile" and row["df"] == 4
    assert row["within_lo"] > 1.6  # what the samples alone would have flagged
    assert doc["noise"]["profiles"] == [path] and doc["machine"]["state"] in ("same", "inconclusive")
    code, doc = as_json(capsys, a, far, "--fail-on-regression", "10")
    assert code == 1 and doc["rows"][0]["verdict"] == "regression"  # 4x is beyond what 30% noise explains
    quiet = profile(tmp_path, sd=0.02)  # on a quiet machine the same 1.7x is a regression
    code, doc = as_json(capsys, a, same_code, "--fail-on-regression", "10", "--noise-profile", quiet)
    assert code == 1 and doc["rows"][0]["verdict"] == "regression" and doc["noise"]["profiles"] == [quiet]


def test_a_profile_of_another_thread_count_is_not_this_runs(tmp_path, capsys):
    a = write(tmp_path / "a.json", [0.10], seed=1)
    b = write(tmp_path / "b.json", [0.11], seed=2)
    profile(tmp_path, sd=0.02)
    data = json.loads(open(b).read())
    data["env"]["threads"] = 1
    (tmp_path / "b.json").write_text(json.dumps(data))
    _, doc = as_json(capsys, a, b)
    assert doc["rows"][0]["verdict"] == "no verdict"  # B's machine at 1 thread has no profile: no prior for it
    assert doc["noise"]["make"] == "python -m bench.run --repeat 5 --threads 1"


def test_a_repeated_run_against_a_one_process_run_pools_its_spread_with_the_profile(tmp_path, capsys):
    a = write(tmp_path / "a.json", [0.100, 0.105, 0.097], seed=1)
    b = write(tmp_path / "b.json", [0.125], seed=2)
    _, doc = as_json(capsys, a, b, "--fail-on-regression", "10")
    assert doc["rows"][0]["verdict"] == "no verdict"
    profile(tmp_path, sd=0.03)
    _, doc = as_json(capsys, a, b, "--fail-on-regression", "10")
    row = doc["rows"][0]
    assert (row["processes_a"], row["processes_b"], row["method"], row["df"]) == (3, 1, "noise profile", 6)
    _, out, _ = run(capsys, a, b)
    assert "+P" in out and "3/1" in out and "A: " in out and "| 3 processes" in out


def test_json_carries_the_runs_the_machine_and_every_list(tmp_path, capsys):
    a = write(tmp_path / "a.json", [0.100, 0.105, 0.097], seed=1)
    b = write(tmp_path / "b.json", [0.101, 0.104, 0.099], seed=2, train_procs=[1000.0, 1001.0, 999.0])
    code, doc = as_json(capsys, a, b)
    assert code == 3  # three processes 5% apart cannot tell 5% changes: inconclusive
    assert set(doc) == {"format", "a", "b", "rule", "threshold_pct", "gate_pct", "noise", "family", "machine",
                        "allow_inconclusive", "normalized", "withheld", "notes", "rows", "counts", "now_failing",
                        "only_a", "only_b", "exit_code"}
    assert doc["format"] == 2 and doc["a"]["repeat"] == 3 and doc["a"]["path"] == a and doc["threshold_pct"] == 5
    assert doc["machine"]["state"] == "same" and set(doc["machine"]["probes"]) == {"matmul"}
    assert doc["rows"][0]["key"] == ["mlp", "infer", "eager", 1, "fp32"]
    assert doc["counts"]["no change"] + doc["counts"]["inconclusive"] == 1
    assert doc["only_b"] == [["mlp", "train", "fast", 64, "fp32", False, None]] and doc["now_failing"] == []


def test_md_is_a_pull_request_comment(tmp_path, capsys):
    a = write(tmp_path / "a.json", [0.100, 0.105, 0.097], seed=1, train_procs=[1000.0, 1040.0, 980.0])
    b = write(tmp_path / "b.json", [0.125, 0.131, 0.121], seed=2, train_procs=[1000.0, 1030.0, 990.0])
    code, out, _ = run(capsys, a, b, "--format", "md", "--fail-on-regression", "10")
    lines = out.splitlines()
    assert code == 1 and lines[0] == "### bench.compare: B vs A at T = 10%"
    assert lines[2].startswith("1 regressions, 0 improvements")
    header = next(i for i, line in enumerate(lines) if line.startswith("| model"))
    assert lines[header + 1].startswith("|---") and "| MDE " in lines[header]
    assert "**regression**" in lines[header + 2] and "1.25x slower" in lines[header + 2]
    assert "**" not in lines[header + 3]  # the unchanged training row is not bold
    assert "<details><summary>how this was decided</summary>" in lines and lines[-1] == "</details>"


def test_process_sizes_that_do_not_fit_their_samples_are_no_ratio(tmp_path, capsys):
    a = write(tmp_path / "a.json", [0.100, 0.105], seed=1)
    data = json.loads(open(a).read())
    data["records"][0]["samples_per_repeat"] = [300, 299]
    (tmp_path / "b.json").write_text(json.dumps(data))
    code, doc = as_json(capsys, a, tmp_path / "b.json")
    assert code == 3 and doc["rows"][0]["slowdown"] is None and doc["rows"][0]["verdict"] == "inconclusive"


@pytest.mark.parametrize("content, says", [
    (None, "cannot read the noise profile"), ("{", "not a noise profile"),
    ('{"version": 1, "rows": [{"key": [], "variance": -1, "df": 4}], "machine": "m", "threads": 1, "processes": 5}',
     "variance -1.0 with 4 df"),
])
def test_a_bad_noise_profile_is_one_error_line(capsys, tmp_path, content, says):
    a = write(tmp_path / "a.json", [0.1], seed=1)
    bad = tmp_path / "profile.json"
    if content is not None:
        bad.write_text(content)
    code, out, err = run(capsys, a, a, "--noise-profile", bad)
    assert code == 2 and out == "" and err.startswith(f"error: {bad}: ") and says in err and err.count("\n") == 1


# -- the noise profile itself (bench.analysis.noise) ---------------------------------------------------------------------

def test_the_cache_follows_the_override_then_xdg_then_home(monkeypatch, tmp_path):
    monkeypatch.setenv(noise.CACHE_ENV, str(tmp_path / "mine"))
    assert noise.cache_dir() == str(tmp_path / "mine")
    monkeypatch.delenv(noise.CACHE_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert noise.cache_dir() == str(tmp_path / "xdg" / "torch-zoo-bench" / "noise")
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert noise.cache_dir() == str(tmp_path / "home" / ".cache" / "torch-zoo-bench" / "noise")
    env = RunEnv(device="cpu", device_name="AMD EPYC 7B13", cpu_count=2, threads=1)
    assert noise.machine_of(env) == "cpu AMD EPYC 7B13 2 cores"
    assert noise.cache_path(noise.machine_of(env), 1).endswith("/cpu-amd-epyc-7b13-2-cores-t1.json")


def test_a_profile_round_trips_and_a_folder_means_its_profile(tmp_path):
    rows = {("mlp", "infer", "eager", 1, "fp32"): noise.RowNoise(("mlp", "infer", "eager", 1, "fp32"), 0.01, 4)}
    made = noise.NoiseProfile("cpu X 2 cores", 2, 5, "2030-01-01", "python -m bench.run --repeat 5", rows)
    [path] = noise.write_profile(made, [str(tmp_path / "run" / noise.PROFILE_FILE)])
    back = noise.load_profile(str(tmp_path / "run"))
    assert (back.machine, back.threads, back.processes, back.rows, back.path) == (made.machine, 2, 5, rows, path)
    data = json.loads(open(path).read())
    data["version"] = 99
    open(path, "w").write(json.dumps(data))
    with pytest.raises(ValueError, match="version 99, expected 1"):
        noise.load_profile(path)


def test_priors_pool_both_machines_profiles_and_need_both():
    def prof(machine: str, variance: float, df: int) -> noise.NoiseProfile:
        return noise.NoiseProfile(machine, 2, df + 1, rows={("k",): noise.RowNoise(("k",), variance, df)})

    both = noise.Priors([prof("a", 0.01, 4), prof("b", 0.04, 9)], 2, "cmd")
    got = both.prior(("k",))
    assert got.df == 13 and got.variance == pytest.approx((0.01 * 4 + 0.04 * 9) / 13)
    assert both.prior(("other",)) is None
    assert noise.Priors([prof("a", 0.01, 4)], 2, "cmd").prior(("k",)) is None  # B's machine has no profile
    assert noise.Priors([], 1, "cmd").describe() == ("no noise profile for this machine: one-process rows get no "
                                                     "verdict; make one with `cmd`")


def test_a_run_of_fewer_than_five_processes_makes_no_profile(tmp_path):
    rec = InferRecord(model="mlp", backend="eager", batch_size=1, latencies_ms=[1.0, 2.0, 3.0, 4.0],
                      samples_per_repeat=[1, 1, 1, 1])
    assert noise.save_profile(RunEnv(repeat=4), [rec], str(tmp_path)) is None
    profile, paths = noise.save_profile(RunEnv(repeat=5), [rec], str(tmp_path))  # four processes of this row: 3 df
    assert profile.prior(rec.key()).df == 3 and paths[0] == str(tmp_path / noise.PROFILE_FILE)
