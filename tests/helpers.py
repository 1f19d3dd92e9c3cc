"""Writers for torchvision's own on-disk dataset formats, and small shared test utilities.

The files are what torchvision reads after its download step: raw IDX files for the MNIST family (the ``.gz``
archives are only a download artefact; torchvision parses the extracted ``*-idx3-ubyte`` files) and the pickled
batches of CIFAR-10's python version. Writing them lets the tests load "real" data offline through torchvision itself.
"""
from __future__ import annotations

import os
import pickle
import signal
import struct
import subprocess
import sys
from typing import Any

import numpy as np
import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# IDX type codes (the third magic byte): 0x08 = unsigned byte.
_IDX_UBYTE = 0x08


def write_idx(path: str, array: np.ndarray) -> None:
    """An IDX file (big-endian header: 0, 0, type, ndim, then one uint32 per dimension) of uint8 data."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, _IDX_UBYTE, array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape)
    with open(path, "wb") as f:
        f.write(header + array.tobytes())


def write_mnist_family(root: str, folder: str, train_images: np.ndarray, train_labels: np.ndarray,
                       test_images: np.ndarray, test_labels: np.ndarray) -> str:
    """ROOT/<folder>/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte, as MNIST and FashionMNIST expect them.

    ``folder`` is torchvision's class name ("MNIST", "FashionMNIST"); images are N x 28 x 28 uint8.
    """
    raw = os.path.join(root, folder, "raw")
    os.makedirs(raw, exist_ok=True)
    for prefix, images, labels in (("train", train_images, train_labels), ("t10k", test_images, test_labels)):
        assert images.ndim == 3 and labels.ndim == 1 and len(images) == len(labels)
        write_idx(os.path.join(raw, f"{prefix}-images-idx3-ubyte"), images)
        write_idx(os.path.join(raw, f"{prefix}-labels-idx1-ubyte"), labels)
    return raw


CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def write_cifar10(root: str, train_images: np.ndarray, train_labels: np.ndarray, test_images: np.ndarray,
                  test_labels: np.ndarray) -> str:
    """ROOT/cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta} in the python-version layout.

    Images are N x 32 x 32 x 3 uint8 (HWC, as torchvision exposes ``.data``); each batch stores them as the
    original does: rows of 3072 bytes, the red plane, then green, then blue. The training set is split over the
    five batch files in order, so sample i of the dataset is sample i of ``train_images``.
    """
    folder = os.path.join(root, "cifar-10-batches-py")
    os.makedirs(folder, exist_ok=True)

    def dump(name: str, images: np.ndarray, labels: np.ndarray) -> None:
        rows = np.ascontiguousarray(images.transpose(0, 3, 1, 2)).reshape(len(images), 3072).astype(np.uint8)
        entry = {"batch_label": name.encode(), "labels": [int(v) for v in labels], "data": rows,
                 "filenames": [f"{name}_{i}.png".encode() for i in range(len(images))]}
        with open(os.path.join(folder, name), "wb") as f:
            pickle.dump(entry, f, protocol=2)

    for k, idx in enumerate(np.array_split(np.arange(len(train_images)), 5), start=1):
        dump(f"data_batch_{k}", train_images[idx], train_labels[idx])
    dump("test_batch", test_images, test_labels)
    with open(os.path.join(folder, "batches.meta"), "wb") as f:
        pickle.dump({"label_names": CIFAR10_CLASSES, "num_cases_per_batch": 10000, "num_vis": 3072}, f, protocol=2)
    return folder


def random_split_arrays(seed: int, n_train: int, n_test: int, hwc: tuple[int, ...]) -> dict[str, np.ndarray]:
    """Random uint8 images of shape (N, *hwc) and labels 0..9, reproducible from ``seed``."""
    rng = np.random.default_rng(seed)
    return {
        "train_images": rng.integers(0, 256, (n_train, *hwc), dtype=np.uint8),
        "train_labels": rng.integers(0, 10, n_train, dtype=np.uint8),
        "test_images": rng.integers(0, 256, (n_test, *hwc), dtype=np.uint8),
        "test_labels": rng.integers(0, 10, n_test, dtype=np.uint8),
    }


# ---------------------------------------------------------------------------------------------------------------


def cli_env(**extra: str) -> dict[str, str]:
    """The environment for a ``python -m zoo.train`` subprocess: this checkout importable, a private TORCH_HOME."""
    env = dict(os.environ)
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("TORCH_HUB", None)
    env.update(extra)
    return env


def cli_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "zoo.train", *args]


def spawn(cmd: list[str], env: dict[str, str] | None = None, **kw: Any) -> subprocess.Popen:
    """A child in its own process group (so ``finish`` can kill it and anything it started), text pipes."""
    kw.setdefault("stdout", subprocess.PIPE)
    kw.setdefault("stderr", subprocess.PIPE)
    return subprocess.Popen(cmd, cwd=REPO, env=env or cli_env(), text=True, start_new_session=True, **kw)


def kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the child's whole process group (torchrun's workers too), then reap the child."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def finish(proc: subprocess.Popen, timeout: float = 300) -> subprocess.CompletedProcess:
    """Wait for ``proc``; past ``timeout`` its process group is killed and the test fails with what it printed."""
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_group(proc)
        out, err = proc.communicate()
        raise AssertionError(f"{proc.args} ran past {timeout} s and was killed\nstdout: {out}\nstderr: {err}") from None
    finally:
        if proc.poll() is None:  # an exception in this process (e.g. Ctrl-C): leave no orphan behind
            kill_group(proc)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return finish(spawn(cli_command(*args), env=env), timeout)


def assert_one_line_error(proc: subprocess.CompletedProcess, *fragments: str) -> str:
    """A user-facing failure: non-zero exit, no traceback, exactly one non-empty stderr line holding ``fragments``."""
    assert proc.returncode != 0, f"expected failure, got 0\nstdout: {proc.stdout}\nstderr: {proc.stderr}"
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, f"expected one stderr line, got {len(lines)}:\n{proc.stderr}"
    for fragment in fragments:
        assert fragment in lines[0], f"{fragment!r} not in {lines[0]!r}"
    return lines[0]


def assert_same_tensors(a: Any, b: Any, where: str = "") -> None:
    """Bitwise equality of nested dicts/lists of tensors and plain values (state_dicts, optimizer states)."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor), f"{where}: tensor vs {type(b).__name__}"
        assert a.dtype == b.dtype and a.shape == b.shape, f"{where}: {a.dtype}{tuple(a.shape)} vs {b.dtype}{tuple(b.shape)}"
        assert torch.equal(a, b), f"{where}: tensors differ (max abs diff {(a.double() - b.double()).abs().max()})"
    elif isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), f"{where}: keys {sorted(a)} vs {sorted(b) if isinstance(b, dict) else b}"
        for k in a:
            assert_same_tensors(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), f"{where}: {a!r} vs {b!r}"
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same_tensors(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


class FakeCudaAllocator:
    """torch.cuda's caching-allocator counters as bench.measure.memory.PeakMemory reads them, for CPU tests:
    ``memory_allocated`` (bytes held now), ``max_memory_allocated`` (the peak since the last
    ``reset_peak_memory_stats``, which sets it to what is held now, as PyTorch documents) and a no-op
    ``synchronize``. ``hold(mb)`` allocates and keeps, ``free(mb)`` frees, ``transient(mb)`` does both (a workspace)."""

    def __init__(self, monkeypatch: Any):
        self.allocated = self.peak = 0
        monkeypatch.setattr(torch.cuda, "synchronize", lambda *a, **k: None)
        monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda *a, **k: setattr(self, "peak", self.allocated))
        monkeypatch.setattr(torch.cuda, "memory_allocated", lambda *a, **k: self.allocated)
        monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda *a, **k: self.peak)

    def hold(self, mb: int) -> None:
        self.allocated += mb << 20
        self.peak = max(self.peak, self.allocated)

    def free(self, mb: int) -> None:
        self.allocated -= mb << 20

    def transient(self, mb: int) -> None:
        self.hold(mb)
        self.free(mb)


def run_main(argv: list[str], *, phases: Any = None, probe: Any = None, pricer: Any = None) -> int:
    """``python -m bench.run argv`` in this process with the driver's collaborators replaced for the one call: the
    phase registry (bench.phases.PHASES), the machine probes (bench.runner.env.probe_machine) and the pricing pass
    (bench.schedule.pricing.price_run). Each one left None is the real one."""
    import pytest

    from bench import run

    with pytest.MonkeyPatch.context() as patch:
        if phases is not None:
            patch.setattr("bench.phases.PHASES", phases)
        if probe is not None:
            patch.setattr("bench.runner.env.probe_machine", probe)
        if pricer is not None:
            patch.setattr("bench.schedule.pricing.price_run", pricer)
        return run.main(argv)
