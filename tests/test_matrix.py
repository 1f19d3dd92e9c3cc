"""bench.matrix (runs side by side), bench.history (a results.json over git commits) and bench.report.glance (one run
at a glance), on records written here: the cells, the best mark, the ratio against the first run, the labels, the
step rule of bench.compare over commits (with an older-schema version skipped), and the index's matrix."""
from __future__ import annotations

import json
import os
import subprocess

import numpy as np
import pytest

from bench.analysis import history, matrix
from bench.records import InferRecord, ParityRecord, RunEnv, TrainRecord, TtaRecord
from bench.report import files as report
from bench.report.glance import glance, glance_lines


def lognormal(seed: int, n: int, median: float, sigma: float = 0.05) -> list[float]:
    return np.random.default_rng(seed).lognormal(np.log(median), sigma, n).tolist()


def infer(backend, bs, p50, seed=0, **kw) -> InferRecord:
    base = dict(model="mlp", device="cpu", backend=backend, batch_size=bs, p50_ms=p50, iqr_ms=p50 * 0.1,
                n_calls=200, latencies_ms=lognormal(seed, 200, p50), samples_per_s=bs / (p50 * 1e-3),
                accuracy_ok=True, accuracy_delta_pts=0.0, weights="checkpoint", data="real")
    base.update(kw)
    return InferRecord(**base)


def train(row, sps, seed=0, **kw) -> TrainRecord:
    base = dict(model="mlp", device="cpu", row=row, batch_size=64, samples_per_s=sps, samples_per_s_iqr=sps * 0.02,
                window_rates=lognormal(seed, 9, sps, 0.01), windows=9)
    base.update(kw)
    return TrainRecord(**base)


def env(**kw) -> RunEnv:
    base = dict(device="cpu", device_name="Test CPU", timestamp="2030-01-02T03:04:05+00:00", threads=2,
                git_commit="abc", torch="2.x", complete=True,
                calibration={"probes": {"mm": {"samples_ms": lognormal(9, 50, 0.3, 0.01)}}})
    base.update(kw)
    return RunEnv(**base)


def write(path, run_env: RunEnv, recs) -> str:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(report.results_payload(run_env, recs), f)
    return str(path)


# -- bench.matrix --------------------------------------------------------------------------------------------------------

def two_runs(tmp_path):
    a = write(tmp_path / "a" / "cpu" / "results.json", env(),
              [infer("eager", 1, 2.0), infer("onnxruntime", 1, 1.0), train("fast", 1000.0),
               TtaRecord(model="mlp", device="cpu", row="shared_loop", target_acc=0.8, train_s=3.0)])
    b = write(tmp_path / "b" / "cuda" / "results.json",
              env(device="cuda", device_name="Test GPU", timestamp="2030-02-03T00:00:00+00:00"),
              [infer("eager", 1, 0.5), InferRecord(model="mlp", device="cuda", backend="onnxruntime", batch_size=1,
                                                   status="skipped", reason="not installed"),
               train("fast", 4000.0), infer("tensorrt", 1, 0.25, model="lenet")])
    return a, b


def test_the_latency_matrix_marks_the_best_and_divides_by_the_first_run(tmp_path):
    runs = matrix.load_runs(list(two_runs(tmp_path)))
    assert [r.label for r in runs] == ["Test CPU (cpu) 2030-01-02", "Test GPU (cuda) 2030-02-03"]
    rows = matrix.build(runs, "latency")
    assert list(rows) == ["mlp", "lenet"]
    mlp = {(r.phase, r.label): r for r in rows["mlp"]}
    assert list(mlp) == [("infer", "eager b=1"), ("infer", "onnxruntime b=1"), ("tta", "shared_loop 0.8")]
    eager = mlp[("infer", "eager b=1")]
    assert eager.best() == 1 and eager.speed_vs_first(1) == pytest.approx(4.0)  # 2.0 ms -> 0.5 ms: 4x faster
    assert matrix.cell_text(eager, 0) == "2.00 ± 10.0%" and matrix.cell_text(eager, 1) == "**0.500 ± 10.0%** (4.00x)"
    ort = mlp[("infer", "onnxruntime b=1")]
    assert matrix.cell_text(ort, 1) == "skipped" and ort.best() is None  # one run measured it: nothing to mark
    assert matrix.cell_text(mlp[("tta", "shared_loop 0.8")], 1) == "-"  # the second run has no such row
    assert matrix.cell_text(rows["lenet"][0], 0) == "-"


def test_the_throughput_matrix_prefers_the_higher_rate(tmp_path):
    runs = matrix.load_runs(list(two_runs(tmp_path)))
    rows = {(r.phase, r.label): r for r in matrix.build(runs, "throughput")["mlp"]}
    fast = rows[("train", "fast b=64")]
    assert fast.unit == "samples/s" and fast.best() == 1 and fast.speed_vs_first(1) == pytest.approx(4.0)
    assert matrix.cell_text(fast, 0) == "1,000 ± 2.0%"
    assert ("tta", "shared_loop 0.8") not in rows  # time to accuracy is a latency, not a rate
    assert list(rows)[0] == ("train", "fast b=64")  # training first, then inference, as in summary.md


def test_labels_that_would_repeat_carry_their_folder(tmp_path):
    a = write(tmp_path / "cpu" / "results.json", env(), [infer("eager", 1, 1.0)])
    b = write(tmp_path / "backends" / "cpu" / "results.json", env(), [infer("eager", 1, 1.1)])
    runs = matrix.load_runs([a, b])
    assert runs[0].label.endswith("[" + os.path.basename(str(tmp_path)) + "/cpu]")
    assert runs[1].label == "Test CPU (cpu) 2030-01-02 [backends/cpu]"


def test_the_matrix_cli_writes_markdown_and_a_png_per_model(tmp_path, capsys):
    a, b = two_runs(tmp_path)
    out = tmp_path / "m" / "matrix.md"
    assert matrix.main([a, b, "--out", str(out)]) == 0
    text = out.read_text()
    assert text.startswith("# Matrix: latency across 2 runs\n") and "## mlp" in text and "## lenet" in text
    assert "![mlp](matrix_latency_mlp.png)" in text
    assert sorted(os.listdir(out.parent)) == ["matrix.md", "matrix_latency_lenet.png", "matrix_latency_mlp.png"]
    assert (out.parent / "matrix_latency_mlp.png").read_bytes()[:4] == b"\x89PNG"
    capsys.readouterr()
    assert matrix.main([a, b, "--metric", "throughput"]) == 0
    assert capsys.readouterr().out.startswith("# Matrix: throughput across 2 runs")


@pytest.mark.parametrize("argv, err", [
    (["only.json"], "error: give two or more results.json files to put side by side\n"),
    (["a.json", "b.json", "--metric", "speed"], "error: argument --metric: invalid choice: 'speed' (choose from "),
])
def test_the_matrix_cli_refuses_bad_input_in_one_line(capsys, argv, err):
    with pytest.raises(SystemExit) if "--metric" in argv else _no_raise():
        assert matrix.main(argv) == 2
    assert capsys.readouterr().err.startswith(err)


class _no_raise:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_the_index_has_each_run_at_a_glance_and_the_matrix(tmp_path):
    write(tmp_path / "cpu" / "results.json", env(), [infer("eager", 1, 2.0)])
    write(tmp_path / "backends" / "cpu" / "results.json", env(), [infer("eager", 1, 1.0)])
    text = open(report.write_index(str(tmp_path))).read()
    assert "[backends/cpu/summary.md](backends/cpu/summary.md)" in text  # a run two folders down is indexed too
    assert "## At a glance: cpu (Test CPU, cpu, 2030-01-02)" in text
    assert "## At a glance: backends/cpu (Test CPU, cpu, 2030-01-02)" in text
    assert "## Matrix: latency across 2 runs" in text and "## Matrix: throughput across 2 runs" in text
    row = next(ln for ln in text.splitlines() if ln.startswith("| infer") and "eager b=1" in ln and "ms" in ln)
    assert "2.00 ± 10.0%" in row and "**1.00 ± 10.0%** (2.00x, no verdict)" in row  # one process, no profile


def test_a_run_written_one_folder_down_refreshes_the_index_above(tmp_path):
    write(tmp_path / "cpu" / "results.json", env(), [infer("eager", 1, 2.0)])
    report.write_index(str(tmp_path))
    write(tmp_path / "backends" / "cpu" / "results.json", env(), [infer("eager", 1, 1.0)])
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "README.md").write_text("# Not an index\n")
    report.write_index(str(tmp_path / "backends"))  # what bench.run --out results/backends does
    assert "## Matrix: latency across 2 runs" in (tmp_path / "README.md").read_text()
    assert (tmp_path / "backends" / "README.md").read_text().startswith("# Benchmark results\n")
    report.write_index(str(tmp_path / "other" / "x"))  # above it a README that is not an index: left alone
    assert (tmp_path / "other" / "README.md").read_text() == "# Not an index\n"


def repeated(backend: str, p50: float, procs: list[float], seed: int) -> InferRecord:
    """A row measured in one process per entry of ``procs`` (each a factor on ``p50``), 60 calls each."""
    lat = [v for k, f in enumerate(procs) for v in lognormal(seed + k, 60, p50 * f, 0.02)]
    return infer(backend, 1, p50, seed=seed, latencies_ms=lat, samples_per_repeat=[60] * len(procs))


def test_each_column_carries_compares_verdict_against_the_first(tmp_path, capsys):
    spread = [1.0, 1.03, 0.98, 1.01, 0.99]
    a = write(tmp_path / "a" / "results.json", env(), [repeated("eager", 2.0, spread, 1),
                                                       repeated("onnxruntime", 1.0, spread, 2)])
    b = write(tmp_path / "b" / "results.json", env(), [repeated("eager", 2.5, spread[::-1], 3),
                                                       repeated("onnxruntime", 1.0, spread[::-1], 4)])
    c = write(tmp_path / "c" / "results.json", env(), [infer("eager", 1, 2.0, seed=5)])
    assert matrix.main([a, b, c, "--threshold", "10"]) == 0
    out = capsys.readouterr().out
    eager = next(line for line in out.splitlines() if "eager b=1" in line)
    ort = next(line for line in out.splitlines() if "onnxruntime b=1" in line)
    assert "(0.80x, regression)" in eager and "(1.00x, no verdict)" in eager  # c: one process, no profile
    assert "(1.00x, no change)" in ort and "T = 10%." in out
    assert matrix.main([a, b, "--threshold", "-1"]) == 2
    assert capsys.readouterr().err == "error: --threshold must be a percentage >= 0, not -1\n"


# -- bench.report.glance ------------------------------------------------------------------------------------------------

def test_glance_takes_the_fastest_row_within_its_accuracy_budget():
    recs = [train("tutorial_loop", 1000.0, speedup_vs_tutorial_loop=1.0),
            train("fast", 1800.0, speedup_vs_tutorial_loop=1.8),
            infer("eager", 1, 2.0, speedup_vs_eager=1.0),
            infer("onnxruntime", 1, 1.0, speedup_vs_eager=2.0, accuracy_delta_pts=0.01),
            infer("onnxruntime-int8", 1, 0.5, precision="int8", accuracy_ok=False, accuracy_delta_pts=-3.0),
            infer("eager", 64, 10.0, speedup_vs_eager=1.0), infer("openvino", 64, 5.0, speedup_vs_eager=2.0),
            ParityRecord(model="mlp", device="cpu", max_abs_diff=1e-7, parity_ok=True),
            InferRecord(model="mlp", device="cpu", backend="compile", batch_size=1, status="failed", reason="boom")]
    [g] = glance(recs)
    assert g.train == "1.80x (b=64, fp32; IQR fast 2.0%, tutorial 2.0%)"
    b1, b64 = g.backends
    assert (b1.batch, b1.winner.backend, b1.runner_up.backend) == (1, "onnxruntime", "eager")  # int8 moved accuracy
    assert "onnxruntime-int8 outside its accuracy budget" in b1.others and "compile failed" in b1.others
    assert (b64.batch, b64.recipe, b64.winner.backend) == (64, True, "openvino")  # the ladder's batch
    assert g.parity == "PASS (max abs diff 1.0e-07, tolerance 0.0001)"
    lines = glance_lines(env(skipped_precisions={"bf16": "no AMX"}), recs)
    assert lines[0] == "## At a glance" and "- failed: mlp infer compile b=1: boom" in lines
    assert "- precision bf16 left out of the plan: no AMX" in lines
    assert glance_lines(env(), []) == []


# -- bench.history ------------------------------------------------------------------------------------------------------

def git(repo, *args):
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=repo, check=True,
                   capture_output=True)


def history_repo(tmp_path):
    """Four commits of results/cpu/results.json: an old-schema file, a base run, the same code again (fresh
    samples), and a 25% slower eager row."""
    repo = tmp_path / "repo"
    path = repo / "results" / "cpu" / "results.json"
    path.parent.mkdir(parents=True)
    git(repo, "init", "-q")
    versions = [None, 1.0, 1.0, 1.25]
    for i, slow in enumerate(versions):
        if slow is None:
            path.write_text(json.dumps({"env": {"device": "cpu"}, "records": []}))
        else:
            write(path, env(git_commit=f"c{i}"), [infer("eager", 1, 2.0 * slow, seed=i),
                                                  infer("onnxruntime", 1, 1.0, seed=10 + i)])
        git(repo, "add", "-A")
        git(repo, "commit", "-qm", f"run {i}")
    return repo, path


def test_history_skips_the_old_schema_and_flags_only_the_real_step(tmp_path):
    repo, path = history_repo(tmp_path)
    found = history.versions(str(path))
    assert [v.subject for v in found] == ["run 0", "run 1", "run 2", "run 3"]
    assert found[0].skipped.startswith("results schema version None; this bench reads version 2")
    loaded = [v for v in found if v.skipped is None]
    # Each version measured every row in one process: with no noise profile no step gets a verdict; with this
    # machine's (processes 1% apart), the one real step is flagged.
    by_default = {s.label: s for s in history.build(loaded, "latency", 0.05, normalize=False)["mlp"]}
    assert [p.step for p in by_default["eager b=1"].points] == [None, "no verdict", "no verdict"]
    quiet = profile(tmp_path, loaded, 0.01)
    series = {s.label: s for s in history.build(loaded, "latency", 0.05, normalize=False, profile=quiet)["mlp"]}
    eager = series["eager b=1"].points
    assert [p.step for p in eager] == [None, "no change", "regression"]
    assert eager[2].ratio == pytest.approx(1.25, rel=0.03)
    assert [p.step for p in series["onnxruntime b=1"].points] == [None, "no change", "no change"]
    text = history.render(str(path), found, history.build(loaded, "latency", 0.05, False, quiet), "latency", 0.05,
                          False)
    assert "**skipped**: results schema version None" in text and "4 committed versions, 3 read, 1 skipped" in text
    assert "x slower)**" in next(ln for ln in text.splitlines() if "eager b=1" in ln)
    unjudged = history.render(str(path), found, history.build(loaded, "latency", 0.05, False), "latency", 0.05, False)
    assert "2.50 ± 10.0% ? " in next(ln for ln in unjudged.splitlines() if "eager b=1" in ln)


def test_history_withholds_a_step_when_the_machine_changed_unless_normalized(tmp_path):
    a = env(calibration={"probes": {"mm": {"samples_ms": lognormal(1, 50, 0.3, 0.01)}}})
    b = env(calibration={"probes": {"mm": {"samples_ms": lognormal(2, 50, 0.6, 0.01)}}})  # a machine twice as slow
    ra, rb = infer("eager", 1, 1.0, seed=1), infer("eager", 1, 2.0, seed=2)  # ... and a row twice as slow
    v = [history.Version("c1", "2030-01-01", "a", a, [ra]), history.Version("c2", "2030-01-02", "b", b, [rb])]
    quiet = profile(tmp_path, v, 0.01)
    assert history.step(a, b, ra, rb, 0.05, normalize=False, profile=quiet)[0] == "withheld"
    assert history.step(a, b, ra, rb, 0.05, normalize=True, profile=quiet)[0] == "no change"
    assert history.step(a, b, ra, rb, 0.05, normalize=False)[0] == "no verdict"  # no profile: nothing to judge by
    [s] = history.build(v, "latency", 0.05, normalize=True)["mlp"]
    assert s.points[1].value == pytest.approx(1.0, rel=0.03)  # divided by the machine's ratio


def profile(tmp_path, loaded, sd: float) -> str:
    """A noise profile for every row and probe of the versions, processes ``sd`` apart (log sigma), 19 df."""
    from bench.analysis import noise

    keys = {r.key() for v in loaded for r in v.records}
    keys |= {("calibration", n) for v in loaded for n in v.env.calibration.get("probes", {})}
    path = str(tmp_path / f"profile_{sd:g}.json")
    noise.write_profile(noise.NoiseProfile("m", 2, 20, rows={k: noise.RowNoise(k, sd ** 2, 19) for k in keys}),
                        [path])
    return path


def test_history_cli_writes_the_trend_and_plots(tmp_path, capsys):
    repo, path = history_repo(tmp_path)
    out = tmp_path / "h" / "history.md"
    assert history.main([str(path), "--out", str(out)]) == 0
    assert "## mlp" in out.read_text() and (out.parent / "history_latency_mlp.png").exists()
    capsys.readouterr()
    assert history.main([str(path), "--threshold", "-3"]) == 2
    assert capsys.readouterr().err == "error: --threshold must be a percentage >= 0, not -3\n"
    assert history.main([str(path), "--noise-profile", str(tmp_path / "none.json")]) == 2
    assert capsys.readouterr().err.startswith(f"error: {tmp_path / 'none.json'}: cannot read the noise profile")
    outside = tmp_path / "plain"
    outside.mkdir()
    assert history.main([str(outside / "results.json")]) == 2
    assert capsys.readouterr().err.startswith("error: git rev-parse failed: ")
