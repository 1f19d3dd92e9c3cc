"""The one FLOP counter: ``torch.utils.flop_counter`` over a model's forward (and, for training, its backward),
per sample. The driver counts every zoo model once on the meta device (no memory, no weights); a phase that holds a
model the driver could not count (a copy on another device, a tuned variant) counts that model the same way."""
from __future__ import annotations

import functools

import torch
from torch.utils.flop_counter import FlopCounterMode

import zoo


def count_flops(model: torch.nn.Module, x: torch.Tensor, *, train: bool) -> float:
    """FLOPs per sample of ``model(x)``, plus its backward when ``train`` (frozen layers get no weight gradients, as
    in training); the model is left in train or eval mode accordingly."""
    model.train(train)
    with FlopCounterMode(display=False) as counter:
        if train:
            model(x).sum().backward()
        else:
            with torch.no_grad():
                model(x)
    return counter.get_total_flops() / x.shape[0]


def build_untrained(name: str) -> torch.nn.Module:
    """The zoo model with random init, never a download: weights come from a checkpoint or the recorded seed."""
    spec = zoo.get_spec(name)
    return zoo.get_model(name, **({"pretrained": "off"} if spec.uses_pretrained else {}))


@functools.cache
def zoo_flops(name: str) -> tuple[float, float]:
    """(forward, forward + backward) FLOPs of one sample of zoo model ``name``, counted on the meta device over a
    batch of 2."""
    with torch.device("meta"):
        model = build_untrained(name)
        x = torch.empty(2, *zoo.get_spec(name).input_shape)
    return count_flops(model, x, train=False), count_flops(model, x, train=True)
