"""`poolbench sweep`: resolve the spec and options, run the sweep, print progress and a table."""

from __future__ import annotations

import os
import sys
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from poolbench import shipped
from poolbench.cli.common import fail
from poolbench.errors import Interrupted, RunError, UsageError
from poolbench.fmt import num, pct
from poolbench.results import MANIFEST_FILE, WORKER_SCRIPT, finished_runs, read_manifest
from poolbench.spec import ADAPTIVE, CAPACITY, SEARCHES, Point, SweepSpec
from poolbench.specfile import load_spec, parse_override, spec_from_dict
from poolbench.sweep.commands import DEFAULT_MASTER_BIND_HOST, RemoteWorkers
from poolbench.sweep.dsn import DSN_ENV, check_database, parse_dsn
from poolbench.sweep.pg import free_port
from poolbench.sweep.runner import Measured, SweepListener, run_sweep
from poolbench.sweep.sweepdir import SweepDir

DEFAULT_RESULTS_DIR = Path("results")
AUTO_WORKERS = "auto"
TABLE_COLUMNS = (
    ("run_id", "run_id", "{}"),
    ("rps", "rps", "{:.1f}"),
    ("p95 ms", "p95_ms", "{:.1f}"),
    ("err", "error_rate", "{:.3f}"),
    ("wait p95 ms", "acquire_wait_p95_ms", "{:.1f}"),
    ("hold ms", "hold_time_mean_ms", "{:.1f}"),
    ("peak out", "peak_checked_out", "{}"),
    ("app cpu %", "app_cpu_pct", "{:.0f}"),
    ("locust cpu %", "locust_cpu_pct", "{:.0f}"),
    ("bottleneck", "bottleneck", "{}"),
)


def summary_line(index: int, total: int, measured: Measured) -> str:
    """One line per finished run: throughput, latency, errors, pool wait and the verdict."""
    f = measured.figures
    return (
        f"[{index}/{total}] {measured.point.run_id:<28} rps {num(f.get('rps')):>7}  "
        f"p95 {num(f.get('p95_ms')) + ' ms':>10}  "
        f"err {pct(f.get('error_rate'), 1):>6}  "
        f"wait p95 {num(f.get('acquire_wait_p95_ms')) + ' ms':>9}  {f['bottleneck']}"
    )


def runs_table(sweep: SweepDir) -> Table:
    """Every finished run of the sweep, in point order."""
    table = Table(title="runs", show_lines=False)
    for title, *_ in TABLE_COLUMNS:
        table.add_column(title, justify="left" if title in ("run_id", "bottleneck") else "right")
    for point in sweep.points:
        if point.run_id not in sweep.records:
            continue
        row = {"run_id": point.run_id, **sweep.records[point.run_id].figures}
        table.add_row(
            *("-" if row.get(k) is None else fmt.format(row[k]) for _, k, fmt in TABLE_COLUMNS)
        )
    return table


class ConsoleListener(SweepListener):
    """Shows a sweep's progress on the terminal."""

    def __init__(self, console: Console, name: str) -> None:
        self.name = name
        self.sweep: SweepDir | None = None
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            console=console,
            transient=True,
        )
        self.task = self.progress.add_task(name, total=None)
        self.printed_command = ""

    def started(self, sweep: SweepDir, todo: list[Point]) -> None:
        self.sweep = sweep
        done = len(sweep.points) - len(todo)
        if sweep.previous_ending:
            self.progress.console.print(f"resume: the sweep {sweep.previous_ending}")
        if done:
            self.progress.console.print(
                f"resume: {done} of {len(sweep.points)} runs already finished"
            )
        self.progress.update(self.task, total=len(todo))

    def run_started(self, point: Point) -> None:
        self.progress.update(self.task, description=f"{self.name} {point.run_id}")

    def run_finished(self, index: int, total: int, measured: Measured) -> None:
        self.progress.console.print(summary_line(index, total, measured))
        self.progress.advance(self.task)

    def worker_command(self, point: Point, command: str, script: Path) -> None:
        out = self.progress.console
        if command == self.printed_command:
            out.print(f"{point.run_id}: start the remote workers again ({script})")
            return
        out.print(f"{point.run_id}: start remote workers with ({script}):")
        out.print(command, markup=False, highlight=False, soft_wrap=True)
        self.printed_command = command


def _resolve(
    spec_path: str | None, resume: Path | None, overrides: dict[str, Any]
) -> tuple[SweepSpec, str]:
    if resume is None:
        if spec_path is None:
            raise UsageError(
                "give a SPEC (a shipped name such as quick, or a file) or --resume DIR"
            )
        return load_spec(shipped.spec_path(spec_path), overrides), spec_path
    manifest_path = resume / MANIFEST_FILE
    try:
        manifest = read_manifest(resume)
    except UsageError as exc:
        raise UsageError(f"--resume {resume}: {exc}") from None
    if manifest is None:
        raise UsageError(f"--resume {resume}: no {MANIFEST_FILE} (not a sweep directory)")
    raw = manifest.get("spec")
    if not isinstance(raw, dict):
        raise UsageError(f"--resume {resume}: {MANIFEST_FILE} holds no spec; start a new sweep")
    stored = spec_from_dict(raw, source=str(manifest_path))
    if spec_path is None:
        spec = spec_from_dict(raw, source=str(manifest_path), overrides=overrides)
        source = str(manifest.get("spec_path", manifest_path))
    else:
        spec, source = load_spec(shipped.spec_path(spec_path), overrides), spec_path
    # Finished runs were measured with the stored spec: a resumed sweep must keep it.
    if changed := _changed_fields(stored.to_dict(), spec.to_dict()):
        given = f"{spec_path} (with options)" if spec_path else "the options"
        raise UsageError(
            f"--resume {resume}: {given} change {', '.join(changed)} of the sweep being "
            "resumed; start a new sweep instead"
        )
    return spec, source


def _changed_fields(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted names of the fields that differ between two spec dicts."""
    changed: list[str] = []
    for key in sorted(old.keys() | new.keys()):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            changed += _changed_fields(a, b, f"{prefix}{key}.")
        elif a != b:
            changed.append(f"{prefix}{key}")
    return changed


def parse_workers(value: str) -> int | None:
    """`--workers`: a number of local Locust processes (>= 1), or `auto` (None)."""
    if value.strip().lower() == AUTO_WORKERS:
        return None
    try:
        workers = int(value)
    except ValueError:
        workers = 0
    if workers < 1:
        raise UsageError(f"--workers {value}: give a number of processes (>= 1) or {AUTO_WORKERS}")
    return workers


def _remote_workers(
    count: int, local_workers: int | None, bind_host: str, port: int | None
) -> RemoteWorkers | None:
    if count == 0:
        return None
    if local_workers is not None and local_workers > 1:
        raise UsageError("--workers and --remote-workers: give one (local or remote workers)")
    return RemoteWorkers(count=count, bind_host=bind_host, port=port or free_port())


def sweep(
    spec_path: Annotated[
        str | None,
        typer.Argument(
            metavar="SPEC",
            help="A shipped spec by name (quick, capacity, queries, ...) or your own TOML file.",
        ),
    ] = None,
    out: Annotated[
        Path, typer.Option(help="Parent directory of the sweep's results directory.")
    ] = DEFAULT_RESULTS_DIR,
    resume: Annotated[
        Path | None, typer.Option(help="Finish a sweep directory, skipping finished runs.")
    ] = None,
    dsn: Annotated[
        str | None,
        typer.Option(help=f"Use this Postgres instead of a throwaway one (or set {DSN_ENV})."),
    ] = None,
    workers: Annotated[
        str,
        typer.Option(
            metavar=f"N|{AUTO_WORKERS}",
            help="Local Locust processes per run (N > 1: locust --processes N); their CPU is "
            f"measured as the load generator's. {AUTO_WORKERS}: per run, the fewest that keep "
            "each under Locust's CPU warning at the point's expected rate, at most the host's "
            "cores (run.json locust_workers says why).",
        ),
    ] = AUTO_WORKERS,
    remote_workers: Annotated[
        int,
        typer.Option(
            help="Run Locust as a master that waits for this many workers you start on other "
            "machines (the command is printed before each run and written to "
            f"{WORKER_SCRIPT}). Their CPU is not measured.",
            min=0,
        ),
    ] = 0,
    master_bind_host: Annotated[
        str, typer.Option(help="Interface the Locust master listens on for remote workers.")
    ] = DEFAULT_MASTER_BIND_HOST,
    master_port: Annotated[
        int | None,
        typer.Option(
            help="Port the Locust master listens on for remote workers (default: a free one).",
            min=1,
            max=65535,
        ),
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="Override a spec field: KEY=VALUE, e.g. grid.pool_size=[2,4]."),
    ] = None,
    duration: Annotated[
        float | None, typer.Option(help="Measured seconds per run (timing.duration_s).")
    ] = None,
    warmup: Annotated[
        float | None, typer.Option(help="Warm-up seconds per run (timing.warmup_s).")
    ] = None,
    repetitions: Annotated[
        int | None, typer.Option(help="Runs per grid point (timing.repetitions).")
    ] = None,
    users: Annotated[int | None, typer.Option(help="Locust users for every point.")] = None,
    locustfile: Annotated[
        Path | None,
        typer.Option(
            help="Your own locustfile instead of the spec's scenario: any file with a Locust "
            "user class; the measured window is added without changing it.",
        ),
    ] = None,
    search: Annotated[
        str | None,
        typer.Option(
            metavar="|".join(SEARCHES),
            help="grid: every point of the grid; adaptive: search pool size for the SLO "
            "boundary, running only the points next to it (default: the spec's `search`).",
        ),
    ] = None,
    report: Annotated[bool, typer.Option(help="Render the HTML report at the end.")] = True,
) -> None:
    """Run a sweep: the grid's points, or an adaptive search of them, into results/<name>-<t>/."""
    options = {
        "search": search,
        "timing.duration_s": duration,
        "timing.warmup_s": warmup,
        "timing.repetitions": repetitions,
        "grid.users": [users] if users is not None else None,
    }
    try:
        local_workers = parse_workers(workers)
        remote = _remote_workers(remote_workers, local_workers, master_bind_host, master_port)
        overrides = dict(parse_override(item) for item in set_ or [])
        overrides |= {key: value for key, value in options.items() if value is not None}
        if locustfile is not None:  # replaces the spec's scenario
            overrides |= {"locustfile": str(locustfile.resolve()), "scenario": None}
        spec, source = _resolve(spec_path, resume, overrides)
        if search == ADAPTIVE and spec.kind == CAPACITY:
            raise UsageError(
                "--search adaptive searches for the SLO boundary of an open model; a capacity "
                "sweep (closed loop) has none: set open_model_rps, or drop --search"
            )
        _sweep(spec, source, out, resume, dsn, local_workers, remote, report=report)
    except UsageError as exc:
        fail(str(exc))  # inside the command, so typer turns it into exit code 2


def _sweep(
    spec: SweepSpec,
    source: str,
    out: Path,
    resume: Path | None,
    dsn: str | None,
    workers: int | None,
    remote: RemoteWorkers | None,
    *,
    report: bool,
) -> None:
    dsn = dsn or os.environ.get(DSN_ENV) or None
    if dsn:
        dsn = parse_dsn(dsn)
        check_database(dsn)  # a wrong password or a missing database, before anything starts
    if resume is not None:
        sweep_dir = resume
    else:
        if out.exists() and not out.is_dir():
            raise UsageError(f"--out {out}: not a directory")
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        sweep_dir = out / f"{spec.name}-{stamp}"
        if sweep_dir.exists():
            raise UsageError(f"{sweep_dir} already exists; wait a second or use --resume")
    # Not a terminal (CI, a pipe): wide enough that the table is not squeezed.
    console = Console(highlight=False, width=None if sys.stdout.isatty() else 140)
    runs = len(spec.points())
    plan = f"{runs} runs"
    if spec.search == ADAPTIVE:
        plan = (
            f"{runs} runs (a capacity sweep: no SLO boundary to search, every point runs)"
            if spec.kind == CAPACITY
            else f"an adaptive search of {runs} grid runs"
        )
    console.print(f"sweep {spec.name}: {plan} -> {sweep_dir}")
    listener = ConsoleListener(console, spec.name)
    try:
        with listener.progress:
            result = run_sweep(
                spec,
                sweep_dir=sweep_dir,
                spec_path=source,
                dsn=dsn,
                workers=workers,
                resume=resume is not None,
                remote=remote,
                listener=listener,
            )
    except Interrupted as exc:
        kept = len(finished_runs(sweep_dir))
        console.print(f"interrupted ({exc}): {kept} finished runs kept in {sweep_dir}")
        raise typer.Exit(128 + exc.signum) from None
    except RunError as exc:
        kept = len(finished_runs(sweep_dir))
        fail(f"{exc} ({kept} finished runs kept in {sweep_dir}; --resume {sweep_dir})", code=1)
    if listener.sweep is not None:
        console.print(runs_table(listener.sweep))
    console.print(f"results: {result.sweep_dir} ({result.finished} of {result.total} grid runs)")
    if report:
        from poolbench.cli.analysis import render_sweep_report

        typer.echo(f"report: {render_sweep_report(result.sweep_dir)}")  # never wrapped
