"""bench.report.files / bench.report.tables / bench.report.plots: what summary.md, results.csv, the plots and the README index show, from
hand-made typed records of every phase (ok, failed, skipped, above the bound, too few calls for a p99)."""
from __future__ import annotations

import csv
import json
import os
import sys

import pytest

import zoo.atomic
from bench.records import (
    THROUGHPUT_DEFINITION,
    InferRecord,
    ModelRecord,
    ParityRecord,
    RunEnv,
    ScaleRecord,
    TrainRecord,
    TtaRecord,
    not_ok,
)
from bench.report import files as report
from bench.report import infer_tables, plots, selection, tables
from bench.report.schema import results_from_json


def make_env(**kw) -> RunEnv:
    base = dict(device="cpu", device_name="Test CPU", torch="2.x", torchvision="0.x", onnxruntime="1.x",
                python="3.11", platform="Linux", cpu_count=2, threads=2, memory_gb=16.0, git_commit="abc1234",
                timestamp="2030-01-01T00:00:00+00:00", command="python -m bench.run --device cpu", wall_s=812.0,
                budget_s=900.0, clock="perf_counter, device sync per call",
                maths={"cudnn_benchmark": True, "tf32": False},
                calibration={"probes": {"matmul_fp32_256": {"what": "torch.mm 256", "median_ms": 1.25,
                                                         "samples_ms": [1.2, 1.3]}}},
                peaks={"fp32_flops_per_s": 2.5e11, "mem_bytes_per_s": 1.2e10},
                skipped_precisions={"fp16": "no fp16 matmul on this CPU"}, planned_rows=30, done_rows=30,
                complete=True)
    base.update(kw)
    return RunEnv(**base)


def train(row, sps, **kw) -> TrainRecord:
    base = dict(model="mlp", device="cpu", row=row, batch_size=64, data="synthetic", threads=2, samples_per_s=sps,
                samples_per_s_iqr=sps * 0.05, window_rates=[sps] * 5, windows=5, steps_per_window=100)
    base.update(kw)
    return TrainRecord(**base)


def infer(backend, bs, p50, **kw) -> InferRecord:
    base = dict(model="mlp", device="cpu", backend=backend, batch_size=bs, threads=2, n_calls=2000,
                latencies_ms=[p50] * 5, p50_ms=p50, p90_ms=p50 * 1.1, p99_ms=p50 * 1.3, max_ms=p50 * 2,
                mean_ms=p50 * 1.05, iqr_ms=p50 * 0.02, samples_per_s=bs / (p50 * 1e-3), data="synthetic",
                weights="random", accuracy=0.10, accuracy_delta_pts=0.0, argmax_agreement=1.0,
                agreement_samples=512, max_abs_diff=1e-6, accuracy_budget_pts=0.1, accuracy_ok=True)
    base.update(kw)
    return InferRecord(**base)


def sample_records():
    return [
        ModelRecord(model="mlp", device="cpu", dataset="fashionmnist", input_shape="1x28x28", params_total=669706,
                    params_trainable=669706, flops_per_sample=1.34e6, train_flops_per_sample=4.0e6, weights="random",
                    data="synthetic"),
        ModelRecord(model="lenet", device="cpu", dataset="mnist", params_total=215370, weights="checkpoint",
                    checkpoint="runs/lenet/best.pt", checkpoint_acc=0.987, checkpoint_epoch=10, data="real",
                    data_dir="/data/MNIST/raw"),
        not_ok(ModelRecord, "cifar_cnn", "cpu", ValueError("runs/cifar_cnn/best.pt is truncated")),
        # Deliberately inconsistent derived fields: the tables must show them as they are, never recompute them.
        train("tutorial_loop", 1000.0, speedup_vs_tutorial_loop=1.0, fraction_of_compute=0.1),
        train("fused_optimizer", 1200.0, rung_gain=1.2, speedup_vs_tutorial_loop=7.77, fraction_of_compute=0.12),
        not_ok(TrainRecord, "mlp", "cpu", RuntimeError("loader exploded"), row="no_host_read", batch_size=64),
        train("fast", 10500.0, rung_gain=3.0, speedup_vs_tutorial_loop=10.5, fraction_of_compute=1.05,
              above_bound=True, pct_of_peak=0.2, peak_mem_mb=512.0, mem_delta_mb=64.0,
              tuned={"channels_last": True, "optimizer_impl": "foreach", "compile": None, "gain": 1.4,
                     "measured": {"contiguous/fused": 1000.0, "channels_last/foreach": 1400.0}}),
        train("compute", 10000.0, pct_of_peak=0.19),
        train("compute", 21000.0, precision="bf16", speedup_vs_fp32_compute=2.1),
        infer("eager", 1, 0.2, n_calls=30, p90_ms=None, p99_ms=None, max_ms=0.9),
        infer("onnxruntime", 1, 0.1, speedup_vs_eager=2.0),
        not_ok(InferRecord, "mlp", "cpu", "quick: not run", status="skipped", backend="compile", batch_size=1),
        infer("eager", 64, 1.0, n_calls=500, p99_ms=None, max_ms=3.0),
        infer("onnxruntime-int8", 64, 0.4, precision="int8", speedup_vs_eager=2.5, accuracy=0.08,
              accuracy_delta_pts=-2.0, accuracy_budget_pts=1.0, accuracy_ok=False),
        ParityRecord(model="mlp", device="cpu", opset=18, exporter="dynamo", max_abs_diff=2e-7, max_rel_diff=1e-5,
                     parity_ok=True, dynamic_batch_ok=True, argmax_agreement=1.0, agreement_samples=512),
        ParityRecord(model="lenet", device="cpu", opset=18, exporter="dynamo", max_abs_diff=3e-3, parity_ok=False),
        ScaleRecord(model="mlp", device="cpu", processes=2, batch_size=64, batch_size_global=128,
                    dist_backend="gloo", samples_per_s=1800.0, samples_per_s_iqr=90.0, windows=5,
                    ideal="rate(1), same cores", ideal_samples_per_s=2000.0, scaling_efficiency=0.9),
        TtaRecord(model="mlp", device="cpu", row="shared_loop", target_acc=0.8, reached=True, epochs=3,
                  samples_seen=180000, train_s=12.0, eval_s=1.5, setup_s=0.5, wall_s=14.0, final_acc=0.81,
                  speedup_vs_tutorial_loop=4.0, wall_speedup_vs_tutorial_loop=3.5),
        TtaRecord(model="mlp", device="cpu", row="tutorial_loop", target_acc=0.8, reached=False, epochs=5),
    ]


def line_with(text: str, *needles: str) -> str:
    hits = [ln for ln in text.splitlines() if all(n in ln for n in needles)]
    assert len(hits) == 1, (needles, hits)
    return hits[0]


def test_summary_has_the_env_the_method_and_every_section():
    text = report.render_summary(make_env(), sample_records())
    assert text.startswith("# Benchmark on Test CPU (cpu)\n")
    text = " ".join(text.split())  # prose is wrapped under 200 characters: a phrase may span two lines
    for needle in ("perf_counter, device sync per call", "cudnn_benchmark=True", "torch.mm 256: 1.25 ms median",
                   "fp32 250 GFLOP/s", "memory 12.0 GB/s", "fp16: no fp16 matmul", "abc1234",
                   "`python -m bench.run --device cpu`", "812 s", "900 s", "samples/s = batch size / median",
                   "at least 100 calls", "at least 1,000", "python -m bench.compare"):
        assert needle in text, needle
    for heading in ("## Zoo", "## Training throughput", "### Execution variants", "## Inference latency",
                    "## ONNX parity", "## Multi-process scaling", "## Time to accuracy", "## Failed and skipped"):
        assert heading in text, heading
    assert "669,706" in line_with(text, "| mlp", "fashionmnist") and "98.7%" in line_with(text, "| lenet", "mnist")
    assert "Ideal = rate(1), same cores" in text and "90.0%" in line_with(text, "| 2 ", "gloo")


def test_ladder_shows_the_records_fields_not_recomputed_ones():
    text = report.render_summary(make_env(), sample_records())
    rung = line_with(text, "| fused_optimizer")
    assert "7.77x" in rung  # the record's value, although 1200 / 1000 would be 1.20x
    assert "1,200 ± 60.0 (5.0%)" in rung and "5 x 100 steps" in rung and "12.0%" in rung
    rows = [ln.split("|")[1].strip() for ln in text.splitlines() if ln.startswith("| ") and "steps" in ln]
    assert rows[:4] == ["tutorial_loop", "fused_optimizer", "fast", "compute"]  # TRAIN_LADDER order
    assert line_with(text, "| no_host_read", "**failed**").startswith("| no_host_read")
    assert "2.10x" in line_with(text, "| mlp", "bf16")  # variant row: speedup over fp32 compute


def test_above_bound_is_a_flag_never_a_percentage_over_100():
    text = report.render_summary(make_env(), sample_records())
    fast = line_with(text, "| fast ")
    assert "ABOVE BOUND by more than noise" in fast and "105" not in fast
    within_noise = train("fast", 10100.0, fraction_of_compute=1.01)
    assert tables.compute_fraction_cell(within_noise) == "at bound (within noise)"
    assert tables.compute_fraction_cell(train("fast", 9000.0, fraction_of_compute=0.9)) == "90.0%"


def test_percentile_cells_need_enough_calls():
    text = report.render_summary(make_env(), sample_records())
    b1 = line_with(text, "| eager ", "| 1 ")
    assert "max 0.900 (n=30)" in b1  # 30 calls: the slowest call, labelled, not a p99
    b64 = line_with(text, "| eager ", "| 64 ")
    assert "1.10" in b64 and "max 3.00 (n=500)" in b64  # p90 printed (500 >= 100), p99 is not
    assert tables.percentile_cell(None, 2000, 5.0, 99) == ""  # enough calls but no p99: blank, not a max
    assert tables.percentile_cell(1.3, 2000, 5.0, 99) == "1.30"


def test_inference_table_flags_accuracy_and_states_provenance():
    text = report.render_summary(make_env(), sample_records())
    assert "### mlp: weights random init, data synthetic fashionmnist-shaped" in text
    assert "Weights are random or the data synthetic" in text
    int8 = line_with(text, "| onnxruntime-int8")
    assert "**FLAG: accuracy moved more than 1.00 pts (-2.00 on random weights and synthetic data)**" in int8
    assert "2.50x" in int8 and int8.count("-2.00") == 1  # random weights: no delta column, the flag says it
    assert line_with(text, "| compile ", "**skipped**").startswith("| compile")
    assert "quick: not run" in line_with(text, "| mlp", "| infer")
    cells = [[c.strip() for c in ln.split("|")[1:3]] for ln in text.splitlines() if ln.startswith("| ")]
    order = [backend for backend, precision in cells if precision in ("fp32", "int8")]
    assert order == ["eager", "eager", "compile", "onnxruntime", "onnxruntime-int8"]  # BACKEND_NAMES order


def test_headers_and_env_say_which_checkpoint_and_data_folder_a_real_row_rests_on():
    model = ModelRecord(model="mlp", device="cpu", dataset="fashionmnist", weights="checkpoint",
                        checkpoint="/runs/mlp/best.pt", checkpoint_epoch=5, checkpoint_acc=0.6512, data="real",
                        data_dir="/data/FashionMNIST/raw")
    tta = TtaRecord(model="mlp", device="cpu", row="shared_loop", target_acc=0.65, reached=True, epochs=5,
                    data="real")
    records = [model, infer("eager", 1, 0.2, weights="checkpoint", data="real", accuracy=0.6512),
               train("compute", 900.0, data="real"), tta]
    env = make_env(provenance={"mlp": {"data": "real", "data_dir": "/data/FashionMNIST/raw",
                                       "weights": "checkpoint", "checkpoint": "/runs/mlp/best.pt"}})
    text = report.render_summary(env, records)
    where = "weights trained /runs/mlp/best.pt (5 epochs, its test acc 65.12%), data real fashionmnist from " \
            "/data/FashionMNIST/raw"
    assert f"### mlp: {where}" in text
    assert "Weights are random or the data synthetic" not in text  # a real, trained row carries no such warning
    assert "data real fashionmnist from /data/FashionMNIST/raw" in line_with(text, "### mlp: batch")
    assert "real fashionmnist from /data/FashionMNIST/raw" in line_with(text, "| mlp ", "| shared_loop")
    assert "mlp: data real from /data/FashionMNIST/raw, weights /runs/mlp/best.pt" in line_with(text, "| data and")
    # a row whose own data label disagrees with its model record keeps its own label, never borrows the record's
    mixed = [model, infer("eager", 1, 0.2, weights="random", data="synthetic")]
    assert "### mlp: weights random, data synthetic" in report.render_summary(make_env(), mixed)


def test_parity_tta_and_not_ok_rows():
    text = report.render_summary(make_env(), sample_records())
    assert "PASS (tolerance 0.0001)" in line_with(text, "| mlp", "dynamo")
    assert "**FAIL** (tolerance 0.0001)" in line_with(text, "| lenet", "dynamo")
    assert "4.00x" in line_with(text, "| mlp", "shared_loop") and "180,000" in text
    assert "**no**" in line_with(text, "| mlp", "| tutorial_loop", "80.0%")
    assert "is truncated" in line_with(text, "| cifar_cnn", "| model")
    assert "_nothing failed or was skipped_" in report.render_summary(make_env(), [])


def test_incomplete_run_says_so_in_title_and_index(tmp_path):
    env = make_env(complete=False, planned_rows=40, done_rows=12, quick=True)
    text = report.render_summary(env, sample_records())
    assert text.splitlines()[0] == "# INCOMPLETE (12 of 40 rows) - QUICK RUN - Benchmark on Test CPU (cpu)"
    report.write_results(str(tmp_path / "cpu"), env, sample_records(), plots=False)
    report.write_results(str(tmp_path / "cuda"), make_env(device="cuda", device_name="Test GPU"),
                         sample_records()[:3], plots=False)
    os.makedirs(tmp_path / "mps")
    (tmp_path / "mps" / "results.json").write_text("{not json")
    index = open(report.write_index(str(tmp_path))).read()
    cpu = line_with(index, "| cpu ")
    assert "**INCOMPLETE 12/40**" in cpu and "**QUICK**" in cpu and "[cpu/summary.md](cpu/summary.md)" in cpu
    assert "| 3 " in cpu and "16 / 1 / 2" in cpu  # models; ok / skipped / failed
    cuda = line_with(index, "| cuda ")
    assert "| yes " in cuda and "Test GPU" in cuda and "abc1234" in cuda
    assert "unreadable" in line_with(index, "| mps ")


def test_csv_one_row_per_record_in_declared_field_order(tmp_path):
    records = sample_records()
    report.write_results(str(tmp_path), make_env(), records, plots=False)
    with open(tmp_path / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(records)
    header = list(rows[0])
    assert header[:5] == ["phase", "model", "device", "status", "reason"]
    assert "latencies_ms" not in header and "window_rates" not in header and "n_calls" in header
    assert header.index("dataset") < header.index("row") < header.index("backend")  # ModelRecord, Train, Infer
    fast = next(r for r in rows if r["row"] == "fast")
    assert json.loads(fast["tuned"])["measured"] == {"contiguous/fused": 1000.0, "channels_last/foreach": 1400.0}
    assert fast["checkpoint"] == ""


def test_results_json_round_trips_strictly(tmp_path):
    records = sample_records() + [infer("eager", 8, float("nan"))]
    report.write_results(str(tmp_path), make_env(), records, plots=False)
    env, loaded = results_from_json(json.loads((tmp_path / "results.json").read_text()))
    assert env == make_env() and loaded[:-1] == records[:-1]
    assert loaded[-1].p50_ms is None  # NaN means not measured: stored as null
    assert loaded[-1].latencies_ms == []  # and a NaN sample is no sample: the strict loader takes finite ones only
    assert report.load_results(str(tmp_path / "results.json"))[1] == loaded


def test_a_bad_value_or_an_unwritable_folder_leaves_the_old_files(tmp_path, monkeypatch):
    report.write_results(str(tmp_path), make_env(), sample_records())
    before = {f: (tmp_path / f).read_bytes() for f in os.listdir(tmp_path)}
    with pytest.raises(ValueError, match=r"would not load back: record 0 \(infer\)\.note must be a string"):
        report.write_results(str(tmp_path), make_env(), [infer("eager", 1, 0.1, note=object())])  # nothing touched
    with pytest.raises(ValueError, match=r"latencies_ms\[0\] must be a finite number >= 0, not -1"):
        report.write_results(str(tmp_path), make_env(), [infer("eager", 1, -1.0)])  # the loader would refuse it

    def no_temp_file(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(zoo.atomic.tempfile, "mkstemp", no_temp_file)  # what a read-only folder does
    with pytest.raises(PermissionError):
        report.write_results(str(tmp_path), make_env(complete=False), sample_records()[:2])
    monkeypatch.undo()
    assert {f: (tmp_path / f).read_bytes() for f in os.listdir(tmp_path)} == before


def test_plots_are_drawn_linked_and_removed_when_stale(tmp_path):
    (tmp_path / "train_throughput.png").write_bytes(b"old")
    written = report.write_results(str(tmp_path), make_env(), sample_records())
    names = sorted(os.path.basename(p) for p in written if p.endswith(".png"))
    assert names == ["latency.png", "latency_accuracy.png", "train_ladder.png"]
    assert (tmp_path / "latency.png").read_bytes()[:4] == b"\x89PNG"
    assert not (tmp_path / "train_throughput.png").exists()  # a retired name is not left to be read as current
    summary = (tmp_path / "summary.md").read_text()
    assert "![latency_accuracy.png](latency_accuracy.png)" in summary
    no_accuracy = [infer("eager", 1, 0.2, accuracy=None)]
    report.write_results(str(tmp_path), make_env(), no_accuracy)
    assert sorted(f for f in os.listdir(tmp_path) if f.endswith(".png")) == ["latency.png"]
    assert "latency_accuracy.png" not in (tmp_path / "summary.md").read_text()
    failed_only = [not_ok(InferRecord, "mlp", "cpu", "boom", backend="eager")]
    assert plots.store_plots(str(tmp_path), plots.render_plots(failed_only)) == []
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".png") or f.endswith(".tmp")]


def test_pareto_front_keeps_only_undominated_points():
    pts = [(1.0, 90.0), (0.5, 80.0), (2.0, 85.0), (0.5, 70.0), (3.0, 95.0), (1.0, 90.0)]
    assert selection.pareto_front(pts) == [(0.5, 80.0), (1.0, 90.0), (3.0, 95.0)]
    rows = [infer("eager", 1, 0.2), infer("eager", 64, 1.0), infer("onnxruntime", 64, 0.5),
            infer("compile", 1, 0.3, accuracy=None)]
    assert selection.accuracy_batch_size(rows) == 64


def test_report_cli_rerenders_and_errors_in_one_line(tmp_path, capsys):
    report.write_results(str(tmp_path / "cpu"), make_env(), sample_records(), plots=False)
    os.remove(tmp_path / "cpu" / "summary.md")
    assert report.main([str(tmp_path / "cpu" / "results.json")]) == 0
    assert (tmp_path / "cpu" / "summary.md").exists() and (tmp_path / "README.md").exists()
    capsys.readouterr()
    (tmp_path / "old.json").write_text(json.dumps({"env": {}, "records": []}))
    (tmp_path / "bad.json").write_text("{oops")
    for path in ("missing.json", "old.json", "bad.json"):
        assert report.main([str(tmp_path / path)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    assert report.main([]) == 2 and capsys.readouterr().err.startswith("error: usage")


def test_every_plot_panel_draws_its_models_data():
    records = sample_records() + [infer("eager", 1, 2.0, model="lenet", accuracy=0.98),
                                  train("compute", 2500.0, model="lenet")]
    figs = plots.figures(records)
    assert sorted(figs) == ["latency.png", "latency_accuracy.png", "train_ladder.png"]
    for name, fig in figs.items():
        panels = [ax for ax in fig.axes if ax.get_visible()]
        assert sorted(ax.get_title().split(" ")[0] for ax in panels) == ["lenet", "mlp"], name
        assert all(ax.lines or ax.collections or ax.patches for ax in panels), name
    ladder = next(ax for ax in figs["train_ladder.png"].axes if ax.get_title() == "mlp")
    assert [t.get_text() for t in ladder.get_xticklabels()] == ["tutorial_loop", "fused_optimizer", "fast", "compute"]
    assert any(t.get_text() == "above bound" for t in ladder.texts)
    accuracy = next(ax for ax in figs["latency_accuracy.png"].axes if ax.get_title().startswith("mlp"))
    assert accuracy.get_title() == "mlp (batch 64)"  # the batch size with most accuracy rows


# -- the env table, the method text, the index and the CLI, exactly as a reader sees them -----------------------------

ENV_ROWS = """\
| setting                | value                              |
|------------------------|------------------------------------|
| device                 | Test CPU (cpu)                     |
| torch                  | 2.x                                |
| torchvision            | 0.x                                |
| onnxruntime            | 1.x                                |
| CUDA                   | 13.0                               |
| python                 | 3.11                               |
| platform               | Linux                              |
| CPU capability         | AVX2                               |
| threads                | 2 torch threads of 2 CPUs          |
| memory                 | 16.0 GB                            |
| clock                  | perf_counter, device sync per call |
| maths policy           | cudnn_benchmark=True, tf32=False   |
| calibration (1 thread) | torch.mm 256: 1.25 ms median       |
| measured peaks         | fp32 250 GFLOP/s; memory 12.0 GB/s |
| git commit             | abc1234                            |
| timestamp (UTC)        | 2030-01-01T00:00:00+00:00          |
| command                | `python -m bench.run --device cpu` |
| wall time              | 812 s                              |
| budget                 | 900 s                              |
| quick                  | no                                 |
| rows done              | 30 of 30 planned                   |
| complete               | yes                                |
| skipped precisions     | fp16: no fp16 matmul on this CPU   |
| notes                  | a.b_s 2.50 s, flag True            |"""


def test_env_table_shows_every_setting_with_its_unit():
    env = make_env(cuda="13.0", cpu_capability="AVX2", notes={"a": {"b_s": 2.5}, "flag": True, "raw": [1, 2]})
    assert report.header_lines(env) == ["# Benchmark on Test CPU (cpu)", ""]
    assert report.env_section(env) == ["## Settings", "", ENV_ROWS]
    two = make_env(skipped_precisions={"fp16": "no fp16 matmul", "int8": "no onnxruntime"},
                   notes={"first": 1.5, "nested": {"second": 2.5}})
    table = report.env_section(two)[2]
    assert "| fp16: no fp16 matmul; int8: no onnxruntime " in table
    assert "| notes                  | first 1.50, nested.second 2.50 " in table  # a nested block keeps what came before


def test_an_incomplete_quick_run_says_so_before_any_number():
    env = make_env(complete=False, quick=True, threads=None, cpu_count=None, planned_rows=None, done_rows=None,
                   command=None, device_name="", device="")
    lines = report.header_lines(env) + report.env_section(env)[2:]
    assert lines[:6] == [
        "# INCOMPLETE (? of ? rows) - QUICK RUN - Benchmark on ? (?)", "",
        "> **INCOMPLETE (? of ? rows): the run stopped before its plan was done (interrupted, out of budget, or "
        "crashed). Rows missing below were never measured; they are not failures.**", "",
        "> **QUICK RUN: short timing windows and reduced batch sizes; these numbers check the harness, they are not "
        "measurements to quote.**", ""]
    table = lines[6]
    assert "| threads                | ? torch threads of ? CPUs " in table and "| quick                  | YES " in table
    assert "| complete               | **INCOMPLETE (? of ? rows)** " in table
    assert "rows done" not in table and "command" not in table  # unknown settings are left out, not blank
    assert report.incomplete_label(make_env(complete=False, planned_rows=12345, done_rows=1234)) == \
        "INCOMPLETE (1,234 of 12,345 rows)"


def test_method_text_states_the_definitions_and_the_thresholds():
    lines = report.method_section(make_env(clock=None))
    assert lines[:2] == ["## How these numbers were measured", ""]
    assert lines[2] == f"- **Throughput**: {THROUGHPUT_DEFINITION}."
    assert lines[3] == "- **Clock**: not recorded; threads and maths policy as in the table above."
    assert lines[4] == (
        "- **Percentiles**: p50 is the median call. p90 is printed only when at least 100 calls were timed, p99 only "
        "with at least 1,000; with fewer calls the cell shows `max X (n=N)`, the slowest of the N calls (not a "
        "percentile), or stays blank.")
    assert lines[5] == (
        "- **Spread**: `X ± Y (Z%)` is the median X and the interquartile range Y (75th minus 25th percentile) of the "
        "raw samples (per-call latencies for inference, per-window rates for training); Z is Y as a percentage of X. "
        "Two figures closer than their IQRs are not known to differ.")
    assert lines[6] == (
        "- **% of compute**: a training row's median over its compute bound's median (same precision and variant); "
        "a row above the bound by more than the noise is flagged, never shown above 100%. **% of peak**: achieved "
        "FLOP/s (counted FLOPs x samples/s) over the peak above (the physical peak where the hardware gives one; "
        "above 100% the kernels do fewer FLOPs than counted).")
    assert lines[7] == (
        "- **Comparing runs**: `python -m bench.compare A/results.json B/results.json` matches rows by key and calls "
        "a change real only when it is larger than the rows' spread.")
    assert lines[8] == ("- **Sample rules**: a figure resting on fewer than 10 calls or 5 windows reads `X (low n: N)`, "
                        "without a spread: too few samples for one.")
    assert len(lines) == 9
    assert report.method_section(make_env())[3].startswith("- **Clock**: perf_counter, device sync per call; ")


def test_summary_links_the_plots_it_was_given():
    text = report.render_summary(make_env(), [], ["latency.png", "train_ladder.png"])
    assert text.endswith("\n## Plots\n\n![latency.png](latency.png)\n![train_ladder.png](train_ladder.png)\n")
    assert "## Plots" not in report.render_summary(make_env(), [])


def test_csv_columns_are_the_present_types_fields_without_raw_samples():
    assert report.csv_columns([ScaleRecord()]) == [
        "phase", "model", "device", "status", "reason", "processes", "batch_size", "batch_size_global",
        "dist_backend", "threads_per_process", "data", "quick", "samples_per_s", "samples_per_s_iqr", "windows",
        "steps_per_window", "ideal", "ideal_samples_per_s", "scaling_efficiency"]
    text = report.csv_text({"records": [ScaleRecord(model="m", processes=2).to_dict()]}, [ScaleRecord()])
    assert text.splitlines()[1] == "scale,m,,ok,,2,,,,,,False,,,,,,,"  # None is an empty cell
    assert "\r" not in text  # plain newlines, as every other file the report writes
    assert report.csv_columns([]) == ["phase"]


def test_index_rows_exactly(tmp_path):
    loaded = {"load_avg_at_start": [9.1, 5.0, 3.0], "load_avg_at_end": [3.0, 4.0, 3.0]}
    report.write_results(str(tmp_path / "cpu"), make_env(notes=loaded), sample_records()[:4], plots=False)
    report.write_results(str(tmp_path / "cuda"), make_env(device="", device_name="G", git_commit=None, complete=False,
                                                          planned_rows=None, done_rows=3), [], plots=False)
    report.write_results(str(tmp_path / "mps"), make_env(device="mps", quick=True, complete=False, planned_rows=9,
                                                         done_rows=None), [], plots=False)
    os.makedirs(tmp_path / "xpu")
    (tmp_path / "xpu" / "results.json").write_text("[]")
    lines = open(report.write_index(str(tmp_path))).read().splitlines()
    assert lines[:5] == [
        "# Benchmark results", "",
        "One folder per device; each holds results.json (every record), results.csv, summary.md and plots.",
        "QUICK runs used short timing windows and reduced batch sizes: use them to check the harness, not to quote "
        "numbers. INCOMPLETE runs stopped before their plan was done (interrupted, crashed or killed): rows are "
        "missing; they sit in DEVICE.incomplete-TIME/ folders beside the device's last complete run.", ""]
    assert [c.strip() for c in lines[5].split("|")[1:-1]] == [
        "device", "device name", "timestamp (UTC)", "git commit", "quick", "complete", "models",
        "ok / skipped / failed", "conditions", "summary"]
    cells = [[c.strip() for c in line.split("|")[1:-1]] for line in lines[7:11]]
    assert lines[11] == "" and lines[12].startswith("*conditions*: the 1-minute load average")
    assert lines[13:15] == ["", "## At a glance: cpu (Test CPU, cpu, 2030-01-01)"]  # then the matrix: test_matrix.py
    assert cells == [
        ["cpu", "Test CPU", "2030-01-01T00:00:00+00:00", "abc1234", "no", "yes", "3", "3 / 0 / 1",
         "**LOADED** load 9.10/3.00 (1-min, start/end) on 2 cores", "[cpu/summary.md](cpu/summary.md)"],
        ["cuda", "G", "2030-01-01T00:00:00+00:00", "", "no", "**INCOMPLETE 3/?**", "0", "0 / 0 / 0",
         "load not recorded", "[cuda/summary.md](cuda/summary.md)"],  # no device recorded: the folder names it
        ["mps", "Test CPU", "2030-01-01T00:00:00+00:00", "abc1234", "**QUICK**", "**INCOMPLETE ?/9**", "0",
         "0 / 0 / 0", "load not recorded", "[mps/summary.md](mps/summary.md)"],
        ["xpu", "unreadable: " + cells[3][1].split(": ", 1)[1], "", "", "", "", "", "", "", "[xpu/summary.md](xpu/summary.md)"]]
    assert cells[3][1].startswith("unreadable: ") and "not a bench results file" in cells[3][1]


def test_an_empty_index_says_how_to_fill_it(tmp_path):
    path = report.write_index(str(tmp_path))
    assert path == str(tmp_path / "README.md")
    assert open(path).read().endswith("last complete run.\n\n_No results yet: run `python -m bench.run`._\n")


def test_write_results_returns_the_files_it_wrote_in_order(tmp_path):
    written = report.write_results(str(tmp_path), make_env(), sample_records(), plots=False)
    assert written == [str(tmp_path / name) for name in ("results.json", "results.csv", "summary.md")]
    assert "## Plots" not in (tmp_path / "summary.md").read_text()  # no plots drawn, none linked
    with_plots = report.write_results(str(tmp_path), make_env(), sample_records())
    assert with_plots[:3] == written and sorted(os.path.basename(p) for p in with_plots[3:]) == \
        ["latency.png", "latency_accuracy.png", "train_ladder.png"]
    assert (tmp_path / "results.json").read_text().startswith('{\n "schema_version": ')


def test_report_cli_help_folders_and_unwritable_output(tmp_path, capsys, monkeypatch):
    for flag in ("--help", "-h"):
        assert report.main([flag]) == 0
        out = capsys.readouterr()
        assert out.out == "usage: python -m bench.report OUT/<device>/results.json [...]\n" and out.err == ""
    assert report.main([]) == 2
    assert capsys.readouterr().err == "error: usage: python -m bench.report OUT/<device>/results.json [...]\n"
    report.write_results(str(tmp_path / "cpu"), make_env(), sample_records()[:2], plots=False)
    assert report.main([str(tmp_path / "cpu")]) == 0  # a folder means its results.json
    assert capsys.readouterr().out == str(tmp_path / "cpu" / "summary.md") + "\n"
    monkeypatch.setattr(sys, "argv", ["bench.report", str(tmp_path / "cpu" / "results.json")])
    assert report.main() == 0  # no argv: the command line's
    capsys.readouterr()

    def read_only(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(zoo.atomic.tempfile, "mkstemp", read_only)
    assert report.main([str(tmp_path / "cpu")]) == 1
    assert capsys.readouterr().err == f"error: cannot write results under {tmp_path / 'cpu'}: Permission denied\n"


# -- bench.report.tables: the cells and the whole summary -------------------------------------------------------------------

GOLDEN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "golden", "summary.md")


def test_the_whole_summary_matches_the_reviewed_golden_file():
    """Every table of summary.md for the sample records, byte for byte. After an intended change to the layout,
    regenerate tests/golden/summary.md with the same call and review its diff like code."""
    text = report.render_summary(make_env(), sample_records(), ["latency.png"])
    with open(GOLDEN, encoding="utf-8") as f:
        assert text == f.read()


@pytest.mark.parametrize("value, text", [
    (1234.5, "1,234"), (100, "100"), (99.94, "99.9"), (10, "10.0"), (9.994, "9.99"), (1, "1.00"), (0.5, "0.500"),
    (0.001234, "0.00123"), (0, "0.00"), (-250.0, "-250"), (None, ""), (float("nan"), ""), (True, ""), ("3", ""),
])
def test_num_keeps_about_three_significant_figures(value, text):
    assert tables.num(value) == text


def test_cells_blank_what_was_not_measured():
    assert tables.num(2.5, " s") == tables.seconds(2.5) == "2.50 s" and tables.seconds(None) == ""
    assert (tables.count(1234567), tables.count(None)) == ("1,234,567", "")
    assert (tables.pct(0.1234), tables.pct(0.1234, 2), tables.pct(None)) == ("12.3%", "12.34%", "")
    assert (tables.sci(0.00012345), tables.sci(float("inf"))) == ("1.23e-04", "")
    assert (tables.ratio(2), tables.ratio(None)) == ("2.00x", "")
    assert (tables.yes_no(True), tables.yes_no(False), tables.yes_no(None)) == ("yes", "no", "")


def test_spread_cell():
    assert tables.with_iqr(200.0, 10.0) == "200 ± 10.0 (5.0%)"
    assert tables.with_iqr(200.0, None) == "200"  # no spread recorded: the median alone
    assert tables.with_iqr(0.0, 1.0) == "0.00 ± 1.00"  # no percentage of a zero median
    assert tables.with_iqr(None, 1.0) == ""


def test_percentile_cell_shows_the_max_only_below_the_minimum_calls():
    assert tables.percentile_cell(1.5, 2000, 3.0, 99) == "1.50"
    assert tables.percentile_cell(None, 999, 3.0, 99) == "max 3.00 (n=999)"
    assert tables.percentile_cell(None, 1000, 3.0, 99) == ""  # enough calls yet no p99: nothing to stand in
    assert tables.percentile_cell(None, 99, 3.0, 90) == "max 3.00 (n=99)"
    assert tables.percentile_cell(None, 100, 3.0, 90) == ""
    assert tables.percentile_cell(None, None, 3.0, 90) == tables.percentile_cell(None, 5, None, 90) == ""


def test_compute_fraction_cell():
    assert tables.compute_fraction_cell(train("fast", 1.0, fraction_of_compute=1.0)) == "at bound (within noise)"
    assert tables.compute_fraction_cell(train("fast", 1.0, fraction_of_compute=0.999)) == "99.9%"
    assert tables.compute_fraction_cell(train("fast", 1.0)) == ""
    assert tables.compute_fraction_cell(train("compute", 1.0, fraction_of_compute=0.5)) == "(the bound)"


def test_table_and_inline_cells_cannot_break_the_markdown():
    text = tables.table([["a|b", "line\nnext", None]], ["x", "y", "z"])
    assert text.splitlines()[2] == "| a\\|b | line next |     |"
    assert tables.inline({"a": 1, "b": "x", "c": None, "d": {"e": [1, 2]}, "f": True}) == \
        'a=1, b=x, c=None, d={"e": [1, 2]}, f=True'
    assert tables.inline(None) == tables.inline({}) == ""


def test_sections_of_a_run_without_such_records_are_empty():
    for section in (tables.zoo_section, tables.train_section, infer_tables.infer_section, tables.parity_section,
                    tables.scale_section, tables.tta_section):
        assert section([]) == [], section
    assert tables.not_ok_section([]) == ["## Failed and skipped", "", "_nothing failed or was skipped_"]


def edge_records():
    """The rarer cells: a quick ladder without threads, a failed variant, backend notes on real data, an exporter
    fallback, an unjudged parity, failed scaling and time-to-accuracy rows, a model without a stated ideal."""
    return [
        train("fast", 800.0, model="lenet", quick=True, threads=None, data=None, steps_per_window=None,
              samples_per_s_iqr=None, batch_size=32),
        not_ok(TrainRecord, "lenet", "cpu", "no fused kernel", row="fast", batch_size=32, compile="max-autotune"),
        infer("onnxruntime", 1, 0.3, model="lenet", weights="checkpoint", data="real", provider="CPUExecutionProvider",
              note="graph optimizations all", accuracy_ok=None, argmax_agreement=0.9999, agreement_samples=None),
        infer("eager", 1, 0.5, model="lenet", weights="checkpoint", data="real", note="the reference"),
        ParityRecord(model="lenet", device="cpu", opset=17, exporter="torchscript", checker="full",
                     exporter_fallback_reason="dynamo failed", parity_ok=None, max_abs_diff_b1_b3=1e-7,
                     dynamic_batch_ok=False, onnx_mb=0.25, export_s=1.5, data="real"),
        not_ok(ScaleRecord, "lenet", "cpu", RuntimeError("gloo hung"), processes=2, batch_size=32),
        ScaleRecord(model="lenet", device="cpu", processes=1, batch_size=32, samples_per_s=900.0, windows=3,
                    steps_per_window=10),
        not_ok(TtaRecord, "lenet", "cpu", "budget", status="skipped", row="shared_loop", target_acc=0.99),
        # random weights on real data, and rows of mixed data: both still warned about and listed
        infer("eager", 1, 0.5, model="alexnet", weights="random", data="real"),
        infer("eager", 8, 0.9, model="alexnet", weights="random", data="synthetic"),
        ParityRecord(model="alexnet", device="cpu", agreement_samples=64, parity_ok=True),
        ScaleRecord(model="lenet", device="cpu", processes=2, batch_size=16, samples_per_s=700.0),
        ScaleRecord(model="alexnet", device="cpu", processes=2, batch_size=8, samples_per_s=50.0, ideal="N x rate(1)"),
        train("fast_untuned", 700.0, model="lenet", batch_size=64, tuned={"threads": 2}),
        train("fast", 750.0, model="lenet", batch_size=64,
              tuned={"optimizer_impl": "fused", "gain": 1.0, "measured": {},
                     "reason": "a run of ~900 steps is too short to pay for a probe"}),
        infer("eager", 1, 0.4, model="mlp", weights="random", data="real"),
        infer("eager", 1, 0.6, model="cifar_cnn", weights="checkpoint", data="synthetic"),
    ]


def test_the_rarer_cells_match_the_reviewed_golden_file():
    text = report.render_summary(make_env(), edge_records())
    with open(GOLDEN.replace("summary.md", "summary_edge_cases.md"), encoding="utf-8") as f:
        assert text == f.read()


def test_a_row_on_fewer_calls_or_windows_than_the_sample_rules_is_marked_low_n():
    from bench.report import tables

    assert tables.spread_cell(12.5, 3.0, 3, tables.LOW_N_CALLS) == "12.5 (low n: 3)"  # no spread shown
    assert tables.spread_cell(12.5, 3.0, 10, tables.LOW_N_CALLS) == tables.with_iqr(12.5, 3.0)
    assert tables.spread_cell(None, None, 2, tables.LOW_N_WINDOWS) == ""


def test_device_time_columns_appear_only_in_a_run_that_has_them():
    """CUDA rows carry device time (CUDA events on the backend's stream) and a back-to-back rate: summary.md shows
    them after samples/s, blank for a row without (ORT-CUDA on its own stream, a failed row); a CPU run's tables do
    not grow empty columns."""
    cpu = report.render_summary(make_env(), sample_records())
    assert "device p50" not in cpu and "back-to-back" not in cpu
    rows = [infer("eager", 8, 0.5, device="cuda", device_p50_ms=0.31, device_iqr_ms=0.02, device_n_calls=100,
                  back_to_back_samples_per_s=25000.0),
            infer("cuda_graph", 8, 0.2, device="cuda", device_p50_ms=0.05, device_iqr_ms=0.01, device_n_calls=3,
                  back_to_back_samples_per_s=160000.0),
            infer("onnxruntime-cuda", 8, 0.4, device="cuda"),
            not_ok(InferRecord, "mlp", "cuda", "no engine", backend="tensorrt", batch_size=8)]
    lines = infer_tables.infer_section(rows)
    text = "\n".join(lines)
    header = line_with(text, "| backend ")
    cols = [c.strip() for c in header.strip("|").split("|")]
    at = cols.index("samples/s")
    assert cols[at + 1:at + 4] == infer_tables.DEVICE_HEADERS and cols[at + 4] == "vs eager [95% interval]"
    assert "CUDA events on the backend's stream, no host sync between calls" in cols[at + 1]

    def cells(needle: str) -> list[str]:
        got = [c.strip() for c in line_with(text, needle).strip("|").split("|")]
        assert len(got) == len(cols)  # every row, failed or without device time, keeps the columns in place
        return got

    eager = cells("| eager ")
    assert eager[at + 1:at + 4] == ["0.310 ± 0.0200 (6.5%)", "100", "25,000"]
    assert cells("| cuda_graph ")[at + 1:at + 4] == ["0.0500 (low n: 3)", "3", "160,000"]  # the sample rule holds
    assert cells("| onnxruntime-cuda ")[at + 1:at + 4] == ["", "", ""]
    assert cells("| tensorrt ")[-1] == "**failed**"
    assert "no host sync between calls" in lines[2] and "one sync at the end" in lines[2]
