"""Models from outside the project: entry points, --import, and each bad input as one error line (issue 27)."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from helpers import REPO, cli_env
from plugin_helpers import BAD_SHAPE, BROKEN, CLASH, RAISES, TINY, fresh_registry, write_package  # noqa: F401

import zoo
from bench.model.selection import pick_models
from bench.report.load import load_results
from zoo import plugins
from zoo import train as train_cli
from zoo.errors import UserError
from zoo.validate import check_model, check_models

pytestmark = pytest.mark.usefixtures("fresh_registry")  # every test leaves the registry as it found it
SIX = ["mlp", "lenet", "cifar_cnn", "alexnet_mnist", "alexnet_transfer", "alexnet_finetune"]


def one_error_line(capsys) -> str:
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("error: "), err
    assert "Traceback" not in err[0]
    return err[0]


def test_an_entry_point_registers_its_models_after_the_zoo_s_own(tmp_path, monkeypatch):
    write_package(tmp_path, {"tinyplug": TINY.format(name="tiny_ep")}, {"tiny": "tinyplug"})
    monkeypatch.syspath_prepend(str(tmp_path))
    names = zoo.list_models()
    assert names[:6] == SIX and "tiny_ep" in names
    assert zoo.get_spec("tiny_ep").dataset == "synthetic:3x16x16"  # synthetic data of its input shape, said so
    assert zoo.get_model("tiny_ep")(torch.zeros(2, 3, 16, 16)).shape == (2, 5)


def test_the_zoo_loads_once_whether_or_not_the_metadata_declares_it(tmp_path, monkeypatch):
    stale = [s.module for s in plugins.entry_point_sources()]
    assert stale.count("zoo.models") == 1 and stale[0] == "zoo.models"  # from the metadata, or the fallback without
    write_package(tmp_path, {}, {"zoo": "zoo.models"}, dist="torch_zoo_bench_fake")
    monkeypatch.syspath_prepend(str(tmp_path))
    declared = [s.module for s in plugins.entry_point_sources()]  # declared again: still imported once
    assert declared.count("zoo.models") == 1 and declared[0] == "zoo.models"
    assert zoo.list_models()[:6] == SIX


def test_import_registers_a_module_by_name(tmp_path, monkeypatch):
    (tmp_path / "quickmod.py").write_text(TINY.format(name="tiny_import"))
    monkeypatch.syspath_prepend(str(tmp_path))
    plugins.import_modules(["quickmod"])
    assert "tiny_import" in zoo.list_models()
    assert plugins.child_env() == {plugins.IMPORT_ENV: "quickmod"}  # what a torchrun rank is given


def test_zoo_train_import_trains_a_user_model_one_epoch(tmp_path, monkeypatch, capsys):
    (tmp_path / "quickmod2.py").write_text(TINY.format(name="tiny_train"))
    monkeypatch.syspath_prepend(str(tmp_path))
    code = train_cli.main(["--import", "quickmod2", "--model", "tiny_train", "--synthetic", "--epochs", "1",
                           "--train-samples", "64", "--test-samples", "32", "--out", str(tmp_path / "runs"),
                           "--device", "cpu", "--tune", "off", "--no-progress"])
    assert code == 0, capsys.readouterr().err
    assert (tmp_path / "runs" / "tiny_train" / "last.pt").is_file()
    assert (tmp_path / "runs" / "tiny_train" / "metrics.jsonl").read_text().count("\n") == 1


@pytest.mark.parametrize("argv, fragment", [
    (["--import", "no_such_module_xyz"], "--import: no module named 'no_such_module_xyz'"),
    (["--import", "brokenmod"], "module 'brokenmod' failed to import: RuntimeError: this plugin is broken"),
    (["--import", "clashmod"], "model 'mlp' is already registered (by zoo.models.mlp)"),
])
def test_a_bad_import_is_one_line_and_exit_2_on_both_command_lines(argv, fragment, tmp_path, monkeypatch,
                                                                    capsys):
    from bench import run as bench_cli

    write_package(tmp_path, {"brokenmod": BROKEN, "clashmod": CLASH}, {})
    monkeypatch.syspath_prepend(str(tmp_path))
    assert train_cli.main([*argv, "--model", "mlp", "--synthetic"]) == 2
    assert fragment in one_error_line(capsys)
    assert bench_cli.main([*argv, "--models", "mlp", "--out", str(tmp_path / "out")]) == 2
    assert fragment in one_error_line(capsys)
    assert not (tmp_path / "out").exists()  # nothing measured, nothing written


@pytest.mark.parametrize("entry, fragment", [
    ("missing_mod_abc", "entry point 'bad' (group torch_zoo_bench.models): no module named 'missing_mod_abc'"),
    ("brokenmod", "entry point 'bad' (group torch_zoo_bench.models): module 'brokenmod' failed to import"),
    ("clashmod", "model 'mlp' is already registered"),
])
def test_a_bad_entry_point_is_one_line_and_exit_2(entry, fragment, tmp_path, monkeypatch, capsys):
    write_package(tmp_path, {"brokenmod": BROKEN, "clashmod": CLASH}, {"bad": entry})
    monkeypatch.syspath_prepend(str(tmp_path))
    assert train_cli.main(["--model", "mlp", "--synthetic"]) == 2
    assert fragment in one_error_line(capsys)


@pytest.mark.parametrize("source, name, fragment", [
    (RAISES, "raises_net", "model 'raises_net': its builder raised ValueError: no weights for you"),
    (BAD_SHAPE, "badshape_net", "model 'badshape_net': maps its input_shape (2, 3, 8, 8) to (2, 7), not (2, 5)"),
])
def test_a_bad_builder_leaves_the_run_and_the_others_stay(source, name, fragment, tmp_path, monkeypatch,
                                                          capsys):
    write_package(tmp_path, {"badmod": source}, {"bad": "badmod"})
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(UserError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        check_model(name)
    assert check_models(["mlp", name, "lenet"]) == (["mlp", "lenet"], [fragment + (
        " logits (N, num_classes)" if name == "badshape_net" else "")])
    models, rejected = pick_models(f"mlp,{name}", [])
    assert models == ["mlp"] and len(rejected) == 1 and fragment in rejected[0]
    assert train_cli.main(["--model", name, "--synthetic"]) == 2  # nothing else asked for: nothing else to run
    assert fragment in one_error_line(capsys)


def test_a_spec_whose_data_cannot_feed_its_input_shape_is_refused(tmp_path, monkeypatch):
    source = TINY.format(name="wrong_data").replace('dataset="synthetic"', 'dataset="mnist"')
    (tmp_path / "wrongdata.py").write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))
    plugins.import_modules(["wrongdata"])
    with pytest.raises(UserError, match="its dataset mnist .*does not give its input_shape"):
        check_model("wrong_data")


def test_unknown_names_say_how_to_ask():
    with pytest.raises(UserError, match="torchvision:NAME"):
        zoo.get_spec("no_such_model")
    with pytest.raises(UserError, match="'nope' is not a torchvision classifier"):
        zoo.get_spec("torchvision:nope")


# ---------------------------------------------------------------------------------------------------------------
# End to end: the commands a user runs, on a package made here


def run_cli(module: str, args: list[str], pythonpath: str) -> subprocess.CompletedProcess:
    env = cli_env(PYTHONPATH=os.pathsep.join([pythonpath, REPO]))
    return subprocess.run([sys.executable, "-m", module, *args], cwd=pythonpath, env=env, capture_output=True,
                          text=True, timeout=600)


@pytest.mark.slow
def test_bench_run_measures_an_entry_point_model_and_leaves_out_a_bad_one(tmp_path):
    pkg = write_package(tmp_path / "site", {"tinyplug": TINY.format(name="tiny_ep"), "badmod": BAD_SHAPE},
                        {"tiny": "tinyplug", "bad": "badmod"})
    out = tmp_path / "out"
    proc = run_cli("bench.run", ["--models", "tiny_ep,badshape_net", "--phases", "infer,parity", "--quick",
                                 "--backends", "eager,onnxruntime", "--repeat", "1", "--out", str(out)], str(pkg))
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == 2 and len(errors) == 1 and "badshape_net" in errors[0], proc.stderr
    assert "Traceback" not in proc.stderr
    _, records = load_results(str(out / "cpu" / "results.json"))
    mine = [r for r in records if r.model == "tiny_ep"]
    assert {type(r).__name__ for r in mine} >= {"ModelRecord", "InferRecord", "ParityRecord"}
    assert all(r.status == "ok" for r in mine), [(r.describe(), r.reason) for r in mine if r.status != "ok"]
    assert not [r for r in records if r.model == "badshape_net"]
    assert "synthetic 3x16x16 images" in (out / "cpu" / "summary.md").read_text()


@pytest.mark.slow
def test_zoo_train_trains_an_entry_point_model(tmp_path):
    pkg = write_package(tmp_path / "site", {"tinyplug": TINY.format(name="tiny_ep")}, {"tiny": "tinyplug"})
    proc = run_cli("zoo.train", ["--model", "tiny_ep", "--epochs", "1", "--train-samples", "64", "--test-samples",
                                 "32", "--device", "cpu", "--tune", "off", "--no-progress", "--out",
                                 str(tmp_path / "runs")], str(pkg))
    assert proc.returncode == 0, proc.stderr
    assert "synthetic data" in proc.stderr  # no --synthetic needed: the spec's data is synthetic of its shape
    assert (tmp_path / "runs" / "tiny_ep" / "best.pt").is_file()


@pytest.mark.slow
def test_the_library_call_imports_a_module_and_measures_its_model(tmp_path, monkeypatch):
    import bench

    (tmp_path / "libmod.py").write_text(TINY.format(name="tiny_lib"))
    monkeypatch.syspath_prepend(str(tmp_path))
    records = bench.run_bench(models=["tiny_lib"], imports=["libmod"], device="cpu", phases=["infer"],
                              backends=["eager"], batch_sizes=[1], quick=True, repeat=1)
    rows = [r for r in records if r.model == "tiny_lib" and type(r).__name__ == "InferRecord"]
    assert rows and all(r.status == "ok" and r.p50_ms > 0 for r in rows)


def test_the_library_call_raises_on_a_model_that_fails_its_check(tmp_path, monkeypatch):
    import bench

    (tmp_path / "badlib.py").write_text(BAD_SHAPE)
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(UserError, match="badshape_net"):  # a caller decides; nothing is measured without it
        bench.run_bench(models=["mlp", "badshape_net"], imports=["badlib"], device="cpu", phases=["infer"],
                        backends=["eager"], quick=True, out=str(tmp_path / "out"))
    assert not (tmp_path / "out" / "cpu" / "results.json").exists()
