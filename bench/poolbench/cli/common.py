"""What every command shares: consoles, one-line errors with exit codes, and common options."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any, NoReturn, ParamSpec, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from poolbench.analysis.models import ModelResult
from poolbench.errors import UsageError
from poolbench.fmt import num
from poolbench.objectives import Fleet

EXIT_USAGE = 2
EXIT_THRESHOLD = 1
EXIT_INCONCLUSIVE = 3  # nothing trustworthy measured: no pool recommendation
# Wide enough for the tables when piped (rich assumes 80 columns without a terminal).
console = Console(highlight=False, width=None if sys.stdout.isatty() else 160)
stderr = Console(stderr=True, highlight=False, soft_wrap=True)

P = ParamSpec("P")
R = TypeVar("R")


def print_error(message: str) -> None:
    """Print `error: <message>` on stderr as one line."""
    stderr.print(f"error: {' '.join(message.split())}", markup=False)


def fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    """Print `error: <message>` on stderr and exit with `code` (inside a typer command)."""
    print_error(message)
    raise typer.Exit(code)


def usage_errors(func: Callable[P, R]) -> Callable[P, R]:
    """Turn UsageError into one `error:` line and exit 2, also under typer's CliRunner."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except UsageError as exc:
            fail(str(exc))

    return wrapper


def write_json(path: Path, document: Mapping[str, Any]) -> None:
    """Write a --json document; an unwritable path is a usage error."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(document, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"{path}: cannot write JSON ({exc.strerror or exc})") from None


InstancesOpt = Annotated[
    int | None, typer.Option("--instances", help="App instances (overrides [fleet]).", min=1)
]
WorkersOpt = Annotated[
    int | None,
    typer.Option("--workers-per-instance", help="Worker processes per instance.", min=1),
]
MaxConnectionsOpt = Annotated[
    int | None, typer.Option("--max-connections", help="Postgres max_connections.", min=1)
]
ReservedOpt = Annotated[
    int | None,
    typer.Option(
        "--reserved", help="Connections reserved for admins, migrations, replicas.", min=0
    ),
]
JsonOpt = Annotated[
    Path | None, typer.Option("--json", help="Also write a machine-readable summary here.")
]
P99WaitOpt = Annotated[
    float,
    typer.Option(
        "--p99-wait-ms", help="Erlang C's wait budget at p99 when there is no SLO p95.", min=0
    ),
]
# The sizing models' inputs that `size` and `observe` both take.
DbCoresOpt = Annotated[
    int | None,
    typer.Option(help="Database server cores (HikariCP; default: this host's).", min=1),
]
SpindlesOpt = Annotated[int, typer.Option(help="Effective spindles (0 if cached).", min=0)]
HeadroomOpt = Annotated[
    float, typer.Option(help="Multiplier on Little's-law busy connections.", min=1)
]
IdleTimeoutOpt = Annotated[
    float | None,
    typer.Option(
        "--idle-timeout-s",
        help="Shortest idle cutoff between app and DB (PgBouncer, LB, idle_session_timeout).",
        min=1,
    ),
]


def models_table(title: str, results: Iterable[ModelResult], fleet: Fleet | None) -> Table:
    """Every model's size per process, its predicted rps, whether the fleet fits it, and why."""
    table = Table(title=title)
    for header in ("model", "connections", "predicted rps", "fleet", "formula / why not"):
        left = header in ("model", "formula / why not")
        table.add_column(header, justify="left" if left else "right")
    for result in results:
        fits = (
            "-"
            if fleet is None or result.pool_size is None
            else ("fits" if fleet.fits(result.pool_size) else "OVER")
        )
        table.add_row(
            result.name,
            "-" if result.pool_size is None else str(result.pool_size),
            num(result.predicted_rps),
            fits,
            result.formula if result.pool_size is not None else result.note,
        )
    return table
