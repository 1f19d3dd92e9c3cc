"""A model from outside the zoo, checked once before anything trains or measures it.

The zoo's own models are checked by the test suite (tests/test_models.py); a plugin's (or ``--import``'s) spec and
builder are the user's, so both command lines build each one on the CPU and run a batch of two samples of its
stated input shape: a spec that names no usable data, a builder that raises or returns no module, a forward that
raises or returns anything but (2, num_classes) logits is one UserError line naming the model, and the other models
of the run go on without it.
"""
from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from zoo.errors import UserError
from zoo.registry import ModelSpec, get_spec
from zoo.sources import DATASETS

ZOO_PACKAGE = "zoo."


def is_external(spec: ModelSpec) -> bool:
    """Whether the model's builder comes from outside this project (a plugin, an --import'ed module)."""
    return not getattr(spec.builder, "__module__", "").startswith(ZOO_PACKAGE)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


def check_spec(spec: ModelSpec) -> None:
    shape = spec.input_shape
    if len(shape) != 3 or not all(isinstance(v, int) and v > 0 for v in shape):
        raise UserError(f"model {spec.name!r}: input_shape must be (C, H, W) of positive integers, not {shape!r}")
    if not (isinstance(spec.num_classes, int) and spec.num_classes > 0):
        raise UserError(f"model {spec.name!r}: num_classes must be a positive integer, not {spec.num_classes!r}")
    if spec.recipe.batch_size < 1 or spec.recipe.epochs < 1 or not spec.recipe.lr > 0:
        raise UserError(f"model {spec.name!r}: its recipe needs a positive batch_size, epochs and lr")
    raw = DATASETS[spec.dataset][1]  # an unknown dataset or a missing ImageFolder: a UserError of its own
    tf = spec.recipe.transforms
    channels = raw[0] if raw[0] == shape[0] else (tf.channels if raw[0] == 1 else None)  # Grayscale(3) only
    size = tuple(tf.resize) if tf.resize else raw[1:]
    if (channels, *size) != shape:
        raise UserError(f"model {spec.name!r}: its dataset {spec.dataset} ({'x'.join(map(str, raw))} images) with its "
                        f"recipe's transforms ({tf.describe()}) does not give its input_shape {shape}")


def check_model(name: str) -> None:
    """UserError (one line) unless ``name`` builds and maps a (2, C, H, W) batch to (2, num_classes) logits."""
    spec = get_spec(name)
    check_spec(spec)
    torch.manual_seed(0)
    try:
        model = spec.builder(**({"pretrained": "off"} if spec.uses_pretrained else {}))
    except UserError as exc:
        raise UserError(f"model {name!r}: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - the builder is the user's code: its error is one line
        raise UserError(f"model {name!r}: its builder raised {_first_line(exc)}") from None
    if not isinstance(model, nn.Module):
        raise UserError(f"model {name!r}: its builder returned {type(model).__name__}, not a torch.nn.Module")
    batch = (2, *spec.input_shape)
    try:
        with torch.no_grad():
            out = model.eval()(torch.zeros(batch))
    except Exception as exc:  # noqa: BLE001 - a forward that cannot take the stated input shape
        raise UserError(f"model {name!r}: a batch of its input_shape {batch} fails in forward: "
                        f"{_first_line(exc)}") from None
    got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
    if got != (2, spec.num_classes):
        raise UserError(f"model {name!r}: maps its input_shape {batch} to {got}, not (2, {spec.num_classes}) logits "
                        f"(N, num_classes)")


def check_models(names: Iterable[str]) -> tuple[list[str], list[str]]:
    """(the names that pass, one error line per name that does not); only models from outside the zoo are built."""
    good, errors = [], []
    for name in names:
        try:
            if is_external(get_spec(name)):
                check_model(name)
            good.append(name)
        except UserError as exc:
            errors.append(str(exc))
    return good, errors
