"""bench.records: the typed records, their keys and descriptions (reading and writing them: test_results_load.py)."""
from __future__ import annotations

from bench.records import (
    PERCENTILE_MIN_CALLS,
    RECORD_TYPES,
    InferRecord,
    ModelRecord,
    ParityRecord,
    RunEnv,
    ScaleRecord,
    TrainRecord,
    not_ok,
    reason_of,
)


def test_min_calls_for_percentile_reads_the_percentile_table():
    from bench.measure.stats import min_calls_for_percentile

    assert [min_calls_for_percentile(q) for q in (50, 90, 99)] == [PERCENTILE_MIN_CALLS[q] for q in (50, 90, 99)]
    assert min_calls_for_percentile(99) == 1000 and min_calls_for_percentile(90) == 100
    assert min_calls_for_percentile(95) == 200


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
    assert RunEnv(device="cpu", threads=2).to_dict()["threads"] == 2


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
