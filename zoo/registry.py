"""The model registry: a name maps to a plain-data spec and a builder.

Shaped after timm's ``register_model`` / ``create_model`` / ``list_models``: one decorator per model file, and
everything else (the training loop, the data path, the benchmarks) reads the spec instead of re-stating it.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable

import torch.nn as nn

from zoo.errors import UserError


class UnknownModelError(UserError, KeyError):
    """Raised for a model name that is not registered; its message lists the choices."""

    def __str__(self) -> str:  # KeyError would wrap the message in quotes
        return str(self.args[0])


@dataclass(frozen=True)
class Transforms:
    """How a raw uint8 image becomes the model's input, as the tutorial's ``transforms.Compose`` does it."""

    resize: tuple[int, int] | None = None  # (H, W) after transforms.Resize, bilinear
    channels: int = 1  # transforms.Grayscale(num_output_channels=3) when 3 and the data is 1-channel
    mean: tuple[float, ...] = (0.0,)  # transforms.Normalize; (0.0,) / (1.0,) means ToTensor only
    std: tuple[float, ...] = (1.0,)

    def describe(self) -> str:
        steps = []
        if self.resize:
            steps.append(f"Resize{tuple(self.resize)}")
        if self.channels == 3:
            steps.append("Grayscale(3)")
        steps.append("ToTensor")
        if any(m != 0.0 for m in self.mean) or any(s != 1.0 for s in self.std):
            steps.append(f"Normalize({self.mean[0]:g}, {self.std[0]:g})")
        return " > ".join(steps)


@dataclass(frozen=True)
class Recipe:
    """The tutorial's training recipe. ``epochs`` and ``batch_size`` are the tutorial's own numbers."""

    optimizer: str  # "sgd" | "adamw"
    lr: float
    batch_size: int
    epochs: int
    momentum: float = 0.0
    weight_decay: float = 0.0
    transforms: Transforms = field(default_factory=Transforms)
    drop_last: bool = False
    eval_batch_size: int = 1024


@dataclass(frozen=True)
class TutorialLoop:
    """What the tutorial's own training loop does besides the maths (bench's tutorial_loop row re-enacts it)."""

    shuffle: bool = True  # DataLoader(shuffle=...)
    drop_last: bool = False
    pin_memory: bool = False
    loss_item_every: int = 1  # loss.item() (or .cpu().item()) every N steps; 0 = never
    acc_item_every: int = 0  # accuracy read to the host every N steps; 0 = never
    print_every: int = 0  # prints a progress line every N steps; 0 = never
    tensorboard_every: int = 0  # SummaryWriter.add_scalar of loss.item() every N steps; 0 = never
    default_optimizer: bool = True  # constructs the optimizer with PyTorch defaults (no fused kernel)


@dataclass(frozen=True)
class ModelSpec:
    name: str
    dataset: str  # "mnist" | "fashionmnist" | "cifar10"
    input_shape: tuple[int, int, int]  # (C, H, W) as the model consumes it, after the transforms
    num_classes: int
    recipe: Recipe
    source: str  # which tutorial and which section
    description: str
    uses_pretrained: bool = False  # ImageNet weights for the feature extractor when they are available
    tutorial_loop: TutorialLoop = field(default_factory=TutorialLoop)
    builder: Callable[..., nn.Module] | None = field(default=None, repr=False, compare=False)

    def as_dict(self) -> dict[str, Any]:
        """Plain data (no builder): what goes into checkpoints and result files."""
        d = dataclasses.asdict(dataclasses.replace(self, builder=None))
        d.pop("builder")
        return d


_REGISTRY: dict[str, ModelSpec] = {}


def register_model(spec: ModelSpec) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator for a model file's builder: ``@register_model(ModelSpec(...))``."""

    def wrap(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if spec.name in _REGISTRY:
            raise ValueError(f"model {spec.name!r} registered twice")
        _REGISTRY[spec.name] = dataclasses.replace(spec, builder=fn)
        return fn

    return wrap


def list_models() -> list[str]:
    """Every registered model name, in the order the model files register them."""
    return list(_REGISTRY)


def get_spec(name: str) -> ModelSpec:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownModelError(f"unknown model {name!r}; choose from: {', '.join(list_models())}") from None


def get_model(name: str, **overrides: Any) -> nn.Module:
    """Build a fresh model. Overrides go to the builder (e.g. ``pretrained=False``, ``weights_path=...``)."""
    spec = get_spec(name)
    assert spec.builder is not None
    return spec.builder(**overrides)


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(total, trainable) parameter counts."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return total, trainable
