"""`poolbench compare`: two sweeps config by config, with Welch's t-test verdicts."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from poolbench.analysis.compare import (
    DEFAULT_ALPHA,
    DEFAULT_DELTA_PCT,
    Comparison,
    p_text,
)
from poolbench.analysis.compare import compare as compare_sweeps
from poolbench.cli.analysis import load_and_analyse
from poolbench.cli.common import (
    EXIT_THRESHOLD,
    console,
    stderr,
    usage_errors,
)
from poolbench.errors import UsageError
from poolbench.fmt import num, pct, signed_pct
from poolbench.report.html import (
    render_comparison,
)


def _change_cell(delta: str, change: str) -> str:
    """`+12.3% worse`: the change and its verdict, coloured by the verdict."""
    colour = {"better": "green", "worse": "red", "same": "default", "untested": "dim"}[change]
    return f"[{colour}]{delta} {change}[/]"


def _comparison_table(comparison: Comparison) -> Table:
    before, after = escape(comparison.before.sweep.name), escape(comparison.after.sweep.name)
    table = Table(
        title=f"{before} -> {after}: Welch's t-test over repetitions; better or worse when "
        f"p < {comparison.alpha:g} and the mean moved >= {comparison.threshold_pct:g}%"
    )
    for header in (
        "pool",
        "overflow",
        "users",
        "q/req",
        "reps",
        "rps",
        "Δ rps",
        "p",
        "p95 ms",
        "Δ p95",
        "p",
        "errors",
        "p",
    ):
        table.add_column(header, justify="right")
    for d in comparison.deltas.to_dict("records"):
        excluded = d["excluded_reps_before"] + d["excluded_reps_after"]
        table.add_row(
            num(d["pool_size"], 0),
            num(d["max_overflow"], 0),
            num(d["users"], 0),
            num(d["queries_per_request"], 0),
            f"{d['reps_before']}/{d['reps_after']}{'*' if excluded else ''}",
            f"{num(d['rps_before'])} → {num(d['rps_after'])}",
            _change_cell(signed_pct(d["rps_delta_pct"]), d["rps_change"]),
            p_text(d["rps_p"]),
            f"{num(d['p95_ms_before'])} → {num(d['p95_ms_after'])}",
            _change_cell(signed_pct(d["p95_delta_pct"]), d["p95_change"]),
            p_text(d["p95_p"]),
            _change_cell(
                f"{pct(d['error_rate_before'])} → {pct(d['error_rate_after'])}", d["error_change"]
            ),
            p_text(d["error_p"]),
        )
    return table


@usage_errors
def compare(
    sweep_a: Annotated[Path, typer.Argument(help="The before sweep.")],
    sweep_b: Annotated[Path, typer.Argument(help="The after sweep.")],
    out: Annotated[
        Path | None,
        typer.Option(help="Output HTML file (default reports/compare-<a>-vs-<b>.html)."),
    ] = None,
    threshold_pct: Annotated[
        float,
        typer.Option(
            help="Call a significant change only when it is at least this many percent.", min=0
        ),
    ] = DEFAULT_DELTA_PCT,
    alpha: Annotated[
        float,
        typer.Option(help="Significance level of each config's Welch's t-test.", min=0, max=1),
    ] = DEFAULT_ALPHA,
    fail_on_regression: Annotated[
        bool,
        typer.Option(
            "--fail-on-regression",
            help="Exit 1 when a config got significantly worse (rps down, p95 or errors up).",
        ),
    ] = False,
) -> None:
    """Compare two sweeps config by config (Welch's t-test) and write a before/after report."""
    before = load_and_analyse(
        sweep_a, instances=None, workers=None, max_connections=None, reserved=None
    )
    after = load_and_analyse(
        sweep_b, instances=None, workers=None, max_connections=None, reserved=None
    )
    comparison = compare_sweeps(before, after, threshold_pct, alpha)
    console.print(_comparison_table(comparison))
    if comparison.deltas.empty:
        console.print("No config appears in both sweeps.")
    note = comparison.untrusted_note()
    if note is not None:
        console.print(f"* {note}", markup=False)
    console.print(f"before: {before.verdict()}", markup=False)
    console.print(f"after:  {after.verdict()}", markup=False)
    # Beside the later sweep, as its own report is.
    name = f"compare-{before.sweep.name}-vs-{after.sweep.name}.html"
    path = out or Path(sweep_b).parent / name
    try:
        written = render_comparison(comparison, path)
    except OSError as exc:
        raise UsageError(f"{path}: cannot write report ({exc.strerror or exc})") from None
    typer.echo(str(written))
    regressions = comparison.regressions()
    for line in regressions:
        stderr.print(f"regression: {line}", markup=False)
    if fail_on_regression and regressions:
        raise typer.Exit(EXIT_THRESHOLD)
