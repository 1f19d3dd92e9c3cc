"""Which models a run measures: ``--import``'ed modules first, then ``--models`` (zoo names, plugin names,
``torchvision:NAME``), then a check of every model from outside the zoo (zoo.validate) before anything is measured.

A model that fails its check is one ``error:`` line and leaves the run; the others are measured as if it had not
been asked for, and the run exits 2. Only when no model is left is the check's line the run's only output.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import zoo
from zoo.errors import UserError
from zoo.plugins import import_modules
from zoo.validate import check_models


def requested(text: str | Sequence[str]) -> list[str]:
    """``--models``: ``all`` (every registered model) or names (comma-separated text or a list, as RunConfig takes
    them), each one known (UserError else)."""
    items = text.split(",") if isinstance(text, str) else [str(t) for t in text]
    names = list(dict.fromkeys(t.strip() for t in items if t.strip()))
    if names == ["all"]:
        return zoo.list_models()
    if not names:
        raise UserError(f"--models is empty; choose from: {', '.join(zoo.list_models())}, torchvision:NAME")
    for name in names:
        zoo.get_spec(name)  # an unknown name: one line naming the choices
    return names


def pick_models(models: str | Sequence[str], imports: Sequence[str] | None) -> tuple[list[str], list[str]]:
    """(the models the run measures, one error line per model left out)."""
    import_modules(imports or [])
    good, rejected = check_models(requested(models))
    if not good:
        raise UserError(rejected[0] + (f" (and {len(rejected) - 1} more)" if len(rejected) > 1 else ""))
    return good, rejected


def add_model_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--models", default="all", help="comma-separated models, or all (default: every registered model); "
                                                  "torchvision:NAME is any torchvision classifier")
    p.add_argument("--import", "--imports", dest="imports", action="append", default=[], metavar="MODULE",
                   help="import MODULE first (repeatable, or comma-separated): its register_model calls add models "
                        "(installed packages add theirs through the entry point group torch_zoo_bench.models)")


def announce_rejected(skipped: dict, argv: list[str], models: list[str]) -> list[str]:
    """Each left-out model's ``error:`` line (``skipped["rejected_models"]``), said before anything is measured;
    returns the argv --repeat's processes get: the same, asking only for the models that passed (the last --models
    wins)."""
    rejected = skipped.get("rejected_models", [])
    for line in rejected:
        print(f"error: {line}", file=sys.stderr)
    return [*argv, "--models", ",".join(models)] if rejected else list(argv)


def exit_code(skipped: dict, code: int) -> int:
    """2 when a model was left out and the run itself ended normally (0: all rows ok, 1: some failed)."""
    return 2 if skipped.get("rejected_models") and code in (0, 1) else code
