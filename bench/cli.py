"""The `poolbench` command line: one typer app, one module per pipeline stage."""

from __future__ import annotations

import signal
import time
from typing import Annotated

import typer
from rich.console import Console

from bench.cli_analysis import register as register_analysis
from bench.errors import EXIT_USAGE, UsageError, fail, print_error
from bench.pg import DEFAULT_MAX_CONNECTIONS, PostgresServer, PostgresUnavailable
from bench.run import sweep

app = typer.Typer(help="Measure connection pools instead of guessing them.", no_args_is_help=True)
db_app = typer.Typer(help="Run a throwaway PostgreSQL cluster.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.command("sweep")(sweep)
register_analysis(app)
console = Console()


@db_app.command("up")
def db_up(
    max_connections: Annotated[
        int, typer.Option(help="Postgres max_connections.", min=1)
    ] = DEFAULT_MAX_CONNECTIONS,
) -> None:
    """Start a throwaway cluster, print its DSN, and stop it on Ctrl-C."""
    try:
        server = PostgresServer(max_connections=max_connections)
        with server as db:
            console.print(f"export BENCH_DATABASE_URL={db.dsn}")
            console.print("Postgres is up; Ctrl-C stops it and deletes the cluster.")
            signal.signal(signal.SIGTERM, signal.default_int_handler)
            while True:
                time.sleep(3600)
    except PostgresUnavailable as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        console.print("Postgres stopped.")


def main() -> None:
    """Entry point that turns usage errors into one line and exit code 2."""
    try:
        app()
    except UsageError as exc:
        print_error(str(exc))
        raise SystemExit(EXIT_USAGE) from None


if __name__ == "__main__":
    main()
