"""ImageNet weights for the AlexNet models: used when present in the hub cache, never silently missing."""
from __future__ import annotations

import json
import logging
import os

import pytest
import torch
import torchvision

import zoo
from zoo.checkpoint import load_checkpoint
from zoo.errors import UserError
from zoo.loop import fit
from zoo.models.pretrained import cached_weights_path

ALEXNETS = ("alexnet_mnist", "alexnet_transfer", "alexnet_finetune")
FILENAME = "alexnet-owt-7be5be79.pth"  # torchvision's AlexNet_Weights.IMAGENET1K_V1 file name


def features_of(name: str, model: torch.nn.Module) -> torch.nn.Module:
    return {"alexnet_mnist": lambda m: m.net.features, "alexnet_transfer": lambda m: m[0],
            "alexnet_finetune": lambda m: m.features}[name](model)


@pytest.fixture(scope="module")
def fake_imagenet_file(tmp_path_factory):
    """A random state_dict of torchvision's AlexNet saved once: the real file's keys and shapes (244 MB)."""
    torch.manual_seed(123)
    state = torchvision.models.alexnet(weights=None).state_dict()
    folder = tmp_path_factory.mktemp("imagenet")
    path = str(folder / FILENAME)
    torch.save(state, path)
    yield path, state
    os.remove(path)  # do not leave 244 MB in pytest's kept temp folders


@pytest.fixture
def fake_imagenet_state(fake_imagenet_file):
    return fake_imagenet_file[1]


@pytest.fixture
def weights_in_cache(torch_home, fake_imagenet_file):
    """The file where torchvision's download would have put it: $TORCH_HOME/hub/checkpoints/."""
    path = os.path.join(torch_home, "hub", "checkpoints", FILENAME)
    os.makedirs(os.path.dirname(path))
    os.link(fake_imagenet_file[0], path)  # a hard link: no 244 MB copy per test
    yield path
    os.remove(path)


def test_cache_location_follows_torch_home(torch_home):
    assert cached_weights_path() == os.path.join(torch_home, "hub", "checkpoints", FILENAME)


@pytest.mark.parametrize("name", ALEXNETS)
def test_auto_uses_the_cached_file(weights_in_cache, fake_imagenet_state, name):
    model = zoo.get_model(name, pretrained="auto")
    assert model.pretrained is True
    features = features_of(name, model).state_dict()
    assert len(features) == 10
    for key, value in features.items():
        assert torch.equal(value, fake_imagenet_state[f"features.{key}"]), key
    # The tutorials' own heads are new layers, not the file's ImageNet classifier.
    feature_ids = {id(p) for p in features_of(name, model).parameters()}
    for key, p in model.named_parameters():
        if id(p) not in feature_ids:
            assert not any(t.shape == p.shape and torch.equal(t, p) for t in fake_imagenet_state.values()), key


def test_explicit_weights_path(tmp_path, fake_imagenet_file, fake_imagenet_state):
    path = str(tmp_path / "my_alexnet.pth")
    os.link(fake_imagenet_file[0], path)
    model = zoo.get_model("alexnet_transfer", pretrained="require", weights_path=path)
    assert model.pretrained is True
    assert torch.equal(model[0][0].weight, fake_imagenet_state["features.0.weight"])
    with pytest.raises(UserError, match="does not exist"):
        zoo.get_model("alexnet_transfer", weights_path=str(tmp_path / "nope.pth"))


@pytest.mark.parametrize("name", ALEXNETS)
def test_auto_without_file_warns_where_to_put_it(torch_home, caplog, name):
    with caplog.at_level(logging.WARNING, logger="zoo"):
        model = zoo.get_model(name, pretrained="auto")
    assert model.pretrained is False
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "\n" not in warnings[0]
    expected = os.path.join(torch_home, "hub", "checkpoints", FILENAME)
    assert expected in warnings[0] and "pretrained: false" in warnings[0]


def test_off_looks_for_nothing(weights_in_cache, caplog):
    with caplog.at_level(logging.WARNING, logger="zoo"):
        model = zoo.get_model("alexnet_finetune", pretrained="off")
    assert model.pretrained is False and not caplog.records


@pytest.mark.parametrize("name", ALEXNETS)
def test_require_without_file_is_a_user_error(torch_home, name):
    with pytest.raises(UserError, match=FILENAME):
        zoo.get_model(name, pretrained="require")


def test_unknown_mode_is_a_user_error():
    with pytest.raises(UserError, match="pretrained must be one of"):
        zoo.get_model("alexnet_mnist", pretrained="yes")


class RunsCode:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return os.mkdir, (self.path,)


@pytest.mark.parametrize("corruption", ["random bytes", "truncated", "not alexnet", "runs code",
                                        "runs code, unsafe default"])
def test_corrupt_weights_file_is_a_user_error(torch_home, fake_imagenet_state, tmp_path, monkeypatch, corruption):
    if corruption.endswith("unsafe default"):
        # torch.load then defaults to weights_only=False: only zoo's explicit weights_only=True stops the payload.
        monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    path = os.path.join(torch_home, "hub", "checkpoints", FILENAME)
    os.makedirs(os.path.dirname(path))
    marker = str(tmp_path / "pwned")
    if corruption == "random bytes":
        with open(path, "wb") as f:
            f.write(os.urandom(2048))
    elif corruption == "truncated":
        small = {k: v[:2].clone() for k, v in fake_imagenet_state.items()}  # keeps the file small to cut
        torch.save(small, path)
        with open(path, "r+b") as f:
            f.truncate(os.path.getsize(path) // 2)
    elif corruption == "not alexnet":
        torch.save(zoo.get_model("lenet").state_dict(), path)
    else:  # "runs code"
        torch.save({"features.0.weight": RunsCode(marker)}, path)
    for mode in ("auto", "require"):
        with pytest.raises(UserError) as info:
            zoo.get_model("alexnet_transfer", pretrained=mode)
        assert path in str(info.value) and "\n" not in str(info.value)
    assert not os.path.exists(marker)
    if corruption.startswith("runs code"):  # the payload is live: an unsafe load runs it
        torch.load(path, weights_only=False)
        assert os.path.exists(marker)


def test_wrong_shapes_are_a_user_error(torch_home):
    path = os.path.join(torch_home, "hub", "checkpoints", FILENAME)
    os.makedirs(os.path.dirname(path))
    torch.save({"features.0.weight": torch.zeros(64, 3, 5, 5)}, path)  # an AlexNet-looking dict that does not fit
    with pytest.raises(UserError, match="do not fit"):
        zoo.get_model("alexnet_mnist", pretrained="auto")


def test_training_records_pretrained(weights_in_cache, fake_imagenet_state, small_cfg):
    cfg = dict(model="alexnet_transfer", train_samples=32, test_samples=16, batch_size=16)
    result = fit(small_cfg(**cfg, epochs=1))
    assert result["pretrained"] is True
    run_dir = os.path.join(small_cfg().out, "alexnet_transfer")
    ckpt = load_checkpoint(os.path.join(run_dir, "last.pt"), model_name="alexnet_transfer")
    assert ckpt["pretrained"] is True
    # The frozen features are the file's, untouched by training.
    assert torch.equal(ckpt["model"]["0.0.weight"], fake_imagenet_state["features.0.weight"])
    # A resumed run takes its weights from the checkpoint and keeps the flag, even with the file gone.
    os.remove(weights_in_cache)  # unlink first: writing through the hard link would empty the shared file
    with open(weights_in_cache, "wb"):  # now empty, i.e. corrupt: any attempt to read it would fail the run
        pass
    fit(small_cfg(**cfg, epochs=2, resume=True))
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        assert [json.loads(line)["pretrained"] for line in f] == [True, True]
    assert load_checkpoint(os.path.join(run_dir, "last.pt"))["pretrained"] is True


def test_training_records_random_init(torch_home, small_cfg):
    result = fit(small_cfg(model="alexnet_transfer", train_samples=16, test_samples=16, batch_size=16))
    assert result["pretrained"] is False
    run_dir = os.path.join(small_cfg().out, "alexnet_transfer")
    assert load_checkpoint(os.path.join(run_dir, "last.pt"))["pretrained"] is False
