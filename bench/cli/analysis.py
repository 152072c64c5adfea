"""Analysis commands: analyze, report, recommend, compare, size (parse, run, print)."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from bench.analysis.analyse import Analysis, analyse
from bench.analysis.compare import (
    DEFAULT_ALPHA,
    DEFAULT_DELTA_PCT,
    Comparison,
    p_text,
)
from bench.analysis.compare import compare as compare_sweeps
from bench.analysis.load import Sweep, load_sweep
from bench.analysis.models import (
    DEFAULT_HEADROOM,
    DEFAULT_P99_WAIT_MS,
    DEFAULT_TOLERANCE,
    SizingInputs,
    deadlock_floor,
    request_hold_time_ms,
    seed_formula_explanation,
    size_all,
    throughput_ceiling_rps,
)
from bench.analysis.recommend import recommend_snippet
from bench.analysis.summary import size_summary, summary
from bench.analysis.thresholds import Threshold, check_thresholds, parse_threshold
from bench.cli.common import (
    EXIT_INCONCLUSIVE,
    EXIT_THRESHOLD,
    InstancesOpt,
    JsonOpt,
    MaxConnectionsOpt,
    ReservedOpt,
    WorkersOpt,
    console,
    fail,
    stderr,
    usage_errors,
    write_json,
)
from bench.errors import UsageError
from bench.fmt import num, pct, signed_pct
from bench.report.html import (
    DEFAULT_REPORTS_DIR,
    default_report_path,
    render_analysis,
    render_comparison,
)
from bench.spec import Fleet

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
P99WaitOpt = Annotated[
    float, typer.Option("--p99-wait-ms", help="Erlang C target: p99 connection wait.", min=0)
]


def _parse_thresholds(texts: list[str] | None) -> list[Threshold]:
    return [parse_threshold(text) for text in texts or []]


def _load_and_analyse(
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


def _config_table(analysis: Analysis) -> Table:
    table = Table(title=f"Configs of {analysis.sweep.name} (mean of repetitions)")
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
    verdict = analysis.verdict()
    style = "green" if verdict.startswith("PASS") else "red" if verdict.startswith("FAIL") else ""
    console.print(f"[bold]SLO:[/] [{style}]{verdict}[/]" if style else f"SLO: {verdict}")
    if analysis.fleet is not None and rec is not None:
        console.print(f"[bold]Fleet:[/] {analysis.fleet.describe(rec['connections'])}")
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
    analysis = _load_and_analyse(
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
        Path | None, typer.Option(help="Output HTML file (default reports/<sweep name>.html).")
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
    analysis = _load_and_analyse(
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
    idle_timeout_s: Annotated[
        float | None,
        typer.Option(
            "--idle-timeout-s",
            help="Shortest idle cutoff between app and DB (PgBouncer, LB, idle_session_timeout).",
            min=1,
        ),
    ] = None,
    fail_on: FailOnOpt = None,
    json_path: JsonOpt = None,
) -> None:
    """Print a ready-to-paste pool config (env vars and engine kwargs) with reasons and risks."""
    thresholds = _parse_thresholds(fail_on)
    analysis = _load_and_analyse(
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


# --- compare -------------------------------------------------------------------------------


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
    before = _load_and_analyse(
        sweep_a, instances=None, workers=None, max_connections=None, reserved=None
    )
    after = _load_and_analyse(
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
    path = out or DEFAULT_REPORTS_DIR / f"compare-{before.sweep.name}-vs-{after.sweep.name}.html"
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


# --- size ----------------------------------------------------------------------------------


@usage_errors
def size(
    concurrency: Annotated[
        float, typer.Option(help="Concurrent requests per process (e.g. users).", min=1)
    ],
    queries_per_request: Annotated[
        float, typer.Option(help="Queries per request (one session per request).", min=1)
    ] = 1,
    hold_time_ms: Annotated[
        float | None,
        typer.Option(help="Connection hold time per request (checkout to checkin).", min=0),
    ] = None,
    per_query_ms: Annotated[
        float | None, typer.Option(help="Time per query, if hold time is unknown.", min=0)
    ] = None,
    overhead_ms: Annotated[
        float, typer.Option(help="Work between queries while the session is held.", min=0)
    ] = 0.0,
    target_rps: Annotated[
        float | None,
        typer.Option(
            help="Target requests/s per process (default: concurrency / hold time).", min=0
        ),
    ] = None,
    db_cores: Annotated[
        int | None,
        typer.Option(help="Database server cores (HikariCP; default: this host's).", min=1),
    ] = None,
    spindles: Annotated[int, typer.Option(help="Effective spindles (0 if cached).", min=0)] = 0,
    p99_wait_ms: P99WaitOpt = DEFAULT_P99_WAIT_MS,
    headroom: Annotated[
        float, typer.Option(help="Multiplier on Little's-law busy connections.", min=1)
    ] = DEFAULT_HEADROOM,
    connections_per_request: Annotated[
        int, typer.Option(help="Connections one request holds at once (deadlock floor).", min=1)
    ] = 1,
    instances: InstancesOpt = None,
    workers_per_instance: WorkersOpt = None,
    max_connections: MaxConnectionsOpt = None,
    reserved: ReservedOpt = None,
    json_path: JsonOpt = None,
) -> None:
    """Size a pool without a benchmark: every model's answer plus the fleet check."""
    if hold_time_ms is None:
        if per_query_ms is None:
            raise UsageError("give --hold-time-ms or --per-query-ms")
        hold_time_ms = request_hold_time_ms(queries_per_request, per_query_ms, overhead_ms)
    if hold_time_ms <= 0:
        raise UsageError("hold time must be > 0 ms")
    inputs = SizingInputs(
        concurrency=concurrency,
        queries_per_request=queries_per_request,
        hold_time_ms=hold_time_ms,
        target_rps=target_rps,
        db_cores=db_cores or os.cpu_count() or 1,
        spindles=spindles,
        wait_budget_ms=p99_wait_ms,
        headroom=headroom,
    )
    given = {
        "instances": instances,
        "workers_per_instance": workers_per_instance,
        "max_connections": max_connections,
        "reserved_connections": reserved,
    }
    fleet = Fleet().with_overrides(**given) if any(v is not None for v in given.values()) else None
    results = size_all(inputs, usl_note="needs a capacity sweep (>= 6 pool sizes)", corrected=True)
    floor = deadlock_floor(math.ceil(concurrency), connections_per_request)
    table = Table(
        title=f"Pool size per process: {concurrency:g} concurrent, {queries_per_request:g} "
        f"queries/request, hold {hold_time_ms:.1f} ms, {inputs.offered_rps:.1f} rps"
    )
    for header in ("model", "connections", "predicted rps", "fleet", "formula"):
        table.add_column(header, justify="left" if header in ("model", "formula") else "right")
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
    console.print(table)
    if connections_per_request > 1:
        console.print(
            f"Deadlock floor: {math.ceil(concurrency)} x ({connections_per_request} - 1) + 1 = "
            f"{floor} connections (a smaller pool can deadlock)."
        )
    if fleet is not None:
        console.print(
            f"Fleet: {fleet.processes} processes share {fleet.budget} connections: at most "
            f"{fleet.per_process} per process, a Little's-law ceiling of "
            f"{throughput_ceiling_rps(fleet.per_process, hold_time_ms):.1f} rps per process."
        )
    console.print(
        seed_formula_explanation(
            concurrency, queries_per_request, hold_time_ms, inputs.offered_rps
        ),
        markup=False,
    )
    if json_path is not None:
        write_json(json_path, size_summary(inputs, results, fleet, floor))


def render_sweep_report(sweep_dir: Path) -> Path:
    """Load, analyse and render a sweep to `reports/<sweep dir name>.html`."""
    analysis = analyse(load_sweep(sweep_dir))
    return render_analysis(analysis, default_report_path(sweep_dir))
