"""The one argument parser of bench's commands (run, compare, matrix, history); torch-free, so comparing runs
never imports torch."""
from __future__ import annotations

import argparse
import sys


class OneLineParser(argparse.ArgumentParser):
    """argparse whose bad command line is one ``error: ... (see PROG --help)`` line and exit 2, not a usage dump.

    ``raises``: an exception type to raise with that line instead of exiting, for a command whose library entry
    point shares the parser (bench.run raises zoo.errors.UserError, which its main turns into the same line)."""

    def __init__(self, *args, raises: type[Exception] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.raises = raises

    def error(self, message: str):
        line = f"{message} (see {self.prog} --help)"
        if self.raises is not None:
            raise self.raises(line)
        print(f"error: {line}", file=sys.stderr)
        sys.exit(2)
