"""A small package made on disk by a test: model modules and a *.dist-info whose entry_points.txt declares them in
the group torch_zoo_bench.models, as ``pip install`` would leave it (importlib.metadata reads it from sys.path)."""
from __future__ import annotations

import importlib
import sys
import textwrap
from pathlib import Path

import pytest

from zoo import plugins, registry

TINY = '''
import torch.nn as nn
from zoo import ModelSpec, Recipe, register_model

@register_model(ModelSpec(name="{name}", dataset="synthetic", input_shape=(3, 16, 16), num_classes=5,
                          recipe=Recipe(optimizer="sgd", lr=0.05, batch_size=16, epochs=1, eval_batch_size=64),
                          source="a test's package", description="conv > relu > linear"))
def build() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 16 * 16, 5))
'''
RAISES = '''
from zoo import ModelSpec, Recipe, register_model

@register_model(ModelSpec(name="raises_net", dataset="synthetic", input_shape=(3, 8, 8), num_classes=5,
                          recipe=Recipe(optimizer="sgd", lr=0.1, batch_size=8, epochs=1), source="t", description="t"))
def build():
    raise ValueError("no weights for you")
'''
BAD_SHAPE = '''
import torch.nn as nn
from zoo import ModelSpec, Recipe, register_model

@register_model(ModelSpec(name="badshape_net", dataset="synthetic", input_shape=(3, 8, 8), num_classes=5,
                          recipe=Recipe(optimizer="sgd", lr=0.1, batch_size=8, epochs=1), source="t", description="t"))
def build() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 7))  # 7 logits where the spec says 5 classes
'''
CLASH = '''
import torch.nn as nn
from zoo import ModelSpec, Recipe, register_model

@register_model(ModelSpec(name="mlp", dataset="synthetic", input_shape=(1, 28, 28), num_classes=10,
                          recipe=Recipe(optimizer="sgd", lr=0.1, batch_size=8, epochs=1), source="t", description="t"))
def build() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
'''
BROKEN = 'raise RuntimeError("this plugin is broken on purpose")\n'


def write_package(root: Path, modules: dict[str, str], entry_points: dict[str, str], dist: str = "tinyplug") -> Path:
    """``modules``: file stem -> source; ``entry_points``: entry point name -> module. Returns ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    for stem, source in modules.items():
        (root / f"{stem}.py").write_text(textwrap.dedent(source))
    info = root / f"{dist}-0.1.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    lines = "".join(f"{name} = {module}\n" for name, module in entry_points.items())
    (info / "entry_points.txt").write_text(f"[{plugins.GROUP}]\n{lines}" if entry_points else "")
    importlib.invalidate_caches()
    return root


@pytest.fixture
def fresh_registry(monkeypatch):
    """The registry as it was, after the test: the test may add models, plugin modules and sys.path entries."""
    saved = (dict(registry._REGISTRY), set(registry._RESOLVED), dict(registry._PLUGINS), list(plugins._imported))
    modules = set(sys.modules)
    registry._PLUGINS["state"] = "unloaded"  # the next lookup reads the entry points again (the zoo's own stay)
    monkeypatch.delenv(plugins.IMPORT_ENV, raising=False)
    yield
    registry._REGISTRY.clear()
    registry._REGISTRY.update(saved[0])
    registry._RESOLVED.clear()
    registry._RESOLVED.update(saved[1])
    registry._PLUGINS.update(saved[2])
    plugins._imported[:] = saved[3]
    for name in set(sys.modules) - modules:
        if not name.startswith(("zoo", "bench", "torch", "onnx")):  # the test's own modules, imported again next time
            del sys.modules[name]
