"""Errors a user can cause. The command-line entry points print them as one line and exit non-zero."""
from __future__ import annotations


class UserError(Exception):
    """Bad input from the user: a message that is the whole story, and an exit code."""

    exit_code = 2

    def __init__(self, message: str, exit_code: int | None = None):
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code

