"""bench.run_bench: the Python entry point runs bench.run's driver and returns typed records."""
from __future__ import annotations

import os

import pytest

import bench
from bench.config import RunConfig
from bench.records import InferRecord, ModelRecord
from zoo.errors import UserError


def test_a_config_is_the_command_lines_flags_both_ways():
    config = RunConfig(models=["mlp", "lenet"], batch_sizes=[1, 64], quick=True, synthetic=False, out=None, budget=30,
                       tta_target=["mlp=0.6", "lenet=0.9"])
    argv = config.to_argv()
    assert argv == ["--models", "mlp,lenet", "--batch-sizes", "1,64", "--quick", "--budget", "30",
                    "--tta-target", "mlp=0.6", "--tta-target", "lenet=0.9"]
    from bench.run import build_parser

    back = RunConfig.from_namespace(build_parser().parse_args(argv))
    assert back.replace(out=None) == RunConfig(models="mlp,lenet", batch_sizes="1,64", quick=True, budget="30",
                                               tta_target=["mlp=0.6", "lenet=0.9"])


def test_launch_returns_the_drivers_env_and_records_and_keeps_no_folder():
    results = bench.launch(RunConfig(models=["mlp"], device="cpu", phases=["infer"], backends=["noop"],
                                     batch_sizes=[1], synthetic=True, quick=True))
    assert results.exit_code == 0 and results.out_dir is None
    assert results.env.complete and [type(r).__name__ for r in results.records] == ["ModelRecord", "InferRecord"]


def test_run_bench_returns_the_records_and_writes_files_only_when_asked(tmp_path, monkeypatch):
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path / "scratch"))
    os.makedirs(tmp_path / "scratch")
    records = bench.run_bench(models=["mlp"], device="cpu", phases=["infer"], backends=["noop"], batch_sizes=[1],
                              synthetic=True, quick=True)
    assert [type(r) for r in records] == [ModelRecord, InferRecord]
    assert records[1].backend == "noop" and records[1].ok and records[1].latencies_ms
    assert os.listdir(tmp_path / "scratch") == []  # the run's temporary folder is gone
    kept = bench.run_bench(models=["mlp"], device="cpu", phases=["infer"], backends=["noop"], batch_sizes=[1],
                           synthetic=True, quick=True, out=str(tmp_path / "out"))
    assert (tmp_path / "out" / "cpu" / "results.json").is_file() and kept[1].backend == "noop"


def test_a_bad_choice_raises_the_command_lines_message():
    with pytest.raises(UserError, match="unknown backend"):
        bench.run_bench(models=["mlp"], device="cpu", phases=["infer"], backends=["nonesuch"], synthetic=True)
