"""The `poolbench` command line: parses input, prints, and turns errors into exit codes."""

from __future__ import annotations

import typer

from poolbench.cli import analysis, compare, db, observe, size, sweep
from poolbench.cli.common import EXIT_USAGE, print_error
from poolbench.errors import Interrupted, UsageError

# Help texts are plain text: rich markup would eat "[fleet]" and every other TOML table name.
app = typer.Typer(
    help="Measure connection pools instead of guessing them.",
    no_args_is_help=True,
    rich_markup_mode=None,
)
app.add_typer(db.app, name="db")
app.command("sweep")(sweep.sweep)
app.command("analyze")(analysis.analyze)
app.command("report")(analysis.report)
app.command("recommend")(analysis.recommend)
app.command("compare")(compare.compare)
app.command("size")(size.size)
app.command("observe")(observe.observe)
# click's UsageError, wherever this typer version keeps click (vendored or the package).
_CLICK_USAGE_ERROR: type[Exception] = next(
    c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError"
)


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
    except Interrupted as exc:  # a signal that arrived where no command handles it itself
        print_error(f"interrupted by {exc}")
        raise SystemExit(128 + exc.signum) from None
    raise SystemExit(code if isinstance(code, int) else 0)
