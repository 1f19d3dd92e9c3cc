"""Every registered model: builds, maps its input shape to 10 logits, matches its tutorial layer by layer, trains."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import zoo
from zoo.engine import StepOptions, build_optimizer, train_step
from zoo.errors import UserError

CPU = torch.device("cpu")
SMALL = ("mlp", "lenet", "cifar_cnn")
ALEXNETS = ("alexnet_mnist", "alexnet_transfer", "alexnet_finetune")


def build(name: str) -> nn.Module:
    torch.manual_seed(0)
    kw = {"pretrained": "off"} if zoo.get_spec(name).uses_pretrained else {}
    return zoo.get_model(name, **kw)


def sig(m: nn.Module) -> tuple:
    """A layer's type and the hyper-parameters that define it."""
    if isinstance(m, nn.Conv2d):
        return ("Conv2d", m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding)
    if isinstance(m, nn.Linear):
        return ("Linear", m.in_features, m.out_features)
    if isinstance(m, nn.MaxPool2d):
        return ("MaxPool2d", m.kernel_size, m.stride)
    if isinstance(m, nn.AdaptiveAvgPool2d):
        return ("AdaptiveAvgPool2d", tuple(m.output_size))
    if isinstance(m, nn.Dropout):
        return ("Dropout", m.p)
    return (type(m).__name__,)


def sigs(seq: nn.Module) -> list[tuple]:
    return [sig(m) for m in seq.children()]


def n_params(*layers: tuple) -> int:
    """Weights + biases of Conv/Linear signatures as written above."""
    total = 0
    for s in layers:
        if s[0] == "Conv2d":
            total += s[1] * s[2] * s[3][0] * s[3][1] + s[2]
        elif s[0] == "Linear":
            total += s[1] * s[2] + s[2]
    return total


# torchvision's AlexNet feature extractor (the tutorials load it through torchvision.models.alexnet).
ALEXNET_FEATURES = [
    ("Conv2d", 3, 64, (11, 11), (4, 4), (2, 2)), ("ReLU",), ("MaxPool2d", 3, 2),
    ("Conv2d", 64, 192, (5, 5), (1, 1), (2, 2)), ("ReLU",), ("MaxPool2d", 3, 2),
    ("Conv2d", 192, 384, (3, 3), (1, 1), (1, 1)), ("ReLU",),
    ("Conv2d", 384, 256, (3, 3), (1, 1), (1, 1)), ("ReLU",),
    ("Conv2d", 256, 256, (3, 3), (1, 1), (1, 1)), ("ReLU",), ("MaxPool2d", 3, 2),
]


def test_registry_lists_the_six_tutorial_models():
    assert zoo.list_models() == ["mlp", "lenet", "cifar_cnn", "alexnet_mnist", "alexnet_transfer", "alexnet_finetune"]
    for name in zoo.list_models():
        spec = zoo.get_spec(name)
        assert spec.name == name and spec.num_classes == 10
        assert spec.as_dict()["recipe"]["batch_size"] == spec.recipe.batch_size and "builder" not in spec.as_dict()


def test_unknown_model_message_lists_choices():
    with pytest.raises(UserError) as info:  # a UserError: the CLI prints it as one line
        zoo.get_spec("resnet")
    assert isinstance(info.value, KeyError)  # and still a KeyError for code that looks names up
    assert "resnet" in str(info.value) and "lenet" in str(info.value) and "alexnet_finetune" in str(info.value)


@pytest.mark.parametrize("name", zoo.list_models())
def test_forward_maps_input_shape_to_logits(name):
    model = build(name).eval()
    spec = zoo.get_spec(name)
    with torch.no_grad():
        out = model(torch.rand(3, *spec.input_shape))
    assert out.shape == (3, 10) and out.dtype == torch.float32 and torch.isfinite(out).all()


def test_mlp_architecture():
    m = build("mlp")
    layers = sigs(m.linear_relu_stack)
    assert layers == [("Linear", 784, 512), ("ReLU",), ("Linear", 512, 512), ("ReLU",), ("Linear", 512, 10)]
    assert zoo.count_parameters(m) == (n_params(*layers), n_params(*layers)) == (669_706, 669_706)


def test_lenet_architecture():
    m = build("lenet")
    layers = [sig(m.conv1), sig(m.pool1), sig(m.conv2), sig(m.pool2), sig(m.fc1), sig(m.fc2)]
    assert layers == [("Conv2d", 1, 16, (5, 5), (1, 1), (2, 2)), ("MaxPool2d", 2, 2),
                      ("Conv2d", 16, 32, (5, 5), (1, 1), (2, 2)), ("MaxPool2d", 2, 2),
                      ("Linear", 1568, 128), ("Linear", 128, 10)]
    assert zoo.count_parameters(m) == (n_params(*layers),) * 2 == (215_370, 215_370)


def test_cifar_cnn_architecture():
    m = build("cifar_cnn")
    layers = sigs(m.module1)
    # The tutorial's MyModule has no activation anywhere: kept as written.
    assert layers == [("Conv2d", 3, 32, (5, 5), (1, 1), (2, 2)), ("MaxPool2d", 2, 2),
                      ("Conv2d", 32, 32, (5, 5), (1, 1), (2, 2)), ("MaxPool2d", 2, 2),
                      ("Conv2d", 32, 64, (5, 5), (1, 1), (2, 2)), ("MaxPool2d", 2, 2),
                      ("Flatten",), ("Linear", 1024, 64), ("Linear", 64, 10)]
    assert zoo.count_parameters(m) == (n_params(*layers),) * 2 == (145_578, 145_578)


NEW_CLASSIFIER = [("Linear", 9216, 4096), ("ReLU",), ("Dropout", 0.5), ("Linear", 4096, 4096), ("ReLU",),
                  ("Dropout", 0.5), ("Linear", 4096, 10)]


def test_alexnet_mnist_architecture():
    m = build("alexnet_mnist")
    assert m.pretrained is False
    assert sigs(m.net.features) == ALEXNET_FEATURES
    assert sig(m.net.avgpool) == ("AdaptiveAvgPool2d", (6, 6))
    classifier = sigs(m.net.classifier)
    assert classifier == [("Dropout", 0.3), ("Linear", 9216, 4096), ("ReLU",), ("Dropout", 0.3),
                          ("Linear", 4096, 4096), ("ReLU",), ("Linear", 4096, 10)]
    total = n_params(*ALEXNET_FEATURES, *classifier)
    assert zoo.count_parameters(m) == (total, total) == (57_044_810, 57_044_810)  # nothing frozen in MyAlexNet


def test_alexnet_transfer_architecture():
    m = build("alexnet_transfer")
    assert m.pretrained is False
    layers = sigs(m)
    assert layers[0] == ("Sequential",) and sigs(m[0]) == ALEXNET_FEATURES
    assert layers[1:] == [("AdaptiveAvgPool2d", (6, 6)), ("Flatten",), ("Dropout", 0.5), ("Linear", 9216, 10)]
    assert all(not p.requires_grad for p in m[0].parameters())
    total, trainable = zoo.count_parameters(m)
    assert (total, trainable) == (n_params(*ALEXNET_FEATURES) + 92_170, 92_170)
    assert trainable < total


def test_alexnet_finetune_architecture():
    m = build("alexnet_finetune")
    assert m.pretrained is False
    assert sigs(m.features) == ALEXNET_FEATURES
    assert sig(m.avgpool) == ("AdaptiveAvgPool2d", (6, 6))
    assert sigs(m.classifier) == NEW_CLASSIFIER
    # Every pretrained parameter is frozen; exactly the new classifier trains.
    assert all(not p.requires_grad for p in m.features.parameters())
    assert all(p.requires_grad for p in m.classifier.parameters())
    total, trainable = zoo.count_parameters(m)
    assert trainable == n_params(*NEW_CLASSIFIER) == 54_575_114
    assert total == n_params(*ALEXNET_FEATURES) + trainable and trainable < total


@pytest.mark.parametrize("name", SMALL)
def test_small_models_learn_a_fixed_batch(name):
    """Ten steps of the recipe's optimizer on one batch lower its loss: gradients flow to every layer."""
    spec = zoo.get_spec(name)
    model = build(name).train()
    g = torch.Generator().manual_seed(1)
    x, y = torch.rand(32, *spec.input_shape, generator=g), torch.randint(0, 10, (32,), generator=g)
    opt = build_optimizer(spec.recipe, model)
    assert type(opt).__name__.lower() == spec.recipe.optimizer
    assert opt.param_groups[0]["lr"] == spec.recipe.lr
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opts = StepOptions(CPU)
    losses = [train_step(model, opt, x, y, opts).item() for _ in range(10)]
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < losses[0], losses
    for k, v in model.state_dict().items():
        assert not torch.equal(v, before[k]), f"{k} did not change"


@pytest.mark.parametrize("name", ALEXNETS)
def test_alexnets_take_training_steps_and_frozen_parts_stay(name):
    spec = zoo.get_spec(name)
    model = build(name).train()
    opt = build_optimizer(spec.recipe, model)
    in_opt = {id(p) for group in opt.param_groups for p in group["params"]}
    params = dict(model.named_parameters())
    assert in_opt == {id(p) for p in params.values() if p.requires_grad}  # frozen ones are not even handed over
    before = {k: p.detach().clone() for k, p in params.items()}
    g = torch.Generator().manual_seed(2)
    x, y = torch.rand(4, *spec.input_shape, generator=g), torch.randint(0, 10, (4,), generator=g)
    opts = StepOptions(CPU)
    for _ in range(2):
        loss = train_step(model, opt, x, y, opts)
        assert torch.isfinite(loss)
    for k, p in params.items():
        changed = not torch.equal(p.detach(), before[k])
        assert changed == p.requires_grad, f"{k}: requires_grad={p.requires_grad} but changed={changed}"
