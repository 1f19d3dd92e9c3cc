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

UBYTE = 0x08  # the IDX type code of unsigned bytes, the only one the MNIST family uses
CHUNK = 1 << 20
# dataset -> folder under the data root torchvision reads, and the train / test split sizes
IDX_DATASETS = {"mnist": ("MNIST/raw", (60000, 10000)), "fashionmnist": ("FashionMNIST/raw", (60000, 10000))}
INSTALL_HINT = {"fashionmnist": "apt-get install -y dataset-fashion-mnist, then python -m zoo.data "
                                "link-fashionmnist /usr/share/datasets/fashion-mnist --data-root ROOT"}


@dataclass(frozen=True)
class IdxFile:
    """One of a dataset's four files: its name (without .gz) and the shape its header must state."""

    name: str
    shape: tuple[int, ...]

    @property
    def size(self) -> int:
        """The file's exact length in bytes: 4 (magic) + 4 per dimension + the unsigned-byte payload."""
        return 4 + 4 * len(self.shape) + math.prod(self.shape)


def idx_files(dataset: str) -> list[IdxFile]:
    """The four files of an IDX dataset, train images and labels first, as torchvision names them."""
    if dataset not in IDX_DATASETS:
        raise UserError(f"{dataset!r} is not an IDX dataset; choose from: {', '.join(IDX_DATASETS)}")
    n_train, n_test = IDX_DATASETS[dataset][1]
    return [IdxFile(f"{split}-{kind}", (n, 28, 28) if kind.startswith("images") else (n,))
            for split, n in (("train", n_train), ("t10k", n_test))
            for kind in ("images-idx3-ubyte", "labels-idx1-ubyte")]


def parse_header(head: bytes, expected: IdxFile, where: str) -> None:
    """Check the leading bytes of an IDX file against the shape it must hold; UserError naming ``where``."""
    ndim = len(expected.shape)
    if len(head) < 4 + 4 * ndim:
        raise UserError(f"{where}: truncated: {len(head)} bytes, shorter than its IDX header")
    zero, dtype, dims = struct.unpack(">HBB", head[:4])
    if zero != 0 or dtype != UBYTE or dims != ndim:
        raise UserError(f"{where}: not an IDX file of {ndim}-d unsigned bytes (magic {head[:4].hex()}, expected "
                        f"0000{UBYTE:02x}{ndim:02x})")
    shape = struct.unpack(f">{ndim}I", head[4:4 + 4 * ndim])
    if shape != expected.shape:
        raise UserError(f"{where}: IDX header says shape {shape}, expected {expected.shape}")


def check_plain(path: str, expected: IdxFile) -> None:
    """An uncompressed IDX file: present, its header right, its size exactly what the header implies."""
    if not os.path.isfile(path):
        raise UserError(f"{path}: missing")
    with open(path, "rb") as f:
        parse_header(f.read(4 + 4 * len(expected.shape)), expected, path)
    size = os.path.getsize(path)
    if size != expected.size:
        raise UserError(f"{path}: {'truncated' if size < expected.size else 'too long'}: {size:,} bytes, its IDX "
                        f"header implies {expected.size:,}")


def check_folder(folder: str, dataset: str) -> None:
    """Every file torchvision will read from ``folder`` (ROOT/FashionMNIST/raw) checked; UserError on the first bad
    one."""
    for f in idx_files(dataset):
        check_plain(os.path.join(folder, f.name), f)


def copy_decompressed(src: str, dest: str, expected: IdxFile) -> None:
    """``src`` (gzip or plain IDX) into ``dest`` uncompressed, written atomically and checked as it streams: a bad
    header, a truncated or corrupt gzip or a wrong length is a UserError and ``dest`` is left as it was."""
    opener = gzip.open if src.endswith(".gz") else open
    try:
        with opener(src, "rb") as fin, atomic_open(dest, "wb") as fout:
            head = fin.read(4 + 4 * len(expected.shape))
            parse_header(head, expected, src)
            fout.write(head)
            total = len(head)
            while total <= expected.size and (chunk := fin.read(CHUNK)):
                fout.write(chunk)
                total += len(chunk)
            if total != expected.size:
                raise UserError(f"{src}: {'truncated' if total < expected.size else 'too long'}: "
                                f"{'at least ' if total > expected.size else ''}{total:,} bytes uncompressed, its "
                                f"IDX header implies {expected.size:,}")
    except EOFError:  # gzip: "Compressed file ended before the end-of-stream marker was reached"
        raise UserError(f"{src}: truncated: the gzip stream ends early") from None
    except (gzip.BadGzipFile, zlib.error) as exc:
        raise UserError(f"{src}: not a readable gzip file ({exc})") from None
    except OSError as exc:
        raise UserError(f"{src}: {exc.strerror or exc}") from None


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
    dest_dir = os.path.join(root, IDX_DATASETS[dataset][0])
    staged = [(os.path.join(dest_dir, f".{f.name}.staged"), os.path.join(dest_dir, f.name)) for f in files]
    try:  # decompress to temporary names first: all four good, or none replaced
        for path, f, (tmp, _) in zip(sources, files, staged):
            copy_decompressed(path, tmp, f)
    except BaseException:
        for tmp, _ in staged:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        raise
    for tmp, dest in staged:
        os.replace(tmp, dest)
    return [dest for _, dest in staged]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m zoo.data", description="Data preparation for the zoo.")
    sub = p.add_subparsers(dest="command", required=True)
    for dataset, title in (("fashionmnist", "FashionMNIST"), ("mnist", "MNIST")):
        cmd = sub.add_parser(f"link-{dataset}", help=f"put a folder of {title}'s four IDX .gz files (e.g. a Debian "
                                                     f"package's) where torchvision reads them: ROOT/"
                                                     f"{IDX_DATASETS[dataset][0]}/, checked by header and size")
        cmd.add_argument("src", help="folder holding train-images-idx3-ubyte.gz ... t10k-labels-idx1-ubyte.gz")
        cmd.add_argument("--data-root", default="data", help="the data root zoo.train / bench.run read (--data-root)")
        cmd.set_defaults(dataset=dataset)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        written = link(args.dataset, args.src, args.data_root)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    print(f"{args.dataset}: {len(written)} IDX files checked and written to "
          f"{os.path.dirname(written[0])}; use --data-root {args.data_root}")
    return 0
