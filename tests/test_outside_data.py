"""torchvision:NAME specs and the data a model from outside the zoo can name: synthetic of its input shape, or an
ImageFolder (issue 27)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from plugin_helpers import TINY, fresh_registry  # noqa: F401

import zoo
from zoo import plugins
from zoo.data import make_loaders, real_data_available
from zoo.errors import UserError
from zoo.models import torchvision_models
from zoo.sources import DATASETS, synthetic_sizes

pytestmark = pytest.mark.usefixtures("fresh_registry")


def test_torchvision_spec_states_size_classes_data_and_recipe():
    spec = zoo.get_spec("torchvision:resnet18")
    assert spec.input_shape == (3, 224, 224) and spec.num_classes == 1000
    assert spec.dataset == "synthetic:3x224x224"
    assert spec.recipe == torchvision_models.REFERENCE_RECIPE.__class__(
        **{**torchvision_models.REFERENCE_RECIPE.__dict__, "transforms": spec.recipe.transforms})
    assert spec.recipe.transforms.mean == (0.485, 0.456, 0.406)
    assert zoo.get_spec("torchvision:inception_v3").input_shape == (3, 299, 299)  # its weights' crop, not 224
    assert "torchvision:resnet18" not in zoo.list_models()  # --models all stays the registered models


def test_torchvision_builds_random_or_the_given_weights(tmp_path):
    net = zoo.get_model("torchvision:squeezenet1_0")  # the default: random init, never a download
    assert net.pretrained is False
    assert net(torch.zeros(1, 3, 224, 224)).shape == (1, 1000)
    path = tmp_path / "weights.pth"
    torch.save(net.state_dict(), path)
    again = zoo.get_model("torchvision:squeezenet1_0", pretrained="require", weights_path=str(path))
    assert again.pretrained is True
    for a, b in zip(net.state_dict().values(), again.state_dict().values()):
        assert torch.equal(a, b)
    with pytest.raises(UserError, match="weights not found"):
        zoo.get_model("torchvision:squeezenet1_0", pretrained="require")  # the private, empty hub cache


def test_synthetic_data_of_any_shape_with_every_class():
    shape = (3, 40, 24)
    assert DATASETS["synthetic:3x40x24"][1:3] == (shape, synthetic_sizes(shape))
    spec = zoo.ModelSpec(name="t", dataset="synthetic:3x40x24", input_shape=shape, num_classes=1000,
                         recipe=zoo.Recipe(optimizer="sgd", lr=0.1, batch_size=256, epochs=1),
                         source="t", description="t")
    fast = make_loaders(spec, loader="fast", train_samples=300, test_samples=20)
    slow = make_loaders(spec, loader="tutorial", train_samples=300, test_samples=20)
    (xf, yf), (xt, yt) = next(fast.train.batches(0)), next(slow.train.batches(0))
    assert xf.shape == (256, *shape) and torch.equal(yf, yt) and torch.allclose(xf, xt)
    assert yf.max() > 100  # labels drawn over all 1000 classes, not the zoo's 10
    assert fast.source == "synthetic" and not real_data_available("synthetic:3x40x24", "data")


def write_folder(root, split: str, classes: int, per_class: int) -> None:
    rng = np.random.default_rng(0)
    for c in range(classes):
        folder = root / split / f"class{c}"
        folder.mkdir(parents=True)
        for i in range(per_class):
            size = (20 + i, 30)  # images of different sizes: each is resized to the input shape when decoded
            Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(folder / f"{i}.png")


def test_an_imagefolder_feeds_both_loaders_the_same_batches(tmp_path, monkeypatch):
    write_folder(tmp_path / "imgs", "train", classes=2, per_class=3)
    write_folder(tmp_path / "imgs", "val", classes=2, per_class=2)
    source = TINY.format(name="folder_net").replace('dataset="synthetic"', f'dataset="imagefolder:{tmp_path}/imgs"')
    (tmp_path / "foldermod.py").write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))
    plugins.import_modules(["foldermod"])
    spec = zoo.get_spec("folder_net")
    assert spec.dataset == f"imagefolder:3x16x16:{tmp_path}/imgs"
    assert DATASETS[spec.dataset][2] == (6, 4) and real_data_available(spec.dataset, "data")
    fast = make_loaders(spec, loader="fast", batch_size=6)
    slow = make_loaders(spec, loader="tutorial", batch_size=6)
    (xf, yf), (xt, yt) = next(fast.train.batches(0)), next(slow.train.batches(0))
    assert xf.shape == (6, 3, 16, 16) and torch.equal(yf, yt) and torch.allclose(xf, xt)
    assert sorted(yf.tolist()) == [0, 0, 0, 1, 1, 1] and fast.source == "real"


def test_a_missing_imagefolder_is_one_line():
    with pytest.raises(UserError, match="no train/ folder"):
        DATASETS["imagefolder:3x8x8:/nonexistent/folder"]
    with pytest.raises(UserError, match="unknown dataset 'svhn'"):
        DATASETS["svhn"]


def test_a_resolver_name_loads_back_from_results_and_a_path_never_does():
    from bench.report.schema import check_names

    check_names("model", {"model": "torchvision:resnet18"}, "record 0")
    for bad in ("a/b", "torchvision:x:y", "../x", ""):
        with pytest.raises(ValueError, match="must be a model name"):
            check_names("model", {"model": bad}, "record 0")


def test_a_user_model_name_is_a_plain_name(tmp_path, monkeypatch):
    for i, bad in enumerate(("my/net", "torchvision:mine")):
        (tmp_path / f"badname{i}.py").write_text(TINY.format(name=bad))
    monkeypatch.syspath_prepend(str(tmp_path))
    for i in range(2):
        with pytest.raises(UserError, match="use letters, digits"):
            plugins.import_modules([f"badname{i}"])


def test_random_torchvision_logits_are_not_degenerate():
    """torchvision's own random init gives mobilenet_v3_small logits of ~1e-9 and one argmax for every input: the
    agreement and parity figures of a random-weights run would pass whatever a backend computed."""
    torch.manual_seed(0)
    net = zoo.get_model("torchvision:mobilenet_v3_small").eval()
    with torch.no_grad():
        logits = net(torch.randn(8, 3, 224, 224, generator=torch.Generator().manual_seed(5)))
    assert logits.abs().max() > 1e-3  # far above the parity tolerance's rounding
    assert len(set(logits.argmax(1).tolist())) > 1
    assert not net.training and net.pretrained is False


def test_a_torchvision_model_is_counted_on_the_meta_device():
    from bench.model.flops import zoo_flops

    forward, train = zoo_flops("torchvision:mobilenet_v3_small")  # the calibration is skipped there, not failed
    assert 50e6 < forward < train
