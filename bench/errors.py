"""One clear error line and a non-zero exit, never a traceback."""

from __future__ import annotations

from typing import NoReturn

import typer
from rich.console import Console

EXIT_USAGE = 2
_stderr = Console(stderr=True, highlight=False, soft_wrap=True)


class UsageError(Exception):
    """Bad input from the user: a spec, an option or a results directory."""


def print_error(message: str) -> None:
    """Print `error: <message>` on stderr as one line."""
    _stderr.print(f"error: {' '.join(message.split())}", markup=False)


def fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    """Print `error: <message>` on stderr and exit with `code` (inside a typer command)."""
    print_error(message)
    raise typer.Exit(code)
