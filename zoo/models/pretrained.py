"""ImageNet weights for the AlexNet models, through torchvision's weights API, never silently.

Order of sources: an explicit ``weights_path``; the file torchvision would download, when it is already in the torch
hub cache (``$TORCH_HOME/hub/checkpoints/``); a download when ``download=True``. With none of them, ``mode="auto"``
logs one line saying where to put the file and returns None (random init, recorded as ``pretrained: false``);
``mode="require"`` raises a UserError instead.
"""
from __future__ import annotations

import logging
import os

import torch
from torchvision.models import AlexNet_Weights

from zoo.errors import UserError

log = logging.getLogger("zoo")

WEIGHTS = AlexNet_Weights.IMAGENET1K_V1
MODES = ("auto", "require", "off")


def cached_weights_path() -> str:
    """Where torchvision keeps (and looks for) the downloaded AlexNet ImageNet weights."""
    filename = os.path.basename(WEIGHTS.url)
    return os.path.join(torch.hub.get_dir(), "checkpoints", filename)


def _load_file(path: str) -> dict:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # any unreadable or unsafe file is the user's to fix
        raise UserError(f"cannot read pretrained weights {path}: {type(exc).__name__}: {str(exc).splitlines()[0]}") from None
    if not isinstance(state, dict) or "features.0.weight" not in state:
        raise UserError(f"{path} is not an AlexNet state_dict (no 'features.0.weight')")
    return state


def load_alexnet_imagenet(mode: str = "auto", weights_path: str | None = None, download: bool = False) -> dict | None:
    """The ImageNet AlexNet state_dict, or None when unavailable and ``mode`` allows going on without it."""
    if mode not in MODES:
        raise UserError(f"pretrained must be one of {', '.join(MODES)}, not {mode!r}")
    if mode == "off":
        return None
    if weights_path:
        if not os.path.isfile(weights_path):
            raise UserError(f"weights file {weights_path} does not exist")
        return _load_file(weights_path)
    cached = cached_weights_path()
    if os.path.isfile(cached):
        return _load_file(cached)
    if download:
        try:
            WEIGHTS.get_state_dict(progress=True)  # downloads into the hub cache
        except Exception as exc:
            msg = f"could not download AlexNet ImageNet weights ({type(exc).__name__}); place {os.path.basename(cached)} at {cached} or pass --weights PATH"
            if mode == "require":
                raise UserError(msg) from None
            log.warning("%s; continuing with random init (pretrained: false)", msg)
            return None
        return _load_file(cached)
    msg = f"AlexNet ImageNet weights not found at {cached}; put {os.path.basename(cached)} there, pass --weights PATH, or --download"
    if mode == "require":
        raise UserError(msg)
    log.warning("%s; continuing with random init (pretrained: false)", msg)
    return None


def alexnet_backbone(pretrained: str = "auto", weights_path: str | None = None, download: bool = False,
                     dropout: float = 0.5) -> torch.nn.Module:
    """torchvision's AlexNet with ImageNet weights when available; ``model.pretrained`` says which it got."""
    from torchvision.models import alexnet

    net = alexnet(weights=None, dropout=dropout)
    state = load_alexnet_imagenet(pretrained, weights_path, download)
    if state is not None:
        try:
            net.load_state_dict(state)
        except RuntimeError as exc:
            raise UserError(f"pretrained weights do not fit torchvision's AlexNet: {str(exc).splitlines()[0]}") from None
    net.pretrained = state is not None
    return net
