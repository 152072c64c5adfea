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
# click's UsageError, wherever this typer version keeps click (vendored or the package).
_CLICK_USAGE_ERROR: type[Exception] = next(
    c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError"
)


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
        # Not standalone: click's multi-line usage box becomes our one `error:` line.
        code = app(standalone_mode=False)
    except _CLICK_USAGE_ERROR as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":  # a bare group: show its help
            exc.show()  # type: ignore[attr-defined]
            raise SystemExit(0) from None
        print_error(f"{exc.format_message()} (see --help)")  # type: ignore[attr-defined]
        raise SystemExit(EXIT_USAGE) from None
    except UsageError as exc:
        print_error(str(exc))
        raise SystemExit(EXIT_USAGE) from None
    except typer.Abort:
        print_error("aborted")
        raise SystemExit(130) from None
    raise SystemExit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
