"""The datasets a spec can name: the zoo's three torchvision datasets, synthetic data of any input shape, and a user's
ImageFolder.

``DATASETS[name]`` is ``(torchvision class, raw (C, H, W), (train size, test size), folder under the root)`` for
every one of them, so whatever reads a spec's dataset (the loaders, the bench's sample counts) reads one table:

- ``mnist`` | ``fashionmnist`` | ``cifar10``: torchvision's, under ``--data-root``.
- ``synthetic:CxHxW``: only ever synthetic (a model from outside the zoo without data of its own; ``register_model``
  turns a spec's ``synthetic`` into this form from its input shape). Its split sizes keep a split near
  SYNTHETIC_SPLIT_BYTES of uint8, within the MNIST sizes.
- ``imagefolder:CxHxW:PATH``: ``PATH/train/<class>/*`` and ``PATH/val/<class>/*`` (``test/`` also accepted), read by
  torchvision's ImageFolder, each image converted to C channels and resized to H x W once, where it is decoded.
"""
from __future__ import annotations

import os
from functools import cached_property

import numpy as np
import torchvision
from PIL import Image
from torch.utils.data import Dataset

from zoo.errors import UserError

ZOO_DATASETS = {
    "mnist": (torchvision.datasets.MNIST, (1, 28, 28), (60000, 10000), "MNIST/raw"),
    "fashionmnist": (torchvision.datasets.FashionMNIST, (1, 28, 28), (60000, 10000), "FashionMNIST/raw"),
    "cifar10": (torchvision.datasets.CIFAR10, (3, 32, 32), (50000, 10000), "cifar-10-batches-py"),
}
SYNTHETIC_SPLIT_BYTES = 256 << 20  # a 3x224x224 train split: 1783 samples (test: a fifth), 256 MiB of uint8
TEST_SPLITS = ("val", "test")


def parse_shape(text: str, dataset: str) -> tuple[int, int, int]:
    try:
        c, h, w = (int(v) for v in text.split("x"))
    except ValueError:
        raise UserError(f"dataset {dataset!r}: {text!r} is not an input shape CxHxW, e.g. 3x224x224") from None
    if min(c, h, w) < 1:
        raise UserError(f"dataset {dataset!r}: every dimension of {text!r} must be positive")
    return c, h, w


def synthetic_sizes(shape: tuple[int, int, int]) -> tuple[int, int]:
    per_sample = shape[0] * shape[1] * shape[2]
    train = max(256, min(60000, SYNTHETIC_SPLIT_BYTES // per_sample))
    return train, max(64, min(10000, train // 5))


def folder_split(root: str, train: bool) -> str:
    """``root/train``, or the first of ``root/val``, ``root/test`` that exists."""
    names = ("train",) if train else TEST_SPLITS
    for name in names:
        if os.path.isdir(os.path.join(root, name)):
            return os.path.join(root, name)
    raise UserError(f"ImageFolder {root}: no {' or '.join(n + '/' for n in names)} folder of class subfolders")


class FolderImages(Dataset):
    """One split of an ImageFolder, each image converted to ``shape``'s channels and size when it is decoded.

    Like torchvision's datasets it returns (PIL image, label) and has ``data`` (N x H x W [x C] uint8, decoded once,
    on first use) and ``targets``, so both loader paths read it as they read MNIST.
    """

    def __init__(self, root: str, train: bool, shape: tuple[int, int, int], transform=None):
        try:
            self.folder = torchvision.datasets.ImageFolder(folder_split(root, train))
        except (FileNotFoundError, OSError) as exc:  # no class folders, or no image in them
            raise UserError(f"ImageFolder {root}: {str(exc).splitlines()[0]}") from None
        self.shape, self.transform = shape, transform
        self.targets = [label for _, label in self.folder.samples]

    def __len__(self) -> int:
        return len(self.targets)

    def image(self, i: int) -> Image.Image:
        c, h, w = self.shape
        path = self.folder.samples[i][0]
        try:
            img = self.folder.loader(path)
        except OSError as exc:
            raise UserError(f"cannot read image {path}: {exc}") from None
        return img.convert("L" if c == 1 else "RGB").resize((w, h), Image.BILINEAR)

    @cached_property
    def data(self) -> np.ndarray:
        return np.stack([np.asarray(self.image(i)) for i in range(len(self))])

    def __getitem__(self, i):
        img = self.image(i)
        return (self.transform(img) if self.transform is not None else img), self.targets[i]


def folder_sizes(root: str, shape: tuple[int, int, int]) -> tuple[int, int]:
    return len(FolderImages(root, True, shape)), len(FolderImages(root, False, shape))


class DatasetTable(dict):
    """The zoo's datasets, plus an entry made on first lookup for every synthetic / ImageFolder name."""

    def __missing__(self, name: str):
        kind, _, rest = name.partition(":")
        if kind == "synthetic" and rest:
            shape = parse_shape(rest, name)
            entry = (None, shape, synthetic_sizes(shape), None)
        elif kind == "imagefolder" and rest.count(":") >= 1:
            text, _, root = rest.partition(":")
            shape = parse_shape(text, name)
            entry = (FolderImages, shape, folder_sizes(root, shape), root)
        else:
            choices = ", ".join([*ZOO_DATASETS, "synthetic (of the input shape)", "imagefolder:PATH"])
            raise UserError(f"unknown dataset {name!r}; choose from: {choices}")
        self[name] = entry
        return entry


def dataset_kind(name: str) -> str:
    """``zoo`` | ``synthetic`` | ``imagefolder``."""
    return name.partition(":")[0] if ":" in name else "zoo"


DATASETS = DatasetTable(ZOO_DATASETS)
