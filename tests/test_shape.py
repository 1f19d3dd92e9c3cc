"""The code's shape, checked as a linter would: no import cycle among zoo/ and bench/ modules, no private name imported
from another module, no string imports in bench, no function over 60 lines, no file over 400 lines."""
from __future__ import annotations

import ast
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("zoo", "bench")
MAX_FUNCTION_LINES = 60
MAX_FILE_LINES = 400


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            parts = path.relative_to(REPO).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


MODULES = _modules()
TREES = {name: ast.parse(path.read_text(), filename=str(path)) for name, path in MODULES.items()}


def _resolve(module: str, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".")
    if MODULES[module].name != "__init__.py":
        base = base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _imports(module: str) -> list[tuple[str, str | None, int]]:
    """(imported module, imported name or None, line) for every import in ``module`` (top level and nested)."""
    out = []
    for node in ast.walk(TREES[module]):
        if isinstance(node, ast.Import):
            out += [(alias.name, None, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(module, node)
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                out.append((sub, None, node.lineno) if sub in MODULES else (target, alias.name, node.lineno))
    return out


def _internal_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {name: set() for name in MODULES}
    for name in MODULES:
        for target, _, _ in _imports(name):
            # Importing a.b.c runs a/__init__ and a/b/__init__ too; the edge that matters is to the module itself.
            if target in MODULES and target != name:
                graph[name].add(target)
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_the_checker_sees_every_module_and_finds_a_planted_cycle():
    assert {"zoo.loop", "bench.run", "bench.records", "bench.phases.train.phase"} <= set(MODULES)
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle():
    cycle = _cycle(_internal_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_no_private_name_imported_from_another_module():
    bad = [f"{MODULES[name].relative_to(REPO)}:{line} imports {target}.{imported}"
           for name in MODULES for target, imported, line in _imports(name)
           if imported and imported.startswith("_") and not imported.startswith("__")
           and (target.split(".")[0] in PACKAGES)]
    bad += [f"{MODULES[name].relative_to(REPO)}:{line} imports private module {target}"
            for name in MODULES for target, _, line in _imports(name)
            if target in MODULES and any(p.startswith("_") and not p.startswith("__") for p in target.split("."))]
    assert not bad, "\n".join(bad)


def test_bench_has_no_string_imports():
    bad = []
    for name in MODULES:
        if not name.startswith("bench"):
            continue
        for node in ast.walk(TREES[name]):
            if isinstance(node, ast.Call):
                func = node.func
                called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
                if called in ("import_module", "__import__"):
                    bad.append(f"{MODULES[name].relative_to(REPO)}:{node.lineno}")
    assert not bad, "string imports: " + ", ".join(bad)


@pytest.mark.parametrize("name", sorted(MODULES))
def test_files_and_functions_are_short(name):
    path = MODULES[name]
    lines = path.read_text().count("\n")
    assert lines <= MAX_FILE_LINES, f"{path.relative_to(REPO)} has {lines} lines (at most {MAX_FILE_LINES})"
    long = [f"{node.name} ({node.end_lineno - node.lineno + 1} lines, line {node.lineno})"
            for node in ast.walk(TREES[name]) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES]
    assert not long, f"{os.path.relpath(path, REPO)}: functions over {MAX_FUNCTION_LINES} lines: {', '.join(long)}"


# Where each kind of bench code lives (README "Layout"): a module added elsewhere must be placed on purpose.
BENCH_LAYOUT = {
    "bench": {"__main__", "api", "config", "cli", "run", "plan", "context", "records", "compare", "matrix", "history",
              "gpu_smoke"},
    "bench.schedule": {"budget", "pricing", "train_cost", "serve_cost", "headlines", "rows", "calibration"},
    "bench.runner": {"lock", "progress", "repeat", "env"},
    "bench.model": {"export", "accuracy", "flops", "selection"},
    "bench.analysis": {"compare", "verdicts", "noise", "matrix", "history"},
    "bench.crosscheck": {"__main__", "check", "vendor", "benchmark_app"},
    "bench.phases": {"base", "infer", "infer_race", "parity", "scale", "tta"},
    "bench.phases.train": {"phase", "derive", "tutorial_loop", "rounds"},
    "bench.phases.serve": {"phase", "sut", "settings", "search", "rows", "logs"},
    "bench.profile": {"record", "request", "take", "torch_ops", "ort_nodes", "openvino_counters", "tensorrt_layers",
                      "section", "explain"},
    "bench.measure": {"timing", "stats", "memory", "machine", "numerics", "hardware", "race"},
    "bench.report": {"__main__", "accuracy_text", "conditions", "files", "index", "staging", "tables", "infer_tables",
                     "serve_tables", "plots", "selection", "load", "schema", "glance", "samples", "intervals",
                     "overview"},
}


@pytest.mark.parametrize("package", sorted(BENCH_LAYOUT))
def test_bench_modules_sit_in_their_folder(package):
    folder = REPO.joinpath(*package.split("."))
    found = {p.stem for p in folder.glob("*.py") if p.stem != "__init__"}
    assert found == BENCH_LAYOUT[package], (f"{package}: unexpected {sorted(found - BENCH_LAYOUT[package])}, "
                                            f"missing {sorted(BENCH_LAYOUT[package] - found)}; update README "
                                            "'Layout' and BENCH_LAYOUT together")
