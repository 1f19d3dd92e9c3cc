"""Reading and writing results.json: bench.report.files.results_payload (the one writer's JSON) and
bench.report.load / bench.report.schema (the one strict reader). Broken files of every class end in one ``error:
FILE: ...`` line and exit 2 for compare, matrix, history and the report; random and mutated files never raise
anything but that one ValueError (hypothesis)."""
from __future__ import annotations

import copy
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.analysis import compare, history, matrix
from bench.records import (
    SCHEMA_VERSION,
    InferRecord,
    ModelRecord,
    RunEnv,
    ScaleRecord,
    TrainRecord,
    TtaRecord,
)
from bench.report import files as report
from bench.report.glance import glance_lines
from bench.report.load import load_results, parse_results
from bench.report.schema import MAX_DEPTH, record_from_dict, results_from_json

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def good_payload() -> dict:
    env = RunEnv(device="cpu", device_name="Test CPU", timestamp="2030-01-01T00:00:00+00:00", threads=2, complete=True,
                 calibration={"probes": {"mm": {"samples_ms": [0.3, 0.31, 0.29], "median_ms": 0.3}}})
    recs = [ModelRecord(model="mlp", device="cpu", params_total=10),
            TrainRecord(model="mlp", device="cpu", row="fast", batch_size=64, samples_per_s=1000.0,
                        window_rates=[990.0, 1000.0, 1010.0], windows=3),
            InferRecord(model="mlp", device="cpu", backend="eager", batch_size=1, latencies_ms=[0.1, 0.2, 0.15],
                        p50_ms=0.15, n_calls=3, accuracy=0.5, accuracy_delta_pts=-0.2, accuracy_ok=True),
            ScaleRecord(model="mlp", device="cpu", processes=2, batch_size=8, window_rates=[5.0, 6.0]),
            TtaRecord(model="mlp", device="cpu", row="shared_loop", target_acc=0.8, train_s=3.0)]
    return report.results_payload(env, recs)


# -- the writer's JSON and the round trip -----------------------------------------------------------------------------

def test_the_payload_is_strict_json_and_round_trips():
    env = RunEnv(device="cpu", timestamp="2030-01-01T00:00:00+00:00", peaks={"fp32": np.float64(2.5)})
    recs = [InferRecord(model="mlp", device="cpu", backend="eager", batch_size=1, p50_ms=np.float32(0.5),
                        latencies_ms=[0.5, float("nan")], p99_ms=float("inf")),
            TrainRecord(model="mlp", device="cpu", row="fast", window_rates=(1.0, 2.0), tuned={3: "x"})]
    data = report.results_payload(env, recs)
    assert data["schema_version"] == SCHEMA_VERSION and list(data) == ["schema_version", "env", "records"]
    text = json.dumps(data, allow_nan=False)  # NaN/inf became null or left a raw-sample list; numpy became Python
    row = data["records"][0]
    assert row["p99_ms"] is None and row["latencies_ms"] == [0.5] and type(row["p50_ms"]) is float
    assert data["env"]["peaks"] == {"fp32": 2.5} and type(data["env"]["peaks"]["fp32"]) is float
    assert data["records"][1]["window_rates"] == [1.0, 2.0] and data["records"][1]["tuned"] == {"3": "x"}
    env2, recs2 = parse_results(text, "x.json")
    assert env2 == RunEnv(device="cpu", timestamp="2030-01-01T00:00:00+00:00", peaks={"fp32": 2.5})
    assert [r.key() for r in recs2] == [r.key() for r in recs] and recs2[0].p50_ms == 0.5
    notes = report.results_payload(RunEnv(notes={"n": np.int64(3), "arr": [np.float32(1.5)]}), [])["env"]["notes"]
    assert notes == {"n": 3, "arr": [1.5]} and type(notes["n"]) is int


def test_every_committed_file_and_the_good_payload_load():
    env, recs = results_from_json(good_payload())
    assert env.threads == 2 and [r.phase for r in recs] == ["model", "train", "infer", "scale", "tta"]
    assert recs[2].accuracy_delta_pts == -0.2  # a signed field may be negative
    assert results_from_json({"schema_version": SCHEMA_VERSION, "env": None, "records": []}) == (RunEnv(), [])


# -- one broken file per class: the one-line reason ---------------------------------------------------------------------

def mutate(path: list, value) -> dict:
    data = good_payload()
    target = data
    for step in path[:-1]:
        target = target[step]
    if value is KeyError:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return data


def nested(depth: int):
    value = 1
    for _ in range(depth):
        value = [value]
    return value


BROKEN = [
    (mutate(["records", 2, "latencies_ms"], "abc"), r"record 2 \(infer\)\.latencies_ms must be a list of numbers, "
                                                    r"not 'abc'"),
    (mutate(["records", 2, "latencies_ms"], [0.1, -0.2]), r"latencies_ms\[1\] must be a finite number >= 0, not -0.2"),
    (mutate(["records", 2, "latencies_ms"], [0.1, True]), r"latencies_ms\[1\] must be a finite number >= 0, not True"),
    (mutate(["records", 2, "model"], KeyError), r"record 2 \(infer\)\.model must be a model name"),
    (mutate(["records", 2, "model"], ""), r"record 2 \(infer\)\.model must be a model name"),
    (mutate(["records", 2, "backend"], None), r"record 2 \(infer\) has no backend"),
    (mutate(["records", 2, "backend"], "tvm"), r"record 2 \(infer\)\.backend must be one of eager, compile"),
    (mutate(["records", 2, "precision"], "fp8"), r"\.precision must be one of fp32, bf16, fp16, int8, not 'fp8'"),
    (mutate(["records", 1, "row"], "fastest"), r"record 1 \(train\)\.row must be one of tutorial_loop"),
    (mutate(["records", 2, "n_calls"], -1), r"\.n_calls must be a number >= 0, not -1"),
    (mutate(["records", 2, "n_calls"], 2.5), r"\.n_calls must be an integer, not 2.5"),
    (mutate(["records", 2, "accuracy"], 1.5), r"\.accuracy must be a fraction in \[0, 1\], not 1.5"),
    (mutate(["records", 2, "status"], "done"), r"\.status must be one of ok, skipped, failed, not 'done'"),
    (mutate(["records", 2, "accuracy_ok"], "yes"), r"\.accuracy_ok must be true or false, not 'yes'"),
    (mutate(["records", 2, "loader"], "fast"), r"record 2 \(infer\) has unknown field\(s\): loader"),
    (mutate(["records", 2, "phase"], "tune"), r"record 2\.phase must be one of model, train, infer"),
    (mutate(["records", 1], "row"), r"record 1 must be an object, not 'row'"),
    (mutate(["env", "threads"], "2"), r"env\.threads must be an integer, not '2'"),
    (mutate(["env", "gpu"], "x"), r"env has unknown field\(s\): gpu"),
    (mutate(["env", "calibration", "probes", "mm", "samples_ms"], ["fast"]),
     r"env\.calibration\.probes\.mm\.samples_ms\[0\] must be a finite number >= 0"),
    (mutate(["env", "skipped_precisions"], {"fp16": 3}), r"env\.skipped_precisions must be an object of strings"),
    (mutate(["env", "notes"], {"a": nested(MAX_DEPTH + 1)}), rf"nested deeper than {MAX_DEPTH} levels"),
    (mutate(["schema_version"], 1), r"results schema version 1; this bench reads version 2 \(re-run"),
    (mutate(["schema_version"], KeyError), r"results schema version None"),
    (mutate(["extra"], 1), r"unknown top-level field\(s\): extra"),
    ([], r'not a bench results file \(expected \{"schema_version"'),
]


@pytest.mark.parametrize("data, match", BROKEN, ids=[m[:40] for _, m in BROKEN])
def test_each_broken_value_is_one_line_naming_the_field(data, match):
    with pytest.raises(ValueError, match=r"^x\.json: .*" + match) as info:
        parse_results(json.dumps(data), "x.json")
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("text, match", [
    ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
    ('{"schema_version": NaN}', "NaN is not a JSON number"),
    ('{"schema_version": 1e999}', "overflows a float"),
    ('{"records": [], "records": []}', "duplicate key 'records'"),
    ('{"schema_version": ' + "9" * 5000 + "}", "not strict JSON"),
    ("{not json", r"not JSON \(Expecting property name"),
    ("", "not JSON"),
])
def test_text_that_is_not_strict_json_is_one_line(text, match):
    with pytest.raises(ValueError, match=r"^x\.json: .*" + match) as info:
        parse_results(text, "x.json")
    assert "\n" not in str(info.value)


def test_files_that_cannot_be_read_are_one_line(tmp_path):
    with pytest.raises(ValueError, match=r"no such file$"):
        load_results(str(tmp_path / "none.json"))
    with pytest.raises(ValueError, match=r"is a directory"):
        load_results(str(tmp_path))
    (tmp_path / "bin.json").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ValueError, match=r"cannot read: UnicodeDecodeError"):
        load_results(str(tmp_path / "bin.json"))


def test_record_from_dict_is_the_same_check_for_one_row():
    rec = InferRecord(model="mlp", device="cpu", backend="eager", batch_size=1, latencies_ms=[1.0])
    assert record_from_dict(rec.to_dict()) == rec
    with pytest.raises(ValueError, match=r"^record \(infer\) has no backend$"):
        record_from_dict({"phase": "infer", "model": "mlp"})


# -- every command: one error line, exit 2 ------------------------------------------------------------------------------

BROKEN_FILES = {"string samples": mutate(["records", 2, "latencies_ms"], "abc"),
                "no model": mutate(["records", 2, "model"], KeyError),
                "old schema": mutate(["schema_version"], 1)}


@pytest.mark.parametrize("kind", sorted(BROKEN_FILES) + ["deep nesting"])
def test_every_command_prints_one_error_line_and_exits_2(tmp_path, capsys, kind):
    good = tmp_path / "good.json"
    good.write_text(json.dumps(good_payload()))
    bad = tmp_path / "cpu" / "results.json"
    bad.parent.mkdir()
    bad.write_text("[" * 50_000 + "]" * 50_000 if kind == "deep nesting" else json.dumps(BROKEN_FILES[kind]))
    for main, argv in ((compare.main, [str(good), str(bad)]), (matrix.main, [str(good), str(bad)]),
                       (report.main, [str(bad)])):
        assert main(argv) == 2
        out = capsys.readouterr()
        assert out.err.startswith(f"error: {bad}: ") and out.err.count("\n") == 1, (main, out.err)
        assert "Traceback" not in out.out + out.err


# -- property-based: random and mutated files ---------------------------------------------------------------------------

JSON_LEAF = st.none() | st.booleans() | st.integers(-10**6, 10**20) | st.floats(allow_nan=False) | st.text(max_size=8)
JSON = st.recursive(JSON_LEAF, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner,
                                                                                          max_size=4), max_leaves=20)


def paths(data, prefix=()):
    """Every (container path) to a value in ``data``."""
    yield prefix
    if isinstance(data, dict):
        for k, v in data.items():
            yield from paths(v, prefix + (k,))
    elif isinstance(data, list):
        for i, v in enumerate(data[:6]):
            yield from paths(v, prefix + (i,))


GOOD_PATHS = [p for p in paths(good_payload()) if p]
# Free-form blocks hold any JSON, but readers look up these keys: random values under exactly these keys.
READ_KEYS = ["measured", "gain", "reason", "compile", "skipped", "phase_s", "probes", "samples_ms", "median_ms",
             "fp32_flops_per_s", "mem_bytes_per_s", "what", "fp32_method"]
BLOCKS = [("records", 1, "tuned"), ("env", "peaks"), ("env", "notes"), ("env", "calibration"),
          ("env", "calibration", "probes", "mm")]
KEYED = st.dictionaries(st.sampled_from(READ_KEYS), JSON | st.dictionaries(st.sampled_from(READ_KEYS), JSON,
                                                                             max_size=3), max_size=4)


def loads_or_one_error(text: str):
    try:
        return parse_results(text, "f.json")
    except ValueError as exc:
        assert str(exc).startswith("f.json: ") and "\n" not in str(exc)
        return None


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(JSON)
def test_random_json_never_raises_anything_but_the_one_error(data):
    assert loads_or_one_error(json.dumps(data)) is None or isinstance(data, dict)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(GOOD_PATHS), JSON, st.booleans())
def test_a_mutated_file_loads_or_is_one_error_and_what_loads_renders(path, value, delete):
    data = copy.deepcopy(good_payload())
    target = data
    for step in path[:-1]:
        target = target[step]
    if delete and isinstance(target, dict):
        del target[path[-1]]
    else:
        target[path[-1]] = value
    loaded = loads_or_one_error(json.dumps(data))
    if loaded is None:
        return
    env, recs = loaded  # accepted: every reader of a run must then work on it without raising
    report.render_summary(env, recs)
    report.csv_text(report.results_payload(env, recs), recs)
    glance_lines(env, recs)
    runs = [matrix.Run("a/cpu/results.json", env, recs), matrix.Run("b/cpu/results.json", env, recs)]
    matrix.label_runs(runs)
    for metric in matrix.METRICS:
        matrix.render(runs, metric)
    compare.compare_records(recs, recs, 0.05, None)
    compare.machine_drift(env, env)
    results_from_json(report.results_payload(env, recs))  # and what the writer writes of it loads back


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(BLOCKS), KEYED)
def test_free_form_blocks_with_the_keys_readers_read_load_or_are_one_error(path, block):
    data = copy.deepcopy(good_payload())
    target = data
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = block
    loaded = loads_or_one_error(json.dumps(data))
    if loaded is not None:
        env, recs = loaded
        report.render_summary(env, recs)
        compare.machine_drift(env, env)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(allow_nan=True, allow_infinity=True), max_size=6), st.sampled_from(["latencies_ms",
                                                                                              "window_rates"]))
def test_a_raw_sample_list_loads_only_as_finite_non_negative_numbers(samples, name):
    data = good_payload()
    data["records"][2 if name == "latencies_ms" else 1][name] = samples
    text = json.dumps(data)  # NaN / Infinity literals: not strict JSON
    loaded = loads_or_one_error(text)
    ok = all(math.isfinite(x) and x >= 0 for x in samples)
    assert (loaded is not None) == ok
    if ok:
        assert getattr(loaded[1][2 if name == "latencies_ms" else 1], name) == samples


# -- import weight ----------------------------------------------------------------------------------------------------

def test_compare_and_the_loader_import_neither_torch_nor_matplotlib():
    code = ("import sys, bench.compare, bench.report.load, bench.report.schema; "
            "print(sorted(m for m in ('torch', 'matplotlib') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_history_reports_a_path_outside_git_as_one_error(tmp_path, capsys):
    assert history.main([str(tmp_path / "none" / "results.json")]) == 2
    assert capsys.readouterr().err == f"error: {tmp_path / 'none' / 'results.json'}: no such folder\n"
