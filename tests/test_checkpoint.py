"""Checkpoints: round trip, atomic writes, and every bad file a one-line CheckpointError that runs no code."""
from __future__ import annotations

import dataclasses
import os
import pickle
import random

import pytest
import torch
from helpers import assert_same_tensors

import zoo
from zoo.atomic import atomic_open, atomic_write_text
from zoo.checkpoint import (
    FORMAT,
    REQUIRED_KEYS,
    CheckpointError,
    CheckpointState,
    load_checkpoint,
    save_checkpoint,
)
from zoo.engine import build_optimizer
from zoo.errors import UserError
from zoo.loop import fit


def make_state(name: str = "lenet") -> dict:
    torch.manual_seed(0)
    model = zoo.get_model(name)
    spec = zoo.get_spec(name)
    opt = build_optimizer(spec.recipe, model)
    model(torch.rand(2, *spec.input_shape)).sum().backward()
    opt.step()  # momentum buffers exist: the optimizer state is not empty
    return CheckpointState(model_name=name, model=model.state_dict(), optimizer=opt.state_dict(), epoch=3,
                           best_acc=0.5, rng={"torch": torch.get_rng_state()}, recipe=spec.as_dict(),
                           config={"seed": 0, "lr": None}, versions={"torch": str(torch.__version__)}).to_dict()


def test_the_layout_is_declared_once(small_cfg):
    """What the loop saves is CheckpointState.to_dict(), and the load insists on its fields without defaults."""
    fit(small_cfg("lenet", train_samples=64, test_samples=32))
    saved = load_checkpoint(os.path.join(small_cfg().out, "lenet", "last.pt"), model_name="lenet")
    fields = [f.name for f in dataclasses.fields(CheckpointState)]
    assert list(saved) == ["format", *fields] and saved["format"] == FORMAT
    assert set(REQUIRED_KEYS) <= set(saved) and {"format", "model", "optimizer", "rng", "epoch"} <= set(REQUIRED_KEYS)


def only(folder) -> list[str]:
    return sorted(os.listdir(folder))


def test_round_trip(tmp_path):
    state = make_state()
    path = str(tmp_path / "last.pt")
    save_checkpoint(state, path)
    loaded = load_checkpoint(path, model_name="lenet")
    assert_same_tensors(state, loaded)
    model = zoo.get_model("lenet")
    model.load_state_dict(loaded["model"])
    assert only(tmp_path) == ["last.pt"]  # no temporary file left behind


def test_atomic_save_replaces_and_leaves_no_temp_files(tmp_path):
    path = str(tmp_path / "run" / "last.pt")  # the folder is created
    save_checkpoint(make_state(), path)
    state = make_state()
    state["epoch"] = 4
    save_checkpoint(state, path)
    assert load_checkpoint(path)["epoch"] == 4
    assert only(tmp_path / "run") == ["last.pt"]
    atomic_write_text(str(tmp_path / "run" / "m.json"), "{}\n")
    assert (tmp_path / "run" / "m.json").read_text() == "{}\n" and only(tmp_path / "run") == ["last.pt", "m.json"]


@pytest.mark.parametrize("exc", [RuntimeError("disk full"), KeyboardInterrupt()])
def test_interrupted_write_keeps_the_old_file(tmp_path, exc):
    path = str(tmp_path / "last.pt")
    save_checkpoint(make_state(), path)
    before = open(path, "rb").read()
    with pytest.raises(type(exc)):
        with atomic_open(path, "wb") as f:
            f.write(b"half a checkpoint")
            raise exc
    assert open(path, "rb").read() == before and only(tmp_path) == ["last.pt"]


def test_failing_serialisation_keeps_the_old_file(tmp_path):
    path = str(tmp_path / "last.pt")
    save_checkpoint(make_state(), path)
    before = open(path, "rb").read()
    bad = make_state()
    bad["hook"] = lambda: None  # torch.save cannot pickle a lambda: fails after writing part of the archive
    with pytest.raises(Exception):  # noqa: B017  (pickle raises different types across Python versions)
        save_checkpoint(bad, path)
    assert open(path, "rb").read() == before and only(tmp_path) == ["last.pt"]
    assert load_checkpoint(path)["epoch"] == 3


class RunsCode:
    """Unpickling this calls ``func(*args)``: what a hostile checkpoint would do."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


# TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 makes torch.load default to weights_only=False (torch reads it on every load):
# with it set, only an explicit weights_only=True in zoo's code keeps the payload from running.
UNSAFE_DEFAULT = pytest.mark.parametrize("unsafe_default", [False, True], ids=["torch-default", "unsafe-default"])


@UNSAFE_DEFAULT
@pytest.mark.parametrize("how", ["torch.save", "raw pickle"])
def test_malicious_pickle_is_refused_and_runs_nothing(tmp_path, monkeypatch, how, unsafe_default):
    if unsafe_default:
        monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    marker, marker_dir = tmp_path / "pwned", tmp_path / "pwned_dir"
    state = make_state()
    state["extra"] = [RunsCode(os.system, f"touch {marker}"), RunsCode(os.mkdir, str(marker_dir))]
    path = str(tmp_path / "evil.pt")
    if how == "torch.save":
        torch.save(state, path)
    else:  # a legacy (non-zip) pickle file
        with open(path, "wb") as f:
            pickle.dump(state, f, protocol=2)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    msg = str(info.value)
    assert "refusing to load" in msg and "refers to" in msg and path in msg and "\n" not in msg
    assert not marker.exists() and not marker_dir.exists()
    # The payload is live: an unsafe load would have run it (so the test above can fail).
    if how == "torch.save":
        torch.load(path, weights_only=False)
    else:
        with open(path, "rb") as f:
            pickle.load(f)
    assert marker.exists() and marker_dir.exists()


def test_truncated_checkpoint(tmp_path):
    path = str(tmp_path / "last.pt")
    save_checkpoint(make_state(), path)
    data = open(path, "rb").read()
    for cut in (len(data) // 2, 100, 0):
        with open(path, "wb") as f:
            f.write(data[:cut])
        with pytest.raises(CheckpointError) as info:
            load_checkpoint(path)
        assert "truncated or not a PyTorch checkpoint" in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("seed", range(4))
def test_random_bytes_are_not_a_checkpoint(tmp_path, seed):
    """Garbage is reported as garbage: neither a crash nor a (false) warning that the file could run code."""
    path = tmp_path / "noise.pt"
    path.write_bytes(random.Random(seed).randbytes(4096))
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(str(path))
    msg = str(info.value)
    assert "not a PyTorch checkpoint" in msg and str(path) in msg and "\n" not in msg, msg


def test_plain_state_dict_is_foreign(tmp_path):
    path = str(tmp_path / "lenet.pt")
    torch.save(zoo.get_model("lenet").state_dict(), path)  # what the tutorials save
    with pytest.raises(CheckpointError, match="not a zoo checkpoint"):
        load_checkpoint(path)


def test_missing_keys(tmp_path):
    state = make_state()
    del state["optimizer"], state["rng"]
    path = str(tmp_path / "last.pt")
    save_checkpoint(state, path)
    with pytest.raises(CheckpointError, match="missing optimizer, rng"):
        load_checkpoint(path)
    assert "optimizer" in REQUIRED_KEYS


def test_checkpoint_of_another_model(tmp_path):
    path = str(tmp_path / "last.pt")
    save_checkpoint(make_state("lenet"), path)
    with pytest.raises(CheckpointError, match="holds model 'lenet', not 'mlp'"):
        load_checkpoint(path, model_name="mlp")


def test_missing_file_and_error_type(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint at"):
        load_checkpoint(str(tmp_path / "nope.pt"))
    assert issubclass(CheckpointError, UserError)  # the CLI turns it into one line and exit 2


def test_the_fault_point_is_named_with_the_epoch_only_when_asked(tmp_path, monkeypatch):
    """Crash tests aim at `mid_checkpoint_write:<epoch>`: the save reports that point and the state's epoch."""
    import zoo.checkpoint as checkpoint

    calls = []
    monkeypatch.setattr(checkpoint, "maybe_crash", lambda point, epoch=None: calls.append((point, epoch)))
    monkeypatch.delenv("ZOO_FAULT_AT", raising=False)
    save_checkpoint(make_state(), str(tmp_path / "a.pt"))
    assert calls == []  # unset, the save never consults the fault points
    monkeypatch.setenv("ZOO_FAULT_AT", "after_rename:9")
    save_checkpoint(make_state(), str(tmp_path / "b.pt"))
    assert calls == [("mid_checkpoint_write", 3)]
    assert load_checkpoint(str(tmp_path / "b.pt"))["epoch"] == 3


def test_map_location_reaches_the_load(tmp_path):
    path = str(tmp_path / "last.pt")
    save_checkpoint(make_state(), path)
    loaded = load_checkpoint(path, map_location="meta")  # tensors without storage: proves the argument is used
    assert all(t.device.type == "meta" for t in loaded["model"].values())
    assert all(t.device.type == "cpu" for t in load_checkpoint(path)["model"].values())  # the default is CPU


@pytest.mark.parametrize("exc, detail", [
    (RuntimeError("PytorchStreamReader failed\nsecond line"), "(RuntimeError: PytorchStreamReader failed)"),
    (EOFError(), "(EOFError: )"),
    (ValueError("x" * 300), f"(ValueError: {'x' * 160})"),
])
def test_load_failures_name_the_error_on_one_line(tmp_path, monkeypatch, exc, detail):
    """The message keeps the exception's type and the first 160 characters of its first line, nothing more."""
    path = tmp_path / "last.pt"
    path.write_bytes(b"anything")

    def fail(*args, **kwargs):
        raise exc

    monkeypatch.setattr(torch, "load", fail)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(str(path))
    assert str(info.value) == f"{path} is truncated or not a PyTorch checkpoint {detail}"
