"""The pytest-benchmark suite runs only under ``pytest --benchmark-only``; plain ``pytest`` skips it to stay quick.

``--bench-device`` picks the device (cpu by default). pytest reads options from this file only when the command line
names this folder, so pass it as ``pytest --benchmark-only tests/benchmarks --bench-device cuda``.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

HERE = Path(__file__).resolve().parent
SKIP_REASON = "benchmark suite: run it with `pytest --benchmark-only` (plain pytest skips it to stay quick)"


def pytest_addoption(parser):
    try:
        parser.addoption("--bench-device", default="cpu",
                         help="device for tests/benchmarks: cpu, cuda, mps or auto (default: cpu)")
    except ValueError:  # already registered by a conftest higher up, so that it also works from the root
        pass


def _benchmark_only(config) -> bool:
    """True under --benchmark-only (timed), and under --benchmark-disable (each benchmark run once, untimed: CI's
    check that the suite still runs)."""
    try:
        return bool(config.getoption("benchmark_only") or config.getoption("benchmark_disable"))
    except ValueError:  # pytest-benchmark is not installed: nothing here can run
        return False


def pytest_collection_modifyitems(config, items):
    if _benchmark_only(config):
        return
    skip = pytest.mark.skip(reason=SKIP_REASON)
    for item in items:
        if HERE in Path(str(item.path)).resolve().parents:
            item.add_marker(skip)


def _device(config) -> torch.device:
    from zoo.engine import resolve_device
    from zoo.errors import UserError

    try:
        name = config.getoption("bench_device")
    except ValueError:  # this conftest was loaded after the command line was parsed: the default applies
        name = "cpu"
    try:
        return resolve_device(name)
    except UserError as exc:
        raise pytest.UsageError(f"--bench-device {name}: {exc}") from None


def pytest_configure(config):
    if _benchmark_only(config):
        _device(config)  # a device that is not there stops the run with one line, before any test starts


@pytest.fixture(scope="session")
def bench_device(pytestconfig) -> torch.device:
    return _device(pytestconfig)


class OnnxFiles:
    """Each model exported once per session, on first use, into a session temp folder."""

    def __init__(self, folder: Path):
        self.folder, self.infos = folder, {}

    def info(self, name: str) -> dict:
        """bench.model.export.export_onnx's info for ``name`` (what onnx_for caches in a session)."""
        if name not in self.infos:
            from bench.context import BenchContext, prepare_model
            from bench.model.export import export_onnx

            session = prepare_model(name, BenchContext(device=torch.device("cpu"), checkpoints=None))
            self.infos[name] = export_onnx(name, session.model, os.fspath(self.folder / f"{name}.onnx"))
        return self.infos[name]

    def get(self, name: str) -> str:
        return self.info(name)["onnx_path"]


@pytest.fixture(scope="session")
def onnx_files(tmp_path_factory) -> OnnxFiles:
    return OnnxFiles(tmp_path_factory.mktemp("bench_onnx"))
