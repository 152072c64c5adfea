"""Analysis commands: analyze, report, recommend, compare, size (parse, run, print)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated

import pandas as pd
import typer
from rich.table import Table

from poolbench.analysis.analyse import Analysis, analyse
from poolbench.analysis.load import Sweep, load_sweep
from poolbench.analysis.models import (
    DEFAULT_P99_WAIT_MS,
    DEFAULT_TOLERANCE,
)
from poolbench.analysis.recommend import recommend_snippet
from poolbench.analysis.summary import summary
from poolbench.analysis.thresholds import Threshold, check_thresholds, parse_threshold
from poolbench.cli.common import (
    EXIT_INCONCLUSIVE,
    EXIT_THRESHOLD,
    IdleTimeoutOpt,
    InstancesOpt,
    JsonOpt,
    MaxConnectionsOpt,
    P99WaitOpt,
    ReservedOpt,
    WorkersOpt,
    console,
    fail,
    stderr,
    usage_errors,
    write_json,
)
from poolbench.errors import UsageError
from poolbench.fmt import num, pct
from poolbench.objectives import Demand
from poolbench.report.html import (
    default_report_path,
    render_analysis,
)

MAX_TABLE_ROWS = 60

SweepArg = Annotated[
    Path, typer.Argument(help="Sweep directory (results/<name>-<stamp>) or Locust CSV prefix.")
]
ToleranceOpt = Annotated[
    float,
    typer.Option(
        help="Accept configs within this fraction of the best throughput.", min=0, max=0.99
    ),
]
FailOnOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--fail-on",
        help="Exit 1 when true for the recommended config, e.g. 'p95_ms>200' (repeatable; "
        "metrics p50_ms p95_ms p99_ms error_rate rps; operators > >= < <= ==).",
    ),
]
DbCoresOpt = Annotated[
    int | None,
    typer.Option(
        "--db-cores", help="Database server cores for HikariCP (default: host cores).", min=1
    ),
]


def _parse_thresholds(texts: list[str] | None) -> list[Threshold]:
    return [parse_threshold(text) for text in texts or []]


def load_and_analyse(
    sweep_dir: Path,
    *,
    instances: int | None,
    workers: int | None,
    max_connections: int | None,
    reserved: int | None,
    tolerance: float = DEFAULT_TOLERANCE,
    db_cores: int | None = None,
    p99_wait_ms: float = DEFAULT_P99_WAIT_MS,
) -> Analysis:
    sweep: Sweep = load_sweep(sweep_dir)
    fleet = sweep.fleet(
        instances=instances,
        workers_per_instance=workers,
        max_connections=max_connections,
        reserved_connections=reserved,
    )
    return analyse(
        sweep, fleet=fleet, tolerance=tolerance, db_cores=db_cores, p99_wait_ms=p99_wait_ms
    )


def _finish(analysis: Analysis, thresholds: list[Threshold], json_path: Path | None) -> None:
    """Write --json; exit 3 when inconclusive, else 1 when a threshold failed."""
    failed = check_thresholds(thresholds, analysis.metrics())
    if json_path is not None:
        write_json(json_path, summary(analysis, thresholds, failed))
    for threshold, actual in failed:
        stderr.print(
            f"threshold failed: {threshold} ({threshold.metric} = {num(actual, 4)})",
            markup=False,
        )
    if analysis.headline.optimum.inconclusive:
        fail(analysis.headline.optimum.reason, code=EXIT_INCONCLUSIVE)
    if failed:
        raise typer.Exit(EXIT_THRESHOLD)


# --- analyze -------------------------------------------------------------------------------


def _shape_columns(frame: pd.DataFrame) -> dict[str, str]:
    """The production-shape columns worth a column: only when not every run is the default."""
    shown = {}
    if "app_workers" in frame and (frame["app_workers"].fillna(1) > 1).any():
        shown["workers"] = "app_workers"
    if "pooler" in frame and (frame["pooler"] == "pgbouncer").any():
        shown["pgb pool"] = "pgbouncer_pool_size"
    return shown


def _config_table(analysis: Analysis) -> Table:
    table = Table(title=f"Configs of {analysis.sweep.name} (mean of repetitions)")
    shape = _shape_columns(analysis.table)
    for header in shape:
        table.add_column(header, justify="right")
    for header in (
        "pool",
        "overflow",
        "limit",
        "users",
        "q/req",
        "reps",
        "rps",
        "±CI",
        "p50",
        "p95",
        "p99",
        "errors",
        "wait p95",
        "hold",
        "eff",
        "peak",
        "timeouts",
        "bottleneck",
    ):
        table.add_column(header, justify="left" if header == "bottleneck" else "right")
    rows = analysis.table.sort_values(["connections", "max_overflow"], kind="stable")
    for i, row in enumerate(rows.to_dict("records")):
        if i >= MAX_TABLE_ROWS:
            table.add_row(f"... {len(rows) - MAX_TABLE_ROWS} more in the HTML report")
            break
        is_rec = analysis.is_recommended(row)
        table.add_row(
            *(num(row[column], 0) if pd.notna(row[column]) else "-" for column in shape.values()),
            num(row["pool_size"], 0),
            num(row["max_overflow"], 0),
            num(row["http_concurrency_limit"], 0),
            num(row["users"], 0),
            num(row["queries_per_request"], 0),
            str(row["reps"]),
            num(row["rps"]),
            num(row["rps_ci"]),
            num(row["p50_ms"]),
            num(row["p95_ms"]),
            num(row["p99_ms"]),
            pct(row["error_rate"]),
            num(row["acquire_wait_p95_ms"]),
            num(row["hold_time_mean_ms"]),
            num(row.get("littles_efficiency"), 2),
            num(row["peak_checked_out"], 0),
            num(row["pool_timeouts"], 0),
            str(row["bottleneck"]),
            style="bold green" if is_rec else None,
        )
    return table


def _models_table(analysis: Analysis) -> Table | None:
    workload = analysis.headline
    if not workload.models:
        return None
    optimum = workload.optimum.row or {}
    table = Table(
        title=f"Sizing models vs measured optimum ({num(optimum.get('connections'), 0)} "
        f"connections, {num(optimum.get('rps'))} rps)"
    )
    for header in (
        "model",
        "connections",
        "vs optimum",
        "predicted rps",
        "measured rps",
        "error",
        "fleet",
        "formula",
    ):
        table.add_column(header, justify="left" if header in ("model", "formula") else "right")
    for c in workload.models:
        table.add_row(
            c.model.name,
            "-" if c.model.pool_size is None else str(c.model.pool_size),
            "-" if c.size_error is None else f"{c.size_error:+.0f}",
            num(c.model.predicted_rps),
            num(c.measured_rps),
            "-" if c.rps_error_pct is None else f"{c.rps_error_pct:+.1f}%",
            "-" if c.fits_fleet is None else ("fits" if c.fits_fleet else "OVER"),
            c.model.formula if c.model.pool_size is not None else c.model.note,
        )
    return table


def _print_summary(analysis: Analysis) -> None:
    rec = analysis.recommended
    optimum = analysis.headline.optimum
    if rec is not None and not math.isnan(float(rec.get("pool_size", math.nan))):
        console.print(
            f"[bold]Recommended:[/] pool_size={num(rec['pool_size'], 0)} "
            f"max_overflow={num(rec['max_overflow'], 0)} -> {num(rec['rps'])} rps, "
            f"p95 {num(rec['p95_ms'])} ms"
        )
        console.print(f"  why: {optimum.reason}", markup=False)
        for line in analysis.headline.noise.lines if analysis.headline.noise else []:
            console.print(f"  noise: {line}", markup=False)
    verdict = analysis.verdict()
    style = "green" if verdict.startswith("PASS") else "red" if verdict.startswith("FAIL") else ""
    console.print(f"[bold]SLO:[/] [{style}]{verdict}[/]" if style else f"SLO: {verdict}")
    if analysis.fleet is not None and rec is not None:
        demand = Demand.of(rec)
        console.print(f"[bold]Fleet ({demand.pools_named}):[/] {analysis.fleet.describe(demand)}")
    if analysis.warnings:
        console.print("[bold yellow]Warnings:[/]")
        for warning in analysis.warnings:
            console.print(f"  - {warning}", markup=False)


@usage_errors
def analyze(
    sweep_dir: SweepArg,
    instances: InstancesOpt = None,
    workers_per_instance: WorkersOpt = None,
    max_connections: MaxConnectionsOpt = None,
    reserved: ReservedOpt = None,
    tolerance: ToleranceOpt = DEFAULT_TOLERANCE,
    db_cores: DbCoresOpt = None,
    p99_wait_ms: P99WaitOpt = DEFAULT_P99_WAIT_MS,
    fail_on: FailOnOpt = None,
    json_path: JsonOpt = None,
) -> None:
    """Analyse a sweep: per-config table, sizing models, optimum and warnings."""
    thresholds = _parse_thresholds(fail_on)
    analysis = load_and_analyse(
        sweep_dir,
        instances=instances,
        workers=workers_per_instance,
        max_connections=max_connections,
        reserved=reserved,
        tolerance=tolerance,
        db_cores=db_cores,
        p99_wait_ms=p99_wait_ms,
    )
    console.print(_config_table(analysis))
    models = _models_table(analysis)
    if models is not None:
        console.print(models)
    _print_summary(analysis)
    _finish(analysis, thresholds, json_path)


# --- report --------------------------------------------------------------------------------


@usage_errors
def report(
    sweep_dir: SweepArg,
    out: Annotated[
        Path | None, typer.Option(help="Output HTML file (default: the sweep's report.html).")
    ] = None,
    instances: InstancesOpt = None,
    workers_per_instance: WorkersOpt = None,
    max_connections: MaxConnectionsOpt = None,
    reserved: ReservedOpt = None,
    tolerance: ToleranceOpt = DEFAULT_TOLERANCE,
    fail_on: FailOnOpt = None,
    json_path: JsonOpt = None,
) -> None:
    """Render a self-contained HTML report of a sweep and print its path."""
    thresholds = _parse_thresholds(fail_on)
    analysis = load_and_analyse(
        sweep_dir,
        instances=instances,
        workers=workers_per_instance,
        max_connections=max_connections,
        reserved=reserved,
        tolerance=tolerance,
    )
    try:
        path = render_analysis(analysis, out or default_report_path(sweep_dir))
    except OSError as exc:
        raise UsageError(f"{out}: cannot write report ({exc.strerror or exc})") from None
    typer.echo(str(path))
    _finish(analysis, thresholds, json_path)


@usage_errors
def recommend(
    sweep_dir: SweepArg,
    instances: InstancesOpt = None,
    workers_per_instance: WorkersOpt = None,
    max_connections: MaxConnectionsOpt = None,
    reserved: ReservedOpt = None,
    tolerance: ToleranceOpt = DEFAULT_TOLERANCE,
    idle_timeout_s: IdleTimeoutOpt = None,
    fail_on: FailOnOpt = None,
    json_path: JsonOpt = None,
) -> None:
    """Print a ready-to-paste pool config (env vars and engine kwargs) with reasons and risks."""
    thresholds = _parse_thresholds(fail_on)
    analysis = load_and_analyse(
        sweep_dir,
        instances=instances,
        workers=workers_per_instance,
        max_connections=max_connections,
        reserved=reserved,
        tolerance=tolerance,
    )
    if not analysis.headline.optimum.inconclusive:
        typer.echo(recommend_snippet(analysis, idle_timeout_s))
    _finish(analysis, thresholds, json_path)


def render_sweep_report(sweep_dir: Path) -> Path:
    """Load, analyse and render a sweep to its `report.html`."""
    analysis = analyse(load_sweep(sweep_dir))
    return render_analysis(analysis, default_report_path(sweep_dir))
