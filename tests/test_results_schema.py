"""Every committed results/[<run>/]<device>/results.json is a file of the current schema: strict load, no unknown
field."""
from __future__ import annotations

import glob
import json
import os

import pytest

from bench.records import SCHEMA_VERSION
from bench.report.load import load_results
from bench.report.schema import results_from_json

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMMITTED = sorted(glob.glob(os.path.join(REPO, "results", "*", "results.json"))
                   + glob.glob(os.path.join(REPO, "results", "*", "*", "results.json")))


def check_results_file(path: str) -> None:
    with open(path) as f:
        data = json.load(f)
    assert data.get("schema_version") == SCHEMA_VERSION, f"{path}: schema {data.get('schema_version')!r}"
    env, records = results_from_json(data)  # raises on an unknown phase, field, status or a value out of range
    assert load_results(path) == (env, records)  # the strict text parser agrees
    assert env.device and env.timestamp, f"{path}: env lacks device or timestamp"
    assert records, f"{path}: no records"
    assert os.path.basename(os.path.dirname(path)) == env.device, f"{path}: folder is not the env's device"


@pytest.mark.parametrize("path", COMMITTED, ids=[os.path.relpath(p, REPO) for p in COMMITTED])
def test_committed_results_match_the_schema(path):
    check_results_file(path)


def test_the_check_accepts_what_the_report_writes_and_rejects_old_files(tmp_path):
    from bench.records import InferRecord, RunEnv
    from bench.report import files as report

    env = RunEnv(device="cpu", device_name="Test CPU", timestamp="2030-01-01T00:00:00+00:00", complete=True)
    report.write_results(str(tmp_path / "cpu"), env, [InferRecord(model="mlp", device="cpu", backend="eager")],
                         plots=False)
    check_results_file(str(tmp_path / "cpu" / "results.json"))
    (tmp_path / "old.json").write_text(json.dumps({"env": {"device": "cpu"}, "records": [{"phase": "train"}]}))
    with pytest.raises(AssertionError):
        check_results_file(str(tmp_path / "old.json"))
    data = json.loads((tmp_path / "cpu" / "results.json").read_text())
    data["records"][0]["loader"] = "fast"  # a field the schema does not declare
    (tmp_path / "cpu" / "results.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match="unknown field"):
        check_results_file(str(tmp_path / "cpu" / "results.json"))
