"""bench.schedule.calibration: the machine-dependent price constants come from a file that names its machine."""
from __future__ import annotations

import json

import pytest

import bench.phases  # noqa: F401 - the phase registry first, as every command imports it (serve_cost's import order)
from bench.schedule import calibration, pricing, serve_cost
from zoo.errors import UserError


def test_the_reference_file_names_its_machine_and_feeds_the_prices():
    ref = calibration.load_prices(calibration.REFERENCE_FILE)
    assert "EPYC" in ref.machine and ref.source and ref.calibration_matmul_fp32_256_ms > 0
    assert pricing.BUILD_S == ref.build_s and pricing.REF_CALIBRATION_MS == ref.calibration_matmul_fp32_256_ms
    assert serve_cost.SUT_QUERY_S == ref.serve["sut_query_s"]
    assert set(ref.build_s_per_mparam) <= set(ref.build_s)  # a per-parameter part always has its fixed part


def test_a_file_from_another_machine_is_read_from_the_environment(tmp_path, monkeypatch):
    data = json.loads(open(calibration.REFERENCE_FILE, encoding="utf-8").read())
    data.update(machine="a 64-core test box", calibration_matmul_fp32_256_ms=0.05)
    data["build_s"]["plots"] = 1.5
    path = tmp_path / "prices.json"
    path.write_text(json.dumps(data))
    monkeypatch.setenv(calibration.ENV_VAR, str(path))
    got = calibration.load_prices()
    assert got.machine == "a 64-core test box" and got.build_s["plots"] == 1.5
    assert got.provenance() == {"file": str(path), "machine": "a 64-core test box", "calibration_ms": 0.05}


@pytest.mark.parametrize("text", ["not json", json.dumps({"machine": "m"})])
def test_a_broken_calibration_file_is_one_user_error(tmp_path, text):
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(UserError, match="not a price calibration file"):
        calibration.load_prices(str(path))
    with pytest.raises(UserError, match="not a price calibration file"):
        calibration.load_prices(str(tmp_path / "missing.json"))
