"""bench.records: the typed records, their keys and descriptions, and the strict JSON round trip."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from bench.records import (
    PERCENTILE_MIN_CALLS,
    RECORD_TYPES,
    SCHEMA_VERSION,
    InferRecord,
    ModelRecord,
    ParityRecord,
    RunEnv,
    ScaleRecord,
    TrainRecord,
    min_calls_for,
    not_ok,
    reason_of,
    record_from_dict,
    results_from_json,
    results_to_json,
)


def test_min_calls_for_reads_the_percentile_table():
    assert [min_calls_for(q) for q in (50, 90, 99)] == [PERCENTILE_MIN_CALLS[q] for q in (50, 90, 99)]
    assert min_calls_for(99) == 1000 and min_calls_for(90) == 100


def test_phase_ok_and_key():
    rec = InferRecord(model="mlp", device="cpu", backend="onnxruntime", batch_size=8, precision="bf16", p50_ms=2.0)
    assert rec.phase == "infer" and rec.ok
    assert rec.key() == ("mlp", "infer", "onnxruntime", 8, "bf16")
    assert rec.key() == InferRecord(model="mlp", device="cuda", backend="onnxruntime", batch_size=8,
                                    precision="bf16", p50_ms=9.0, status="failed").key()  # the result is not the key
    assert not InferRecord(status="skipped").ok and not InferRecord(status="failed").ok
    assert ModelRecord(model="lenet").key() == ("lenet", "model")


def test_describe_names_only_what_is_not_the_default():
    assert TrainRecord(row="fast", batch_size=64, precision="bf16", channels_last=True).describe() == \
        "fast b=64 bf16 channels_last"
    assert TrainRecord(row="compute", batch_size=32, compile="max-autotune").describe() == \
        "compute b=32 compile=max-autotune"
    assert TrainRecord(row="fast", precision="fp32", channels_last=False, compile=None).describe() == "fast"
    assert ScaleRecord(processes=2, batch_size=16).describe() == "procs=2 b=16"
    assert ParityRecord(backend="").describe() == "" and ModelRecord().describe() == ""
    assert TrainRecord(row="", batch_size=64).describe() == "b=64"  # an empty field leaves no stray space


def test_to_dict_carries_the_phase_and_every_field():
    rec = ParityRecord(model="mlp", device="cpu", max_abs_diff=1e-6)
    d = rec.to_dict()
    assert d["phase"] == "parity" and d["max_abs_diff"] == 1e-6 and d["backend"] == "onnxruntime"
    assert record_from_dict(d) == rec
    assert RunEnv(device="cpu", threads=2).to_dict()["threads"] == 2


def test_record_from_dict_rejects_what_is_not_a_record():
    with pytest.raises(ValueError, match="a record must be an object, not list"):
        record_from_dict([])
    with pytest.raises(ValueError, match=r"unknown record phase 'tune'; known: model, train, infer"):
        record_from_dict({"phase": "tune"})
    with pytest.raises(ValueError, match=r"^infer record has unknown field\(s\): a_field, loader$"):
        record_from_dict({"phase": "infer", "loader": "fast", "a_field": 1})
    with pytest.raises(ValueError, match=r"^train record has status 'done'; expected one of ok, skipped, failed$"):
        record_from_dict({"phase": "train", "status": "done"})
    for status in ("ok", "skipped", "failed"):
        assert record_from_dict({"phase": "train", "status": status}).status == status


def test_results_round_trip_strict_json():
    env = RunEnv(device="cpu", timestamp="2030-01-01T00:00:00+00:00", peaks={"fp32": np.float64(2.5)})
    records = [InferRecord(model="mlp", device="cpu", backend="eager", batch_size=1, p50_ms=np.float32(0.5),
                           latencies_ms=[0.5, float("nan")], p99_ms=float("inf")),
               TrainRecord(model="mlp", device="cpu", row="fast", window_rates=(1.0, 2.0), tuned={3: "x"})]
    data = results_to_json(env, records)
    assert data["schema_version"] == SCHEMA_VERSION and list(data) == ["schema_version", "env", "records"]
    text = json.dumps(data, allow_nan=False)  # strict JSON: NaN/inf became null, numpy scalars plain numbers
    row = data["records"][0]
    assert row["p99_ms"] is None and row["latencies_ms"] == [0.5, None] and type(row["p50_ms"]) is float
    assert data["env"]["peaks"] == {"fp32": 2.5} and type(data["env"]["peaks"]["fp32"]) is float
    assert data["records"][1]["window_rates"] == [1.0, 2.0] and data["records"][1]["tuned"] == {"3": "x"}
    env2, records2 = results_from_json(json.loads(text))
    assert env2 == RunEnv(device="cpu", timestamp="2030-01-01T00:00:00+00:00", peaks={"fp32": 2.5})
    assert [r.key() for r in records2] == [r.key() for r in records] and records2[0].p50_ms == 0.5


def test_clean_keeps_finite_values_and_arrays_of_one_element_lists():
    data = results_to_json(RunEnv(notes={"n": np.int64(3), "ok": True, "arr": [np.float32(1.5)], "s": "x"}), [])
    assert data["env"]["notes"] == {"n": 3, "ok": True, "arr": [1.5], "s": "x"}
    assert type(data["env"]["notes"]["n"]) is int
    assert data["records"] == [] and not math.isnan(data["env"]["notes"]["arr"][0])


@pytest.mark.parametrize("data, match", [
    ([], r'^not a bench results file \(expected \{"schema_version": \.\.\., "env": \.\.\., "records": \[\.\.\.\]\}\)$'),
    ({"records": {}}, "^not a bench results file"),
    ({"schema_version": 1, "records": []}, r"^results schema version 1; this bench reads version 2 \(re-run"),
    ({"records": []}, r"^results schema version None;"),
    ({"schema_version": SCHEMA_VERSION, "env": {"gpu": "x", "cores": 2}, "records": []},
     r"^env has unknown field\(s\): cores, gpu$"),
    ({"schema_version": SCHEMA_VERSION, "records": [{"phase": "model"}, {"phase": "x"}]},
     r"^record 1: unknown record phase 'x'"),
    ({"schema_version": SCHEMA_VERSION, "records": [{"phase": "model", "params_total": 1, "dataset": None},
                                                    "row"]}, r"^record 1: a record must be an object, not str$"),
])
def test_results_from_json_says_what_does_not_fit(data, match):
    with pytest.raises(ValueError, match=match):
        results_from_json(data)


def test_results_from_json_without_env_gives_an_empty_env():
    env, records = results_from_json({"schema_version": SCHEMA_VERSION, "env": None, "records": [{"phase": "model"}]})
    assert env == RunEnv() and records == [ModelRecord()]


def test_reason_of_is_one_line():
    assert reason_of("no CUDA device") == "no CUDA device"
    assert reason_of(RuntimeError("first line\nsecond line")) == "RuntimeError: first line"
    assert reason_of(KeyError()) == "KeyError"
    assert reason_of(ValueError("  padded  ")) == "ValueError: padded"
    assert reason_of(OSError("y" * 300)) == "OSError: " + "y" * 200
    assert reason_of(RuntimeError("needs X:")) == "RuntimeError: needs X"  # trailing colons and spaces go, letters stay


def test_not_ok_builds_a_keyed_row_with_its_reason():
    rec = not_ok(InferRecord, "mlp", "cpu", RuntimeError("boom"), backend="onnxruntime", batch_size=4)
    assert rec == InferRecord(model="mlp", device="cpu", status="failed", reason="RuntimeError: boom",
                              backend="onnxruntime", batch_size=4)
    skipped = not_ok(ParityRecord, "lenet", "cuda", "onnx missing", status="skipped")
    assert (skipped.status, skipped.reason, skipped.model, skipped.device) == ("skipped", "onnx missing", "lenet", "cuda")
    assert set(RECORD_TYPES) == {"model", "train", "infer", "parity", "scale", "tta", "serve"}
