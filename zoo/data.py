"""Datasets (real through torchvision, or synthetic) and the two loader paths that feed the shared loop.

``tutorial``: a torchvision Dataset with per-sample PIL transforms and a DataLoader, exactly as the tutorials do it.
``fast``: the split decoded once into a uint8 tensor on the training device, the recipe's transforms applied batched
on the device (once for the whole split when it fits ``precompute_bytes``, else per batch), a seeded permutation per
epoch, batches by indexing. Both paths visit the same samples in the same order for a given (seed, epoch).
"""
from __future__ import annotations

import itertools
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Sampler, Subset
from torchvision import transforms as T

from zoo.errors import UserError
from zoo.idx import IDX_DATASETS, INSTALL_HINT, check_folder
from zoo.registry import ModelSpec, Transforms
from zoo.sources import DATASETS, FolderImages, dataset_kind

LOADERS = ("fast", "tutorial")


# ---------------------------------------------------------------------------------------------------------------
# Datasets


class SyntheticImages(Dataset):
    """A deterministic, learnable stand-in with the real dataset's shapes, for offline runs.

    Each class has a fixed smooth template (coarse noise upsampled); a sample is its class template, shifted by up
    to 2 pixels, scaled in contrast, plus pixel noise, stored as uint8 like the real data. Train and test share
    templates and differ in their noise. It returns PIL images like torchvision's datasets, so the tutorial path
    applies the very same transforms to it.
    """

    def __init__(self, dataset: str, train: bool, size: int | None = None, num_classes: int = 10,
                 transform=None):
        _, (c, h, w), sizes, _ = DATASETS[dataset]  # an unknown name: a UserError naming the choices
        n = sizes[0 if train else 1] if size is None else size
        base = sum(dataset.encode()) * 1000
        g = torch.Generator().manual_seed(base)
        coarse = torch.rand(num_classes, c, max(h // 4, 2), max(w // 4, 2), generator=g)
        g = torch.Generator().manual_seed(base + (1 if train else 2))
        labels = torch.randint(0, num_classes, (n,), generator=g)
        contrast = 0.6 + 0.8 * torch.rand(n, 1, 1, 1, generator=g)
        shifts = torch.randint(-2, 3, (n, 2), generator=g)
        images = torch.empty(n, c, h, w, dtype=torch.uint8)
        chunk = max(1, min(8192, (128 << 20) // (4 * c * h * w)))  # chunks keep the float temporaries small
        for start in range(0, n, chunk):
            sl = slice(start, min(start + chunk, n))
            # Each sample's class template, upsampled per chunk: 1000 classes at 3x224x224 would be 600 MB at once.
            templates = F.interpolate(coarse[labels[sl]], size=(h, w), mode="bilinear", align_corners=False)
            x = (templates - templates.mean((1, 2, 3), keepdim=True)) * 2.0 * contrast[sl]
            x = x + 0.35 * torch.randn(x.shape, generator=g)
            # Per-sample translation, vectorised: roll every image by its own (dy, dx) through a gather.
            dy, dx = shifts[sl, 0].view(-1, 1, 1, 1), shifts[sl, 1].view(-1, 1, 1, 1)
            rows = (torch.arange(h).view(1, 1, h, 1) - dy) % h
            cols = (torch.arange(w).view(1, 1, 1, w) - dx) % w
            x = x.gather(2, rows.expand(x.shape[0], c, h, w)).gather(3, cols.expand(x.shape[0], c, h, w))
            images[sl] = ((x * 0.25 + 0.5).clamp(0, 1) * 255).round().to(torch.uint8)
        self.images, self.targets, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i):
        arr = self.images[i].permute(1, 2, 0).numpy()
        img = Image.fromarray(arr[:, :, 0], mode="L") if arr.shape[2] == 1 else Image.fromarray(arr)
        if self.transform is not None:
            img = self.transform(img)
        return img, int(self.targets[i])


def open_split(dataset: str, train: bool, *, root: str = "data", synthetic: bool = False, download: bool = False,
               size: int | None = None, transform=None, num_classes: int = 10) -> Dataset:
    """The torchvision dataset (or its synthetic stand-in) for one split, with a per-sample ``transform``. A
    ``synthetic:CxHxW`` dataset is synthetic whatever ``synthetic`` says: it has no real files."""
    cls, shape, _, folder = DATASETS[dataset]  # an unknown name: a UserError naming the choices
    if synthetic or dataset_kind(dataset) == "synthetic":
        return SyntheticImages(dataset, train, size=size, num_classes=num_classes, transform=transform)
    if dataset_kind(dataset) == "imagefolder":
        ds = FolderImages(folder, train, shape, transform=transform)
        return Subset(ds, range(size)) if size is not None and size < len(ds) else ds
    where = os.path.join(root, folder)
    if dataset in IDX_DATASETS and os.path.isdir(where):
        check_folder(where, dataset)  # a missing, truncated or mislabelled file: one error naming it
    try:
        ds = cls(root, train=train, download=download, transform=transform)
    except RuntimeError as exc:  # torchvision: "Dataset not found or corrupted. You can use download=True ..."
        hint = "check the network or use --synthetic" if download else "pass --download to fetch it, or --synthetic"
        if dataset in INSTALL_HINT and not download:
            hint += f", or offline: {INSTALL_HINT[dataset].replace('ROOT', root)}"
        raise UserError(f"{dataset} {'train' if train else 'test'} split not found or corrupted under {where} "
                        f"({str(exc).splitlines()[0].rstrip('.')}); {hint}") from None
    except (OSError, ValueError) as exc:  # network failures while downloading, unreadable files
        raise UserError(f"could not load {dataset} from {root}: {type(exc).__name__}: {str(exc).splitlines()[0]}") from None
    if size is not None and size < len(ds):
        return Subset(ds, range(size))
    return ds


def split_tensors(ds: Dataset) -> tuple[torch.Tensor, torch.Tensor]:
    """The whole split as (uint8 images N x C x H x W, int64 labels), straight from the dataset's storage."""
    limit = None
    if isinstance(ds, Subset):
        limit, ds = len(ds.indices), ds.dataset
    if isinstance(ds, SyntheticImages):
        images, labels = ds.images, ds.targets
    else:
        data = ds.data  # MNIST family: uint8 tensor N x H x W; CIFAR: numpy uint8 N x H x W x C
        images = torch.as_tensor(np.asarray(data)) if not isinstance(data, torch.Tensor) else data
        images = images.unsqueeze(1) if images.dim() == 3 else images.permute(0, 3, 1, 2)
        labels = torch.as_tensor(np.asarray(ds.targets), dtype=torch.int64)
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    return images.contiguous(), labels.to(torch.int64)


# ---------------------------------------------------------------------------------------------------------------
# Transforms: per-sample (tutorial) and batched on the device (fast), the same arithmetic


def tutorial_transform(tf: Transforms, raw_channels: int) -> T.Compose:
    steps = []
    if tf.resize:
        steps.append(T.Resize(tuple(tf.resize)))  # on the PIL image, bilinear, as the tutorials do
    if tf.channels == 3 and raw_channels == 1:
        steps.append(T.Grayscale(num_output_channels=3))
    steps.append(T.ToTensor())
    if _normalizes(tf):
        steps.append(T.Normalize(tf.mean, tf.std))
    return T.Compose(steps)


def _normalizes(tf: Transforms) -> bool:
    return any(m != 0.0 for m in tf.mean) or any(s != 1.0 for s in tf.std)


class BatchTransform:
    """The recipe's transforms for a uint8 batch already on the device: no per-sample Python."""

    uint8_resize: bool | None = None  # whether this device's interpolate takes uint8 (found on first use)

    def __init__(self, tf: Transforms, device: torch.device):
        self.tf = tf
        self.mean = torch.tensor(tf.mean, device=device, dtype=torch.float32).view(1, -1, 1, 1)
        self.std = torch.tensor(tf.std, device=device, dtype=torch.float32).view(1, -1, 1, 1)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.tf.resize and tuple(x.shape[-2:]) != tuple(self.tf.resize):
            x = self._resize(x)
        x = x.float().div_(255)  # ToTensor divides (not multiplies by 1/255): keep the same rounding
        if self.tf.channels == 3 and x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        if _normalizes(self.tf):
            x = (x - self.mean).div_(self.std)  # as transforms.Normalize: sub, then div
        return x.contiguous()

    def _resize(self, x: torch.Tensor) -> torch.Tensor:
        """Bilinear resize that matches PIL's on uint8 images (what the tutorial path does).

        The CPU kernel for uint8 with antialias reproduces PIL bit for bit; where a device lacks it, resize in float
        and round back to uint8 like PIL (at most one grey level off, on a few percent of pixels).
        """
        size = tuple(self.tf.resize)
        if self.uint8_resize is not False:
            try:
                out = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
                self.uint8_resize = True
                return out
            except (RuntimeError, NotImplementedError):
                self.uint8_resize = False
        out = F.interpolate(x.float(), size=size, mode="bilinear", align_corners=False, antialias=True)
        return out.round_().clamp_(0, 255)


# ---------------------------------------------------------------------------------------------------------------
# Loaders


def epoch_permutation(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The sample order of one epoch: a function of (seed, epoch) only, so a resumed run sees the same order."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=g)


def shard(order: torch.Tensor, rank: int, world_size: int) -> torch.Tensor:
    """This rank's share of an epoch's order, padded to equal length like DistributedSampler."""
    if world_size == 1:
        return order
    total = math.ceil(len(order) / world_size) * world_size
    if total > len(order):
        order = torch.cat([order, order[: total - len(order)]])
    return order[rank:total:world_size]


class EpochPermutationSampler(Sampler):
    """DataLoader sampler yielding ``epoch_permutation`` (sharded per rank); call ``set_epoch`` each epoch."""

    def __init__(self, n: int, seed: int, shuffle: bool = True, rank: int = 0, world_size: int = 1):
        self.n, self.seed, self.shuffle, self.rank, self.world_size = n, seed, shuffle, rank, world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _order(self) -> torch.Tensor:
        order = epoch_permutation(self.n, self.seed, self.epoch) if self.shuffle else torch.arange(self.n)
        return shard(order, self.rank, self.world_size)

    def __iter__(self):
        return iter(self._order().tolist())

    def __len__(self) -> int:
        return math.ceil(self.n / self.world_size)


def _num_batches(n: int, batch_size: int, drop_last: bool) -> int:
    return n // batch_size if drop_last else math.ceil(n / batch_size)


class TutorialLoader:
    """torchvision Dataset + per-sample transforms + DataLoader, each batch copied to the device."""

    kind = "tutorial"

    def __init__(self, ds: Dataset, device: torch.device, batch_size: int, *, shuffle: bool, seed: int,
                 drop_last: bool = False, rank: int = 0, world_size: int = 1, num_workers: int = 0,
                 pin_memory: bool | None = None):
        self.device = device
        pin = device.type == "cuda" if pin_memory is None else pin_memory
        self.sampler = EpochPermutationSampler(len(ds), seed, shuffle, rank, world_size)
        self.loader = DataLoader(ds, batch_size=batch_size, sampler=self.sampler, drop_last=drop_last,
                                 num_workers=num_workers, pin_memory=pin)
        self.num_samples = len(self.sampler) if not drop_last else len(self.loader) * batch_size

    def __len__(self) -> int:
        return len(self.loader)

    def host_batches(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """One epoch of the DataLoader's CPU batches as-is, as the tutorials iterate it (they copy to the device)."""
        self.sampler.set_epoch(epoch)
        yield from self.loader

    def batches(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        non_blocking = self.device.type == "cuda"
        for x, y in self.host_batches(epoch):
            yield x.to(self.device, non_blocking=non_blocking), y.to(self.device, non_blocking=non_blocking)


class FastLoader:
    """The split resident on the device as uint8, transformed batched on the device, sliced by a seeded permutation."""

    kind = "fast"

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, tf: Transforms, device: torch.device,
                 batch_size: int, *, shuffle: bool, seed: int, drop_last: bool = False, rank: int = 0,
                 world_size: int = 1, precompute_bytes: int = 1 << 30):
        self.device, self.batch_size, self.shuffle, self.seed = device, batch_size, shuffle, seed
        self.drop_last, self.rank, self.world_size = drop_last, rank, world_size
        self.n = len(labels)
        self.transform = BatchTransform(tf, device)
        self.labels = labels.to(device)
        images = images.to(device)
        out_c = tf.channels if tf.channels == 3 else images.shape[1]
        out_hw = tuple(tf.resize) if tf.resize else tuple(images.shape[-2:])
        out_bytes = self.n * out_c * out_hw[0] * out_hw[1] * 4
        if out_bytes <= precompute_bytes:  # transform the whole split once; an epoch is then pure indexing
            self.images = torch.cat([self.transform(images[i:i + 4096]) for i in range(0, self.n, 4096)])
            self.pretransformed = True
        else:  # e.g. MNIST at 3x96x96 in fp32 is 6.6 GB: keep uint8, transform each batch on the device
            self.images = images
            self.pretransformed = False
        per_rank = math.ceil(self.n / world_size)
        self.num_samples = per_rank if not drop_last else (per_rank // batch_size) * batch_size

    def __len__(self) -> int:
        return _num_batches(math.ceil(self.n / self.world_size), self.batch_size, self.drop_last)

    def batches(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        b = self.batch_size
        if self.shuffle or self.world_size > 1:
            order = epoch_permutation(self.n, self.seed, epoch) if self.shuffle else torch.arange(self.n)
            order = shard(order, self.rank, self.world_size).to(self.device)  # one copy per epoch
        else:
            order = None  # plain slices: views, no gather
        for i in range(len(self)):
            if order is None:
                x, y = self.images[i * b:(i + 1) * b], self.labels[i * b:(i + 1) * b]
            else:
                idx = order[i * b:(i + 1) * b]
                x, y = self.images.index_select(0, idx), self.labels.index_select(0, idx)
            yield (x if self.pretransformed else self.transform(x)), y


def batches_forever(loader: TutorialLoader | FastLoader) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Endless device batches: ``loader.batches(epoch)`` for epochs 0, 1, 2, ..."""
    for epoch in itertools.count():
        yield from loader.batches(epoch)



@dataclass
class DataBundle:
    train: TutorialLoader | FastLoader
    test: TutorialLoader | FastLoader
    source: str  # "real" | "synthetic"
    train_size: int
    test_size: int


def make_loaders(spec: ModelSpec, *, loader: str = "fast", device: torch.device | str = "cpu",
                 root: str = "data", synthetic: bool = False, download: bool = False, batch_size: int | None = None,
                 eval_batch_size: int | None = None, seed: int = 0, train_samples: int | None = None,
                 test_samples: int | None = None, rank: int = 0, world_size: int = 1, shuffle: bool | None = None,
                 drop_last: bool | None = None, pin_memory: bool | None = None) -> DataBundle:
    """Train and test loaders for a model's dataset and recipe, on the chosen path.

    Overrides, for building a loader exactly as one tutorial does (None keeps the default): ``shuffle`` and
    ``drop_last`` of the train split (default: shuffled, the recipe's drop_last), and the tutorial path's
    DataLoader ``pin_memory`` (default: on CUDA only). The test split is never shuffled nor cut.
    """
    if loader not in LOADERS:
        raise UserError(f"unknown loader {loader!r}; choose from: {', '.join(LOADERS)}")
    device = torch.device(device)
    recipe = spec.recipe
    batch_size = batch_size or recipe.batch_size
    eval_batch_size = eval_batch_size or recipe.eval_batch_size
    raw_channels = DATASETS[spec.dataset][1][0]
    tf = tutorial_transform(recipe.transforms, raw_channels) if loader == "tutorial" else None
    synthetic = synthetic or dataset_kind(spec.dataset) == "synthetic"
    splits = [open_split(spec.dataset, train, root=root, synthetic=synthetic, download=download, size=size,
                         transform=tf, num_classes=spec.num_classes)
              for train, size in ((True, train_samples), (False, test_samples))]
    made = []
    for ds, train in zip(splits, (True, False)):
        bs = batch_size if train else eval_batch_size
        cut = (recipe.drop_last if drop_last is None else drop_last) if train else False
        mix = (shuffle is None or shuffle) if train else False
        r, w = (rank, world_size) if train else (0, 1)  # every rank evaluates the full test split
        if loader == "tutorial":
            made.append(TutorialLoader(ds, device, bs, shuffle=mix, seed=seed, drop_last=cut, rank=r,
                                       world_size=w, pin_memory=pin_memory))
        else:
            images, labels = split_tensors(ds)
            made.append(FastLoader(images, labels, recipe.transforms, device, bs, shuffle=mix, seed=seed,
                                   drop_last=cut, rank=r, world_size=w))
    return DataBundle(made[0], made[1], "synthetic" if synthetic else "real", len(splits[0]), len(splits[1]))


def real_data_available(dataset: str, root: str) -> bool:
    """Whether torchvision finds the dataset under ``root`` without downloading. An IDX dataset whose folder is
    there but holds a missing or broken file raises its UserError: a half-copied dataset is never silently replaced
    by synthetic data, nor is a missing ImageFolder."""
    if dataset_kind(dataset) != "zoo":
        return dataset_kind(dataset) == "imagefolder" and DATASETS[dataset] is not None
    if dataset in IDX_DATASETS and os.path.isdir(os.path.join(root, DATASETS[dataset][3])):
        check_folder(os.path.join(root, DATASETS[dataset][3]), dataset)
    try:
        open_split(dataset, True, root=root)
        open_split(dataset, False, root=root)
        return True
    except UserError:
        return False


def data_folder(dataset: str, root: str) -> str:
    """Where the real files of ``dataset`` are read from under ``root`` (what a run records as its data's origin)."""
    if dataset_kind(dataset) == "imagefolder":
        return os.path.abspath(DATASETS[dataset][3])
    return os.path.abspath(os.path.join(root, DATASETS[dataset][3]))


if __name__ == "__main__":  # python -m zoo.data link-fashionmnist SRC [--data-root ROOT]
    import sys

    from zoo.idx import main

    sys.exit(main())
