"""`poolbench db up`: a throwaway PostgreSQL cluster by hand."""

from __future__ import annotations

import signal
import time
from typing import Annotated

import typer

from poolbench.cli.common import console, fail
from poolbench.errors import PostgresUnavailable
from poolbench.sweep.pg import DEFAULT_MAX_CONNECTIONS, PostgresServer

app = typer.Typer(
    help="Run a throwaway PostgreSQL cluster.", no_args_is_help=True, rich_markup_mode=None
)


@app.command("up")
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
