"""Where models come from: modules that call ``register_model`` when imported, found the way Python plugins are found.

A package makes its models visible to ``python -m zoo.train`` and ``python -m bench.run`` by declaring an entry point
in the group ``torch_zoo_bench.models`` (pytest finds its plugins through ``pytest11`` the same way)::

    [project.entry-points."torch_zoo_bench.models"]
    mynets = "mynets.zoo_models"      # a module whose import registers its specs

The zoo's own six models are the entry point ``zoo = "zoo.models"`` of this project's pyproject.toml, so there is one
path. A source checkout run through ``PYTHONPATH`` (or an editable install whose metadata predates the entry point)
has no such metadata, so ``BUILTIN`` is loaded whenever the metadata does not name it: the zoo is always there, and
never loaded twice. ``--import MODULE`` (both command lines, and ``import_modules`` for a script) imports a module by
name for a quick experiment, without packaging it.

Every failure a user can cause (no such module, a module that raises while importing, a name registered twice) is a
UserError: one line naming the module or entry point, exit 2.
"""
from __future__ import annotations

import importlib
import importlib.metadata
import os
from collections.abc import Iterable
from dataclasses import dataclass

from zoo.errors import UserError

GROUP = "torch_zoo_bench.models"
BUILTIN = ("zoo", "zoo.models")  # (entry point name, module): the project's own models
# Modules --import'ed by a parent process, for the processes it starts (bench's torchrun ranks, --repeat children):
# they look models up by name and must register the same ones.
IMPORT_ENV = "TORCH_ZOO_BENCH_IMPORT"
_imported: list[str] = []


@dataclass(frozen=True)
class PluginSource:
    """One module to import: where the request came from (shown in the error line) and the module's name."""

    origin: str  # "entry point 'zoo' (group torch_zoo_bench.models)" | "--import"
    module: str


def entry_point_sources() -> list[PluginSource]:
    """The group's entry points in the installed metadata, with the zoo's own first even where the metadata lacks
    it. An entry point's value may name an attribute (``pkg.mod:attr``); importing its module is what registers."""
    found = [(ep.name, ep.value.split(":")[0].strip()) for ep in importlib.metadata.entry_points(group=GROUP)]
    if BUILTIN[1] not in (module for _, module in found):
        found.insert(0, BUILTIN)
    found.sort(key=lambda item: item[1] != BUILTIN[1])  # the zoo's names first: a plugin cannot take them
    unique = {module: name for name, module in reversed(found)}  # a module two distributions declare: imported once
    return [PluginSource(f"entry point {unique[module]!r} (group {GROUP})", module)
            for module in dict.fromkeys(module for _, module in found)]


def import_plugin(source: PluginSource) -> None:
    """Import one module; a failure the user can fix is one UserError line naming it."""
    try:
        importlib.import_module(source.module)
    except UserError as exc:  # e.g. a name clash raised by register_model while the module registers
        raise UserError(f"{source.origin}: module {source.module!r}: {exc}") from None
    except ModuleNotFoundError as exc:
        if exc.name and (source.module == exc.name or source.module.startswith(exc.name + ".")):  # it, or its package
            raise UserError(f"{source.origin}: no module named {source.module!r} (is its folder on sys.path / "
                            f"PYTHONPATH, or its package installed?)") from None
        raise UserError(f"{source.origin}: module {source.module!r} failed to import: "
                        f"ModuleNotFoundError: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - any error inside a user's module is theirs to fix: one line
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise UserError(f"{source.origin}: module {source.module!r} failed to import: "
                        f"{type(exc).__name__}: {first}") from None


def load_entry_points() -> None:
    """Import every model module the metadata declares (and the zoo's own), then those a parent process passed
    down in IMPORT_ENV."""
    for source in entry_point_sources():
        import_plugin(source)
    inherited = os.environ.get(IMPORT_ENV, "")
    if inherited:
        import_modules([inherited], origin=IMPORT_ENV)


def import_modules(names: Iterable[str], origin: str = "--import") -> None:
    """``--import MODULE`` (repeatable, or comma-separated): import each module, whose import registers models."""
    for name in names:
        for module in (part.strip() for part in name.split(",")):
            if module:
                import_plugin(PluginSource(origin, module))
                if module not in _imported:
                    _imported.append(module)


def imported_modules() -> list[str]:
    """The modules --import'ed in this process, in order: what a child process is given in IMPORT_ENV."""
    return list(_imported)


def child_env() -> dict[str, str]:
    """The environment entry that makes a child process (a torchrun rank) import this process's --import modules."""
    return {IMPORT_ENV: ",".join(_imported)} if _imported else {}
