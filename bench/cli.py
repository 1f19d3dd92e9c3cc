"""What bench's commands (compare, matrix, history) share on the command line; torch-free, so comparing runs
never imports torch."""
from __future__ import annotations

import argparse
import sys


class OneLineParser(argparse.ArgumentParser):
    """argparse whose bad command line ends in one ``error: ... (see PROG --help)`` line and exit 2, not a usage dump."""

    def error(self, message: str):
        print(f"error: {message} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(2)
