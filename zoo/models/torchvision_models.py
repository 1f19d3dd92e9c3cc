"""Any torchvision classifier by name: ``torchvision:resnet18`` is ``torchvision.models.get_model("resnet18")``.

Registered on first lookup (80 classifiers are too many to build specs for up front). The spec states:

- input: (3, crop, crop) at the crop size of the model's DEFAULT weights' transforms (224 for most, 299 for
  inception_v3, 384/518 for some ViTs), 1000 classes (the weights' categories);
- data: synthetic images of that shape (``synthetic:3xHxW``), normalised with the weights' mean and std;
- recipe: torchvision's references/classification/train.py defaults (SGD lr 0.1, momentum 0.9, weight decay 1e-4,
  batch 32, 90 epochs), eval batch 64; its tutorial_loop row is the plain PyTorch loop (a DataLoader, shuffled,
  ``loss.item()`` every step);
- weights: random init (BatchNorm statistics from one batch of N(0, 1) inputs: see calibrate_batchnorm), or
  torchvision's weights when they are in the torch hub cache or given with
  ``--weights PATH`` (``--pretrained auto|require|off``, as for the AlexNet models); the bench always measures
  random init or a checkpoint of ``python -m zoo.train``.
"""
from __future__ import annotations

import logging
import os

import torch
import torchvision.models as tvm
from torch import nn

from zoo.errors import UserError
from zoo.registry import ModelSpec, Recipe, Transforms, UnknownModelError, register_model, register_resolver

log = logging.getLogger("zoo")
PREFIX = "torchvision"
CALIBRATION_SAMPLES = 8
REFERENCE_RECIPE = Recipe(optimizer="sgd", lr=0.1, momentum=0.9, weight_decay=1e-4, batch_size=32, epochs=90,
                          eval_batch_size=64)


def classifiers() -> list[str]:
    return tvm.list_models(module=tvm)


def weights_file(arch: str, pretrained: str, weights_path: str | None, download: bool) -> str | None:
    """The weights file to load, or None for random init (said in one log line when weights were wanted)."""
    if pretrained == "off":
        return None
    if weights_path:
        if not os.path.isfile(weights_path):
            raise UserError(f"weights file {weights_path} does not exist")
        return weights_path
    weights = tvm.get_model_weights(arch).DEFAULT
    cached = os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(weights.url))
    if not os.path.isfile(cached) and download:
        try:
            weights.get_state_dict(progress=True)  # downloads into the hub cache
        except Exception as exc:  # noqa: BLE001 - a failed download is the same as a missing file below
            log.warning("could not download %s (%s)", weights.url, type(exc).__name__)
    if os.path.isfile(cached):
        return cached
    msg = f"{arch} weights not found at {cached}; put {os.path.basename(cached)} there, pass --weights PATH, or --download"
    if pretrained == "require":
        raise UserError(msg)
    log.warning("%s; continuing with random init (pretrained: false)", msg)
    return None


def calibrate_batchnorm(model: nn.Module, input_shape: tuple[int, int, int]) -> None:
    """BatchNorm running statistics from one seeded batch of CALIBRATION_SAMPLES N(0, 1) inputs, in train mode.

    Why: torchvision's init leaves running mean 0 / var 1, so eval mode scales nothing, and in deep nets with small
    head init the activations vanish: random-init mobilenet_v3_small gives logits of ~1e-9, the same argmax for every
    input, which would make every backend's agreement 100% and ONNX parity pass by default. With the batch's
    statistics its logits are ~1e-2 and the argmax varies. Weights stay torchvision's random init; the global RNG is
    left as it was (a local generator draws the batch).
    """
    norms = [m for m in model.modules() if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d))]
    device = next(model.parameters()).device
    if not norms or device.type == "meta":  # a model built on the meta device (FLOP counts) has no values to set
        return
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average: one batch's statistics exactly
    x = torch.randn(CALIBRATION_SAMPLES, *input_shape, generator=torch.Generator().manual_seed(0),
                    device="cpu").to(device)
    was_training = model.training
    with torch.no_grad():
        model.train()(x)
    for m in norms:
        m.momentum = 0.1  # torchvision's default, for whoever trains it next
    model.train(was_training)


def build(arch: str, input_shape: tuple[int, int, int], pretrained: str = "off", weights_path: str | None = None,
          download: bool = False) -> nn.Module:
    model = tvm.get_model(arch, weights=None)
    path = weights_file(arch, pretrained, weights_path, download)
    if path is None:
        calibrate_batchnorm(model, input_shape)
    else:
        try:
            model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        except Exception as exc:  # noqa: BLE001 - an unreadable or mismatched file is the user's to fix
            raise UserError(f"cannot load {path} into torchvision's {arch}: {type(exc).__name__}: "
                            f"{str(exc).splitlines()[0]}") from None
    model.pretrained = path is not None
    return model


def spec_for(name: str, arch: str) -> ModelSpec:
    weights = tvm.get_model_weights(arch).DEFAULT
    preset = weights.transforms()  # ImageClassification: crop_size, mean, std of the weights' evaluation
    crop = int(preset.crop_size[0])
    return ModelSpec(
        name=name, dataset="synthetic", input_shape=(3, crop, crop), num_classes=len(weights.meta["categories"]),
        recipe=Recipe(**{**REFERENCE_RECIPE.__dict__,
                         "transforms": Transforms(channels=3, mean=tuple(preset.mean), std=tuple(preset.std))}),
        source=f"torchvision.models.{arch} (recipe: torchvision references/classification/train.py defaults)",
        description=f"torchvision {arch}, input from {weights} transforms", uses_pretrained=True)


def resolve(name: str) -> None:
    arch = name.split(":", 1)[1]
    if arch not in classifiers():
        raise UnknownModelError(f"unknown model {name!r}: {arch!r} is not a torchvision classifier; choose from "
                                f"torchvision.models.list_models(module=torchvision.models): {', '.join(classifiers())}")

    spec = spec_for(name, arch)

    def builder(pretrained: str = "off", weights_path: str | None = None, download: bool = False) -> nn.Module:
        return build(arch, spec.input_shape, pretrained, weights_path, download)

    register_model(spec)(builder)


register_resolver(PREFIX, resolve)
