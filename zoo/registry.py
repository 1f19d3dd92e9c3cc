"""The model registry: a name maps to a plain-data spec and a builder.

Shaped after timm's ``register_model`` / ``create_model`` / ``list_models``: one decorator per model file, and
everything else (the training loop, the data path, the benchmarks) reads the spec instead of re-stating it.
"""
from __future__ import annotations

import dataclasses
import os
import re
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
    dataset: str  # "mnist" | "fashionmnist" | "cifar10" | "synthetic" (of input_shape) | "imagefolder:PATH"
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
NAME = re.compile(r"^(?=.{1,100}$)[A-Za-z0-9_.\-]+(:[A-Za-z0-9_.\-]+)?$")  # as results files load them back
# "PREFIX:NAME" -> a function that registers NAME's spec on first request (e.g. torchvision:resnet18): a family of
# models too large to register up front.
_RESOLVERS: dict[str, Callable[[str], None]] = {}
_RESOLVED: set[str] = set()  # names a resolver registered on request: looked up by name, never listed
_RESOLVING: set[str] = set()  # names a resolver is registering now (only it may use its prefix)
_PLUGINS = {"state": "unloaded"}  # unloaded | loading | loaded: the entry points are imported once, on first use


class ModelNameClash(UserError, ValueError):
    """A model name registered twice (ValueError as before, a UserError because a plugin author can cause it)."""


def ensure_plugins() -> None:
    """Import the entry points' model modules (the zoo's own first) once, before any name is looked up or added."""
    if _PLUGINS["state"] != "unloaded":
        return
    from zoo.plugins import load_entry_points

    _PLUGINS["state"] = "loading"
    try:
        load_entry_points()
    except BaseException:
        _PLUGINS["state"] = "unloaded"  # tried again (and reported again) on the next lookup
        raise
    _PLUGINS["state"] = "loaded"


def register_model(spec: ModelSpec) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator for a model file's builder: ``@register_model(ModelSpec(...))``. A module imported before the zoo's
    own (a script's ``import mymodels``) waits for them, so a clash is always reported against the later module."""

    def wrap(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if not getattr(fn, "__module__", "").startswith("zoo."):  # the zoo's own may register while it is imported
            ensure_plugins()
        if not NAME.match(spec.name) or (":" in spec.name and spec.name not in _RESOLVING):
            raise UserError(f"model name {spec.name!r}: use letters, digits, _ . - (it names files and table rows)")
        if spec.name in _REGISTRY:
            first = _REGISTRY[spec.name].builder
            raise ModelNameClash(f"model {spec.name!r} is already registered (by {getattr(first, '__module__', '?')}); "
                                 f"choose another name")
        _REGISTRY[spec.name] = dataclasses.replace(spec, dataset=normalized_dataset(spec), builder=fn)
        return fn

    return wrap


def register_resolver(prefix: str, resolve: Callable[[str], None]) -> None:
    """``resolve("PREFIX:NAME")`` registers that model (or raises UnknownModelError); called on first lookup."""
    _RESOLVERS[prefix] = resolve


def normalized_dataset(spec: ModelSpec) -> str:
    """The dataset string with what the data module needs to read it: ``synthetic`` becomes ``synthetic:CxHxW`` (the
    input shape it stands for) and ``imagefolder:PATH`` becomes ``imagefolder:CxHxW:ABSPATH`` (the size each image
    is decoded to, and a path that no longer depends on the working folder)."""
    shape = "x".join(map(str, spec.input_shape))
    kind, _, rest = spec.dataset.partition(":")
    if spec.dataset == "synthetic":
        return f"synthetic:{shape}"
    if kind == "imagefolder" and rest and not rest.split(":")[0].replace("x", "").isdigit():
        return f"imagefolder:{shape}:{os.path.abspath(os.path.expanduser(rest))}"
    return spec.dataset


def list_models() -> list[str]:
    """Every model the plugins registered, in the order they register them (the zoo's own first); names a resolver
    made on request (``torchvision:resnet18``) are not listed: ``--models all`` means the same models every time."""
    ensure_plugins()
    return [name for name in _REGISTRY if name not in _RESOLVED]


def get_spec(name: str) -> ModelSpec:
    ensure_plugins()
    if name not in _REGISTRY and name.split(":")[0] in _RESOLVERS and ":" in name:
        _RESOLVING.add(name)
        try:
            _RESOLVERS[name.split(":")[0]](name)
            _RESOLVED.add(name)
        finally:
            _RESOLVING.discard(name)
    try:
        return _REGISTRY[name]
    except KeyError:
        forms = "".join(f", {p}:NAME" for p in _RESOLVERS)
        raise UnknownModelError(f"unknown model {name!r}; choose from: {', '.join(list_models())}{forms}") from None


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
