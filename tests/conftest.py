"""Shared fixtures: this checkout importable, a private torch hub cache, small training configs."""
from __future__ import annotations

import os
import sys

import pytest

TESTS = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(TESTS)
for path in (REPO, TESTS):  # `import zoo` from the checkout and `import helpers` from here
    if path not in sys.path:
        sys.path.insert(0, path)

import torch  # noqa: E402


@pytest.fixture(autouse=True, scope="session")
def _private_torch_home(tmp_path_factory):
    """An empty TORCH_HOME for the whole session, so no developer's real ImageNet weights change a result.

    Subprocesses inherit it through the environment; ``torch.hub.get_dir()`` in this process follows it because
    the hub dir is re-pointed too (``set_dir`` wins over the variable once called).
    """
    home = tmp_path_factory.mktemp("torch_home")
    old_env, old_dir = os.environ.get("TORCH_HOME"), torch.hub._hub_dir
    os.environ["TORCH_HOME"] = str(home)
    torch.hub.set_dir(str(home / "hub"))
    yield str(home)
    torch.hub._hub_dir = old_dir
    if old_env is None:
        os.environ.pop("TORCH_HOME", None)
    else:
        os.environ["TORCH_HOME"] = old_env


@pytest.fixture(autouse=True)
def _private_noise_cache(tmp_path_factory, monkeypatch):
    """Noise profiles (bench.analysis.noise) go to and come from a fresh folder per test, never the user's cache: a
    developer's profile would change a comparison's verdicts, and a --repeat 5 test would overwrite it."""
    monkeypatch.setenv("TORCH_ZOO_BENCH_NOISE_DIR", str(tmp_path_factory.mktemp("noise_cache")))


@pytest.fixture(autouse=True)
def _threads_unchanged():
    """Every test leaves torch's intra-op thread count as it found it: a leaked count changes the float reduction
    order of every later in-process run, and the bitwise resume tests then compare runs made under two orders."""
    before = torch.get_num_threads()
    yield
    after = torch.get_num_threads()
    torch.set_num_threads(before)
    assert after == before, f"the test left torch at {after} intra-op threads (found {before})"


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    """A fresh TORCH_HOME for one test (env and torch.hub), returned as a path string."""
    home = tmp_path / "torch_home"
    home.mkdir()
    monkeypatch.setenv("TORCH_HOME", str(home))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)  # get_dir() then derives $TORCH_HOME/hub
    return str(home)


@pytest.fixture
def small_cfg(tmp_path):
    """A factory of TrainConfig for quick in-process runs on synthetic data."""
    from zoo.loop import TrainConfig

    def make(model: str = "lenet", **kw) -> TrainConfig:
        base = dict(model=model, device="cpu", synthetic=True, out=str(tmp_path / "runs"), train_samples=256,
                    test_samples=64, epochs=1, progress=False)
        base.update(kw)
        return TrainConfig(**base)

    return make


@pytest.fixture
def one_torch_thread():
    """One torch intra-op thread for a test: on a busy shared machine a 2-thread barrier can stall a tiny op for tens
    of milliseconds, and hundreds of tiny steps pay thread hand-off costs; tests assert behaviour, not speed."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def pytest_addoption(parser):
    # Registered here (the root conftest) so `pytest --benchmark-only --bench-device cuda` works from the repository
    # root too; tests/benchmarks/conftest.py tolerates the option being registered already.
    parser.addoption("--bench-device", default="cpu", help="device for the tests/benchmarks suite (cpu, cuda, mps)")
