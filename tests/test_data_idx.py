"""IDX files: the `.gz` folder layout (`python -m zoo.data link-fashionmnist`), the header and size checks, one error
line per bad file, and (when Debian's dataset-fashion-mnist is installed) one epoch of the mlp on the real files."""
from __future__ import annotations

import gzip
import json
import os
import struct

import numpy as np
import pytest
import torch
import torchvision

import zoo
from bench import run as bench_run
from zoo import data, idx
from zoo import train as zoo_train
from zoo.errors import UserError

DEBIAN = "/usr/share/datasets/fashion-mnist"
INSTALL = "apt-get install -y dataset-fashion-mnist"
N_TRAIN, N_TEST = 12, 5


def idx_bytes(array: np.ndarray) -> bytes:
    return struct.pack(">HBB", 0, idx.UBYTE, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape) + \
        array.astype(np.uint8).tobytes()


def arrays(seed: int = 0) -> dict[str, np.ndarray]:
    g = np.random.default_rng(seed)
    return {"train-images-idx3-ubyte": g.integers(0, 256, (N_TRAIN, 28, 28)),
            "train-labels-idx1-ubyte": g.integers(0, 10, (N_TRAIN,)),
            "t10k-images-idx3-ubyte": g.integers(0, 256, (N_TEST, 28, 28)),
            "t10k-labels-idx1-ubyte": g.integers(0, 10, (N_TEST,))}


def write_gz_folder(folder, seed: int = 0, gz: bool = True) -> dict[str, np.ndarray]:
    """The four files as Debian ships them (NAME.gz), small; returns what they hold."""
    os.makedirs(folder, exist_ok=True)
    held = arrays(seed)
    for name, a in held.items():
        if gz:
            with gzip.open(os.path.join(folder, name + ".gz"), "wb") as f:
                f.write(idx_bytes(a))
        else:
            with open(os.path.join(folder, name), "wb") as f:
                f.write(idx_bytes(a))
    return held


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


def test_the_four_files_and_their_exact_sizes():
    files = idx.idx_files("fashionmnist")
    assert [(f.name, f.ndim, f.size(60000 if f.name.startswith("train") else 10000)) for f in files] == [
        ("train-images-idx3-ubyte", 3, 47040016), ("train-labels-idx1-ubyte", 1, 60008),
        ("t10k-images-idx3-ubyte", 3, 7840016), ("t10k-labels-idx1-ubyte", 1, 10008)]  # Debian's, uncompressed
    with pytest.raises(UserError, match="cifar10.*not an IDX dataset"):
        idx.idx_files("cifar10")


@pytest.mark.parametrize("gz", [True, False], ids=["gz", "uncompressed"])
def test_link_writes_what_torchvision_and_both_loaders_read(tmp_path, capsys, gz):
    held = write_gz_folder(tmp_path / "src", gz=gz)
    root = tmp_path / "data"
    assert idx.main(["link-fashionmnist", str(tmp_path / "src"), "--data-root", str(root)]) == 0
    assert f"--data-root {root}" in capsys.readouterr().out
    raw = root / "FashionMNIST" / "raw"
    assert sorted(os.listdir(raw)) == sorted(held)  # the four files, no staged leftovers
    for name, a in held.items():
        assert (raw / name).read_bytes() == idx_bytes(a)
    tv = torchvision.datasets.FashionMNIST(str(root), train=True, download=False)
    assert len(tv) == N_TRAIN and tv.targets.tolist() == held["train-labels-idx1-ubyte"].tolist()
    images, labels = data.split_tensors(data.open_split("fashionmnist", False, root=str(root)))
    assert images.shape == (N_TEST, 1, 28, 28)
    assert torch.equal(images[:, 0], torch.as_tensor(held["t10k-images-idx3-ubyte"], dtype=torch.uint8))
    assert labels.tolist() == held["t10k-labels-idx1-ubyte"].tolist()
    assert data.real_data_available("fashionmnist", str(root))
    assert data.data_folder("fashionmnist", str(root)) == str(raw)


def test_link_again_replaces_the_files_with_the_new_folder(tmp_path):
    write_gz_folder(tmp_path / "a", seed=1)
    held = write_gz_folder(tmp_path / "b", seed=2)
    idx.link("fashionmnist", str(tmp_path / "a"), str(tmp_path / "data"))
    idx.link("fashionmnist", str(tmp_path / "b"), str(tmp_path / "data"))
    raw = tmp_path / "data" / "FashionMNIST" / "raw"
    assert (raw / "t10k-labels-idx1-ubyte").read_bytes() == idx_bytes(held["t10k-labels-idx1-ubyte"])


def _truncate_gzip(path):
    blob = open(path, "rb").read()
    open(path, "wb").write(blob[: len(blob) // 2])


def _rewrite(path, payload: bytes):
    with gzip.open(path, "wb") as f:
        f.write(payload)


BAD_SOURCES = {
    "missing": (lambda p: os.remove(p), "missing"),
    "truncated gzip": (_truncate_gzip, "truncated: the gzip stream ends early"),
    "not gzip": (lambda p: open(p, "wb").write(b"plain text, not gzip"), "not a readable gzip file"),
    "short payload": (lambda p: _rewrite(p, idx_bytes(arrays()["train-images-idx3-ubyte"])[:-100]),
                      "truncated: 9,324 bytes uncompressed, its IDX header implies 9,424"),
    "long payload": (lambda p: _rewrite(p, idx_bytes(arrays()["train-images-idx3-ubyte"]) + b"\0" * 5),
                     "too long"),
    "wrong magic": (lambda p: _rewrite(p, b"\x00\x00\x0d\x03" + idx_bytes(arrays()["train-images-idx3-ubyte"])[4:]),
                    "not an IDX file of 3-d unsigned bytes (magic 00000d03, expected 00000803)"),
    "wrong shape": (lambda p: _rewrite(p, idx_bytes(np.zeros((N_TRAIN, 28, 27)))),
                    "IDX header says shape (12, 28, 27), expected (N > 0, 28, 28)"),
    "fewer images than labels": (lambda p: _rewrite(p, idx_bytes(np.zeros((N_TRAIN - 1, 28, 28)))),
                                 "holds 11 images but"),
    "empty": (lambda p: _rewrite(p, b""), "truncated: 0 bytes, shorter than its IDX header"),
}


@pytest.mark.parametrize("case", list(BAD_SOURCES))
def test_a_bad_source_file_is_one_error_naming_it_and_changes_nothing(tmp_path, capsys, case):
    good = write_gz_folder(tmp_path / "good", seed=3)
    root = tmp_path / "data"
    idx.link("fashionmnist", str(tmp_path / "good"), str(root))
    write_gz_folder(tmp_path / "bad", seed=4)
    bad = tmp_path / "bad" / "train-images-idx3-ubyte.gz"
    breaks, message = BAD_SOURCES[case]
    breaks(bad)
    assert idx.main(["link-fashionmnist", str(tmp_path / "bad"), "--data-root", str(root)]) == 2
    line = one_error_line(capsys)
    assert str(bad) in line and message in line, line
    raw = root / "FashionMNIST" / "raw"
    assert sorted(os.listdir(raw)) == sorted(good)  # no staged file left behind
    for name, a in good.items():  # the good copy is intact: all four, or none replaced
        assert (raw / name).read_bytes() == idx_bytes(a)


def test_a_missing_source_folder_says_how_to_install_it(tmp_path, capsys):
    assert idx.main(["link-fashionmnist", str(tmp_path / "nope"), "--data-root", "R"]) == 2
    line = one_error_line(capsys)
    assert "no such folder" in line and INSTALL in line and "--data-root R" in line


@pytest.mark.parametrize("case, message", [
    ("truncated", "truncated: 9,000 bytes, its IDX header implies 9,424"),
    ("missing", "missing"),
])
def test_a_broken_data_root_is_one_error_in_zoo_train_and_bench_run_never_synthetic(tmp_path, capsys, case,
                                                                                    message):
    write_gz_folder(tmp_path / "src")
    root = tmp_path / "data"
    idx.link("fashionmnist", str(tmp_path / "src"), str(root))
    bad = root / "FashionMNIST" / "raw" / "train-images-idx3-ubyte"
    if case == "truncated":
        os.truncate(bad, 9000)
    else:
        os.remove(bad)
    with pytest.raises(UserError, match=message):
        data.real_data_available("fashionmnist", str(root))  # a half-copied dataset is no reason to go synthetic
    assert zoo_train.main(["--model", "mlp", "--data-root", str(root), "--out", str(tmp_path / "runs"),
                           "--epochs", "1", "--tune", "off", "--no-progress"]) == 2
    line = one_error_line(capsys)
    assert str(bad) in line and message in line
    assert not (tmp_path / "runs" / "mlp" / "last.pt").exists()
    assert bench_run.main(["--models", "mlp", "--phases", "infer", "--data-root", str(root),
                           "--out", str(tmp_path / "results")]) == 2
    line = one_error_line(capsys)
    assert str(bad) in line and message in line
    assert not (tmp_path / "results").exists()


def test_an_absent_dataset_stays_synthetic_and_its_error_names_the_offline_way(tmp_path):
    assert not data.real_data_available("fashionmnist", str(tmp_path))
    with pytest.raises(UserError) as err:
        data.open_split("fashionmnist", True, root=str(tmp_path))
    assert INSTALL in str(err.value) and f"--data-root {tmp_path}" in str(err.value)


def test_no_shuffle_trains_in_the_split_order_and_the_checkpoint_keeps_it(tmp_path):
    out = str(tmp_path / "runs")
    common = ["--model", "mlp", "--synthetic", "--train-samples", "256", "--test-samples", "128", "--tune", "off",
              "--out", out, "--no-progress"]
    assert zoo_train.main([*common, "--epochs", "1", "--no-shuffle"]) == 0
    state = torch.load(os.path.join(out, "mlp", "last.pt"), weights_only=True)
    assert state["config"]["shuffle"] is False
    assert zoo_train.main([*common, "--epochs", "2", "--resume"]) == 0  # resumed: keeps the split's order
    state = torch.load(os.path.join(out, "mlp", "last.pt"), weights_only=True)
    assert state["epoch"] == 2 and state["config"]["shuffle"] is False
    bundle = data.make_loaders(zoo.get_spec("mlp"), synthetic=True, train_samples=256, test_samples=128,
                               shuffle=False)
    split = data.open_split("fashionmnist", True, synthetic=True, size=256)
    assert torch.equal(next(iter(bundle.train.batches(1)))[1], data.split_tensors(split)[1][:64])


def debian_files_present() -> bool:
    return all(os.path.isfile(os.path.join(DEBIAN, f.name + ".gz")) for f in idx.idx_files("fashionmnist"))


@pytest.mark.slow
@pytest.mark.skipif(not debian_files_present(),
                    reason=f"real FashionMNIST not installed: `{INSTALL}` puts it in {DEBIAN}")
def test_one_epoch_of_the_quickstart_on_the_real_files(tmp_path, capsys):
    """Debian's files, linked, are torchvision's FashionMNIST: first labels 9, 0, 0, 3, 0; one epoch of the
    quickstart's recipe in the split's order lifts the test accuracy far above chance (10%)."""
    root = str(tmp_path / "data")
    assert idx.main(["link-fashionmnist", DEBIAN, "--data-root", root]) == 0
    tv = torchvision.datasets.FashionMNIST(root, train=True, download=False)
    assert len(tv) == 60000 and tv.targets[:5].tolist() == [9, 0, 0, 3, 0]
    assert len(torchvision.datasets.FashionMNIST(root, train=False, download=False)) == 10000
    out = str(tmp_path / "runs")
    assert zoo_train.main(["--model", "mlp", "--data-root", root, "--out", out, "--epochs", "1", "--no-shuffle",
                           "--tune", "off", "--no-progress"]) == 0
    with open(os.path.join(out, "mlp", "metrics.jsonl")) as f:
        line = json.loads(f.readline())
    assert line["data"] == "real" and line["epoch"] == 1
    assert 0.30 < line["test_acc"] < 0.80, line  # the quickstart's first epoch reads about 45-50%
