"""The vendor cross-check: benchmark_app's console output read from saved text (tests/golden), the verdict and
explanation of a harness / vendor comparison on fixed figures, the option records on inference rows and the
harness's floor in the env block. Nothing here is timed against the clock."""
from __future__ import annotations

import json
import os

import pytest
import torch

from bench.context import BenchContext
from bench.crosscheck import benchmark_app
from bench.crosscheck.benchmark_app import BenchmarkAppReport, config_differences, normalise, parse_report
from bench.crosscheck.vendor import VENDOR_LIMIT, VendorRow
from bench.measure import timing
from bench.records import InferRecord, RunEnv
from bench.report import files, infer_tables, tables
from bench.report.files import results_payload as results_to_json
from bench.report.schema import env_from_dict, record_from_dict, results_from_json
from bench.runner.env import harness_floor

GOLDEN = os.path.join(os.path.dirname(__file__), "golden")


def golden(name: str) -> str:
    with open(os.path.join(GOLDEN, name)) as f:
        return f.read()


# ---- benchmark_app's output ----------------------------------------------------------------------------------------

def test_parse_report_in_milliseconds():
    report = parse_report(golden("benchmark_app_lenet_b1_ms.txt"))
    assert (report.median_ms, report.average_ms, report.min_ms, report.max_ms) == (2.57, 2.84, 0.18, 13.94)
    assert report.iterations == 648 and report.duration_ms == 2002.09 and report.throughput_fps == 323.66
    assert report.api == "sync" and report.version == "2026.4.1-22982-e213a147257-releases/2026/4"


def test_parse_report_converts_microseconds_and_reads_the_compiled_properties():
    report = parse_report(golden("benchmark_app_lenet_b1_us.txt"))
    assert report.median_ms == pytest.approx(0.19989) and report.max_ms == pytest.approx(28.35435)
    assert report.iterations == 12598
    props = report.properties
    assert props["PERFORMANCE_HINT"] == "LATENCY" and props["NUM_STREAMS"] == 1
    assert props["INFERENCE_NUM_THREADS"] == 2 and props["INFERENCE_PRECISION_HINT"] == "f32"
    assert props["ENABLE_CPU_PINNING"] is True
    assert "NETWORK_NAME" in props and "Model" not in props  # step 8's "Model:" header is not a property


def test_parse_report_without_latency_is_an_error_naming_benchmark_apps_error():
    text = "[Step 1/11] Parsing and validating input arguments\n[ ERROR ] Path to the model m.xml doesn't exist.\n"
    with pytest.raises(ValueError, match="no latency median.*doesn't exist"):
        parse_report(text)
    cut = golden("benchmark_app_lenet_b1_ms.txt").replace("[ INFO ]    Max:", "[ INFO ]    Mx:")
    with pytest.raises(ValueError, match="no latency max"):
        parse_report(cut)


def test_normalise_matches_the_harness_read_back():
    assert normalise("<Type: 'float32'>") == "f32" and normalise("<Type: 'bfloat16'>") == "bf16"
    assert normalise("True") is True and normalise("False") is False and normalise("12") == 12
    assert normalise(" LATENCY ") == "LATENCY"


def test_config_differences_names_each_property_that_differs():
    report = parse_report(golden("benchmark_app_lenet_b1_us.txt"))
    row = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": 2,
           "NUM_STREAMS": 1, "ENABLE_CPU_PINNING": True}
    assert config_differences(row, report) == {}
    assert config_differences({**row, "INFERENCE_NUM_THREADS": 1}, report) == {"INFERENCE_NUM_THREADS": (1, 2)}
    missing = dict(row)
    del missing["NUM_STREAMS"]
    assert config_differences(missing, report) == {"NUM_STREAMS": (None, 1)}


def test_command_passes_the_rows_model_input_config_and_latency_hint(tmp_path, monkeypatch):
    monkeypatch.setattr(benchmark_app, "executable", lambda: "benchmark_app")
    cmd = benchmark_app.command("m.xml", "x.npy", "c.json", 2.6)
    assert cmd == ["benchmark_app", "-m", "m.xml", "-d", "CPU", "-hint", "latency", "-ip", "f32", "-i", "x.npy",
                   "-load_config", "c.json", "-t", "3"]
    path = tmp_path / "c.json"
    benchmark_app.write_config(str(path), {"INFERENCE_NUM_THREADS": "2"})
    assert json.loads(path.read_text()) == {"CPU": {"INFERENCE_NUM_THREADS": "2"}}


# ---- the verdict on fixed figures ----------------------------------------------------------------------------------

def row(harness, vendor, runtime=(), python=(), floor_us=2.0, **kw) -> VendorRow:
    r = VendorRow("lenet", "openvino", 1, "benchmark_app", floor_us=floor_us, **kw)
    r.harness_p50_ms, r.vendor_median_ms = list(harness), list(vendor)
    r.harness_iqr_ms, r.harness_calls = [0.01] * len(harness), [1000] * len(harness)
    r.vendor_spread = ["min 0.1, max 0.5, n=100"] * len(vendor)
    r.runtime_ms, r.python_ms = list(runtime), list(python)
    return r


def test_ratio_divides_the_medians_of_the_rounds():
    r = row([0.30, 0.20, 0.25], [0.10, 0.20, 0.15])
    assert r.harness_ms() == 0.25 and r.vendor_ms() == 0.15 and r.ratio() == pytest.approx(0.25 / 0.15)


def test_a_ratio_within_the_limit_passes():
    r = row([0.12], [0.10])
    assert r.ratio() <= VENDOR_LIMIT and r.passes() and r.explanation().startswith("within")


def test_a_slower_vendor_side_is_said_not_called_within():
    r = row([0.10], [0.20])
    assert r.passes() and "vendor side is 2.00x slower" in r.explanation()


def test_a_gap_in_the_python_call_is_explained_by_the_runtimes_own_latency():
    r = row([0.30], [0.15], runtime=[0.16], python=[0.14])
    assert r.ratio() > VENDOR_LIMIT and r.passes()
    text = r.explanation()
    assert "NOT EXPLAINED" not in text and "160.0 us" in text and "140.0 us" in text and "floor 2.0 us" in text


def test_a_split_that_does_not_reproduce_the_row_is_not_explained():
    r = row([0.60], [0.15], runtime=[0.16], python=[0.04])  # 0.60 ms row, 0.20 ms right after: load changed
    assert r.drift() == pytest.approx(3.0) and not r.passes()
    assert r.explanation().startswith("NOT EXPLAINED") and "load changed" in r.explanation()


def test_a_slower_runtime_in_the_harness_is_not_explained():
    r = row([0.60], [0.15], runtime=[0.40], python=[0.20], options={"shape": "dynamic batch"})
    assert not r.passes() and r.explanation().startswith("NOT EXPLAINED")


def test_without_a_runtime_timer_the_floor_is_what_may_explain_the_gap():
    assert row([0.130], [0.100], floor_us=10.0).passes()  # (0.130 - 0.010) / 0.100 = 1.2
    assert not row([0.130], [0.100], floor_us=1.0).passes()


def test_a_configuration_that_differs_never_passes():
    r = row([0.10], [0.10], config_diff={"NUM_STREAMS": (1, 2)})
    assert not r.passes() and "NOT COMPARABLE" in r.explanation()
    assert any("NOT COMPARABLE" in line for line in r.details())


# ---- option records and the harness's floor -------------------------------------------------------------------------

def test_infer_record_options_round_trip_and_older_files_still_load():
    rec = InferRecord(model="lenet", device="cpu", backend="openvino", batch_size=1,
                      options={"shape": "static", "NUM_STREAMS": 1})
    env = RunEnv(device="cpu", harness_floor={"p50_us": 1.5, "iqr_us": 0.1, "n_calls": 10, "how": "noop"})
    env2, records = results_from_json(json.loads(json.dumps(results_to_json(env, [rec]))))
    assert records[0].options == {"shape": "static", "NUM_STREAMS": 1} and env2.harness_floor["p50_us"] == 1.5
    old = {k: v for k, v in rec.to_dict().items() if k != "options"}
    assert record_from_dict(old).options is None  # written before options were recorded
    assert env_from_dict({"device": "cpu"}).harness_floor == {}


def test_options_and_floor_are_in_the_summary():
    rec = InferRecord(model="lenet", device="cpu", backend="openvino", batch_size=1, p50_ms=0.2, n_calls=10,
                      options={"shape": "static", "NUM_STREAMS": 1})
    assert "shape=static, NUM_STREAMS=1" in "\n".join(infer_tables.infer_section([rec]))
    env = RunEnv(device="cpu", harness_floor={"p50_us": 1.5, "iqr_us": 0.25, "n_calls": 1000, "how": "noop"})
    text = "\n".join(files.env_section(env))
    assert "harness floor per call" in text and "p50 1.50 us ± 0.250 (1,000 calls; noop)" in text
    assert "harness floor" not in "\n".join(files.env_section(RunEnv(device="cpu")))
    assert tables.floor_cell({}) == ""


def test_harness_floor_is_the_noop_backend_timed_as_a_batch1_row(monkeypatch):
    ticks = iter(range(10**6))
    monkeypatch.setattr(timing, "clock", lambda: next(ticks) * 1e-6)  # every clock read 1 us later
    ctx = BenchContext(device=torch.device("cpu"), quick=True)
    floor = harness_floor(ctx)
    assert floor["n_calls"] >= timing.QUICK["min_calls"]
    assert floor["p50_us"] == pytest.approx(1.0) and floor["iqr_us"] == pytest.approx(0.0)
    assert "noop" in floor["how"]


def test_report_dataclass_defaults_keep_optional_facts_empty():
    report = BenchmarkAppReport(median_ms=1.0, average_ms=1.0, min_ms=1.0, max_ms=1.0)
    assert report.properties == {} and report.api is None
