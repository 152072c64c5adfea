"""The sweep runner: for every point, start its target and Locust, and measure one window.

Orchestration only: what a run loads is a `LoadTarget` (`poolbench.sweep.target`), argv and env
come from `commands`, figures from `figures`, files from `sweepdir`, records from `results`.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterable
from contextlib import ExitStack
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx

from poolbench.errors import PostgresUnavailable, RunError, UsageError
from poolbench.instrumentation.routes import METRICS_PATH
from poolbench.objectives import PGBOUNCER
from poolbench.results import (
    FAILED,
    FINISHED,
    INTERRUPTED,
    LOCUST_LOG,
    SUMMARY_FILE,
    TELEMETRY_FILE,
    WINDOW_FILE,
    RunRecord,
    read_markers,
)
from poolbench.spec import ADAPTIVE, Point, SweepSpec
from poolbench.sweep import arrivals, commands, figures
from poolbench.sweep.appworkers import MetricsWindow
from poolbench.sweep.backends import database_went_away, postmaster_started
from poolbench.sweep.commands import RemoteWorkers
from poolbench.sweep.external import ExternalTarget, check_target
from poolbench.sweep.loadgen import LocustCost, WorkersChoice, plan_workers
from poolbench.sweep.managed import ManagedApp
from poolbench.sweep.metadata import manifest, now
from poolbench.sweep.pgbouncer import PgBouncerSample, PgBouncerSampler, require_pgbouncer
from poolbench.sweep.procs import Child, Children, supervised
from poolbench.sweep.samplers import PgProbe, WindowSample, WindowSampler
from poolbench.sweep.search import AdaptiveSearch
from poolbench.sweep.sweepdir import SweepDir
from poolbench.sweep.target import LoadTarget, StartedTarget

DEFAULT_WINDOW_GRACE_S = 60.0  # Locust start-up before the window, and shutdown after it
DEFAULT_POLL_S = 0.02
LOCUST_INTERRUPTED = -2  # Locust stopped by our SIGINT after the window: its CSVs are whole


def load_target(spec: SweepSpec, children: Children, *, dsn: str | None, logs: Path) -> LoadTarget:
    """The spec's kind of target: its [target] when it has one, else the managed sample app."""
    if spec.target is not None:
        return ExternalTarget(spec, children, dsn=dsn)
    return ManagedApp(spec, children, dsn=dsn, logs=logs)


@dataclass(frozen=True, kw_only=True)
class Measured:
    """A finished run: its point and its record (run.json; the figures are runs.csv's row)."""

    point: Point
    record: RunRecord
    # What the target says it runs on (its /telemetry `stack`), None when it does not say.
    stack: dict[str, Any] | None = None

    @property
    def figures(self) -> dict[str, Any]:
        """The run's runs.csv figures."""
        return self.record.figures


@dataclass(frozen=True, kw_only=True)
class Window:
    """What one measured window gave, before its files are read into figures."""

    sample: WindowSample
    pooled: PgBouncerSample | None
    telemetry: dict[str, Any] | None
    # Set when the target served no /telemetry and its /metrics was differenced instead.
    metrics_missing: tuple[str, ...] | None
    locust: Child


class Runner:
    """Runs points one at a time against one target; Locust and the window are its own."""

    def __init__(
        self,
        spec: SweepSpec,
        target: LoadTarget,
        children: Children,
        *,
        workers: int | None,
        remote: RemoteWorkers | None = None,
        on_worker_command: Callable[[Point, str], None] | None = None,
        finished: Callable[[], Iterable[RunRecord]] = tuple,
    ) -> None:
        self.spec = spec
        self.finished = finished  # the sweep's finished runs, which measured Locust's cost
        self.choices: dict[str, WorkersChoice] = {}  # run_id -> its Locust processes
        self.target = target
        self.children = children
        self.workers = workers
        self.remote = remote
        self.on_worker_command = on_worker_command

    def secret_dsns(self) -> list[str]:
        """Every DSN whose password must not reach a run's files."""
        return self.target.secret_dsns()

    def locust_workers(self, point: Point) -> WorkersChoice:
        """Locust processes of a point on this host, whose CPU the run measures, and why.

        `--workers N` wins; None (auto) estimates from the point (poolbench.sweep.loadgen). With
        remote workers only the master runs here (their CPU is not measured).
        """
        if self.remote is not None:
            return WorkersChoice(
                workers=1,
                expected_rps=None,
                expected_cpu_pct=None,
                reason=f"--remote-workers {self.remote.count}: only the master runs here",
            )
        if (choice := self.choices.get(point.run_id)) is None:
            measured = LocustCost.measured(record.figures for record in self.finished())
            choice = plan_workers(point, self.spec, given=self.workers, measured=measured)
            self.choices[point.run_id] = choice
        return choice

    def _locust(self, point: Point, url: str, run_dir: Path) -> Child:
        workers = self.locust_workers(point).workers
        argv = commands.locust_argv(point, url, run_dir, workers, self.spec.locust_files)
        if self.remote is not None:
            argv += self.remote.master_args()
            if self.on_worker_command is not None:
                # No out_dir: a remote worker cannot write into this run directory.
                worker_env = commands.scenario_env(point, self.spec, None).to_env()
                command = self.remote.worker_command(self.spec.locust_files, worker_env)
                self.on_worker_command(point, command)
        env = commands.python_env(commands.scenario_env(point, self.spec, run_dir).to_env())
        return self.children.spawn(
            "locust",
            argv,
            env=env,
            log_path=run_dir / LOCUST_LOG,
            stop_signal=commands.LOCUST_STOP_SIGNAL,
        )

    def _stop_if_alive(self, child: Child) -> None:
        if child.alive():
            self.children.stop(child)

    def _wait_marker(self, run_dir: Path, event: str, locust: Child, timeout_s: float) -> float:
        deadline = time.monotonic() + timeout_s
        path = run_dir / WINDOW_FILE
        while time.monotonic() < deadline:
            if event in (markers := read_markers(path)):
                return markers[event]
            if not locust.alive():
                raise RunError(
                    f"locust exited before the window {event} marker: {locust.log_tail()}"
                )
            time.sleep(DEFAULT_POLL_S)
        raise RunError(f"no window {event} marker from locust after {timeout_s:.0f} s")

    def run(self, point: Point, run_dir: Path) -> Measured:
        """Measure one point into run_dir (a temporary directory the caller renames).

        A run whose database or app went away is a RunError that says so, never a result.
        Everything the run started is stopped when it ends, however it ends.
        """
        with ExitStack() as stack:
            target = self.target.start(point, run_dir, stack)
            started = postmaster_started(target.probe_dsn) if target.probe_dsn else None
            http = stack.enter_context(httpx.Client(base_url=target.workers.url, timeout=10.0))
            try:
                window = self._window(point, run_dir, target, http, started, stack)
            except (RunError, httpx.HTTPError, ValueError) as exc:
                # A dead database or app explains a failure better than its symptom does.
                self._check_survived(target, started)
                if isinstance(exc, RunError):
                    raise
                raise RunError(f"the app stopped answering ({type(exc).__name__}: {exc})") from None
        locust_code = window.locust.process.returncode
        if locust_code not in (0, None, LOCUST_INTERRUPTED):
            raise RunError(f"locust exited with {locust_code}: {window.locust.log_tail()}")
        reported = (window.telemetry or {}).get("stack")
        return Measured(
            point=point,
            record=self._record(point, run_dir, window),
            stack=reported if isinstance(reported, dict) else None,
        )

    def _window(
        self,
        point: Point,
        run_dir: Path,
        target: StartedTarget,
        http: httpx.Client,
        started: str | None,
        stack: ExitStack,
    ) -> Window:
        """Start Locust, measure from its window start to end marker, read the app's telemetry."""
        probe = PgProbe(target.probe_dsn).start() if target.probe_dsn else None
        if probe is not None:
            stack.callback(probe.close)
        pooler = PgBouncerSampler(target.bouncer) if target.bouncer is not None else None
        if pooler is not None:
            stack.callback(pooler.close)
        locust = self._locust(point, target.workers.url, run_dir)
        stack.callback(self._stop_if_alive, locust)
        start_timeout_s = point.warmup_s + DEFAULT_WINDOW_GRACE_S
        if self.remote is not None:
            start_timeout_s += commands.DEFAULT_REMOTE_WORKERS_WAIT_S
        self._wait_marker(run_dir, "start", locust, start_timeout_s)
        # The window opens: app telemetry, Postgres counters and CPU start counting together.
        telemetry_ok = target.workers.reset(http)
        fallback = target.metrics_fallback and not telemetry_ok
        metrics = MetricsWindow.open(http) if fallback else None
        sampler = WindowSampler(
            app_pid=self.target.app_pid(),
            app_cgroup=target.app_cgroup,
            locust_pid=locust.pid,
            pg_pid=target.pg_pid,
            downstream_pid=target.downstream_pid,
            probe=probe,
        )
        sampler.begin()
        if pooler is not None:
            pooler.begin()
        self._wait_marker(run_dir, "end", locust, point.duration_s + DEFAULT_WINDOW_GRACE_S)
        sample = sampler.end()
        pooled = pooler.end() if pooler is not None else None
        self._check_survived(target, started)
        telemetry = target.workers.read(http) if telemetry_ok else None
        missing: tuple[str, ...] | None = None
        if metrics is not None:
            telemetry, missing = metrics.close(http)
        if self.children.wait(locust, DEFAULT_WINDOW_GRACE_S) is None:
            self.children.stop(locust)
        return Window(
            sample=sample,
            pooled=pooled,
            telemetry=telemetry,
            metrics_missing=missing,
            locust=locust,
        )

    def _check_survived(self, target: StartedTarget, started: str | None) -> None:
        """Raise a RunError naming the cause if the database or the app went away in the run."""
        if target.probe_dsn and started is not None:
            if cause := database_went_away(target.probe_dsn, started, target.postgres):
                raise RunError(cause)
        if cause := self.target.went_away():
            raise RunError(cause)

    def _record(self, point: Point, run_dir: Path, measured: Window) -> RunRecord:
        """The run's record from its window and the files Locust wrote into run_dir."""
        markers = read_markers(run_dir / WINDOW_FILE)
        window_s = markers["end"] - markers["start"]
        summary_path = run_dir / SUMMARY_FILE
        summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
        # Every Locust process's figures, remote workers' too (the master writes theirs).
        log = arrivals.read_requests(run_dir)
        window = (
            arrivals.figures_in_window(log, markers["start"], markers["end"])
            if log.processes
            else None
        )
        figures.write_timeseries(run_dir, log.seconds)
        if log.processes:
            arrivals.write_merged(run_dir, log)
        sample, pooled, telemetry = measured.sample, measured.pooled, measured.telemetry
        values = figures.client_figures(summary, window, window_s)
        values |= figures.telemetry_figures(telemetry)
        values |= figures.resource_figures(sample, window_s)
        values |= (pooled or PgBouncerSample()).figures()
        values["locust_cpu_warning"] = bool(
            summary.get("cpu_warning") or figures.locust_cpu_warning(run_dir / LOCUST_LOG)
        )
        values["host_cores"] = os.cpu_count()
        values["bottleneck"] = figures.label_bottleneck(point, values)
        if telemetry is not None:
            (run_dir / TELEMETRY_FILE).write_text(json.dumps(telemetry, indent=2) + "\n")
        choice = self.locust_workers(point)
        fallback = measured.metrics_missing is not None
        return RunRecord(
            run_id=point.run_id,
            point=self.target.recorded_point(point, telemetry),
            figures=values,
            window={
                "start_epoch": markers["start"],
                "end_epoch": markers["end"],
                "window_s": window_s,
                # Every Locust process counted its requests against this very window.
                "exact": None if window is None else window["window_exact"],
            },
            locust_processes=choice.workers,
            locust_workers=choice.as_dict(),
            remote_workers=self.remote.count if self.remote else 0,
            locust_requests=summary.get("requests"),
            open_model=None
            if window is None
            else {
                "rps_per_user": window["open_rps_per_user"],
                "max_inflight_per_process": window["max_inflight"],
                "cap_reached": window["cap_reached"],
                "sent": window["sent"],
            },
            requests_by_name=summary.get("by_name", {}),
            endpoints=figures.endpoint_figures(summary, window),
            sampler_errors=(*sample.errors, *(pooled.errors if pooled else ())),
            app_worker_requests=figures.worker_requests(telemetry),
            max_processes={
                "app": sample.app.max_processes,
                "locust": sample.locust.max_processes,
                "pg": sample.pg.max_processes,
            },
            telemetry_source=METRICS_PATH if fallback else None,
            telemetry_missing=measured.metrics_missing,
        )


@dataclass(frozen=True, kw_only=True)
class SweepResult:
    """Where a sweep wrote its output and how far it got."""

    sweep_dir: Path
    finished: int
    total: int


class SweepListener:
    """What the runner tells its caller (the CLI prints it); every method may be left as is."""

    def started(self, sweep: SweepDir, todo: list[Point]) -> None:
        """The sweep directory is open and these points are still to run."""

    def run_started(self, point: Point) -> None:
        """A point is about to be measured."""

    def run_finished(self, index: int, total: int, measured: Measured) -> None:
        """A point was measured and saved (index counts from 1 over every point)."""

    def worker_command(self, point: Point, command: str, script: Path) -> None:
        """Remote workers must be started with `command` (also written to `script`)."""


def run_sweep(
    spec: SweepSpec,
    *,
    sweep_dir: Path,
    spec_path: str,
    dsn: str | None,
    workers: int | None,
    resume: bool = False,
    remote: RemoteWorkers | None = None,
    listener: SweepListener | None = None,
) -> SweepResult:
    """Run the spec's unfinished points into sweep_dir; Ctrl-C keeps finished points.

    A grid runs every point; an adaptive search (`poolbench.sweep.search`) picks each next point
    from the verdicts of the runs so far.
    """
    listener = listener or SweepListener()
    if any(point.pooler == PGBOUNCER for point in spec.points()):
        if dsn:
            raise UsageError(
                "pooler = pgbouncer needs the throwaway Postgres (PgBouncer logs in with its "
                "superuser's SCRAM verifier): drop --dsn"
            )
        require_pgbouncer()
    if spec.target is not None:
        check_target(spec.target, dsn)
    # Children run in the checkout; every path they are given must not depend on our cwd.
    sweep_dir = Path(sweep_dir).resolve()
    points = spec.points()
    sweep = SweepDir(sweep_dir, points, manifest(spec, spec_path, dsn, workers, remote))
    sweep.open(resume=resume)
    todo = sweep.todo()
    status = INTERRUPTED
    search = (
        AdaptiveSearch.of(points, spec.slo, spec.timing.repetitions)
        if spec.search == ADAPTIVE
        else None
    )

    def next_point() -> Point | None:
        if search is not None:
            return search.next_point(sweep.records)
        return next(iter(sweep.todo()), None)

    def announce(point: Point, command: str) -> None:
        script = sweep.write_worker_script(point.run_id, remote.count if remote else 1, command)
        listener.worker_command(point, command, script)

    try:
        with supervised() as children:
            listener.started(sweep, todo)
            runner = Runner(
                spec,
                load_target(spec, children, dsn=dsn, logs=sweep.logs),
                children,
                workers=workers,
                remote=remote,
                on_worker_command=announce,
                finished=sweep.records.values,
            )
            while (point := next_point()) is not None:
                listener.run_started(point)
                tmp = sweep.new_run(point)
                try:
                    measured = runner.run(point, tmp)
                except RunError as exc:
                    status = FAILED
                    kept = sweep.fail_run(tmp, point, str(exc), runner.secret_dsns())
                    raise RunError(f"run {point.run_id} failed: {exc} (its logs: {kept})") from None
                record = replace(measured.record, finished_at=now())
                sweep.commit_run(tmp, record, runner.secret_dsns(), target_stack=measured.stack)
                listener.run_finished(len(sweep.records), len(points), measured)
        status = FINISHED
    except PostgresUnavailable as exc:
        raise UsageError(str(exc)) from None
    finally:
        sweep.close(status)
    return SweepResult(sweep_dir=sweep_dir, finished=len(sweep.records), total=len(points))
