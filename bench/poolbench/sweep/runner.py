"""The sweep runner: for every point, start Postgres, the app and Locust, and measure one window.

Orchestration only: argv and env come from `commands`, figures from `figures`, files from
`sweepdir`.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from poolbench.errors import PostgresUnavailable, RunError, UsageError
from poolbench.instrumentation.routes import METRICS_PATH
from poolbench.objectives import PGBOUNCER
from poolbench.results import (
    APP_LOG,
    DOWNSTREAM_LOG,
    LOCUST_LOG,
    SUMMARY_FILE,
    TELEMETRY_FILE,
    WINDOW_FILE,
    read_markers,
)
from poolbench.spec import ADAPTIVE, Point, SweepSpec
from poolbench.sweep import arrivals, commands, figures
from poolbench.sweep.appworkers import AppWorkers, MetricsWindow
from poolbench.sweep.backends import DatabaseSlot, database_went_away, postmaster_started
from poolbench.sweep.commands import RemoteWorkers
from poolbench.sweep.loadgen import WorkersChoice, plan_workers
from poolbench.sweep.metadata import manifest, now
from poolbench.sweep.pg import Database, free_port
from poolbench.sweep.pgbouncer import PgBouncerSample, PgBouncerSampler, require_pgbouncer
from poolbench.sweep.procs import Child, Children, supervised
from poolbench.sweep.samplers import PgProbe, WindowSample, WindowSampler
from poolbench.sweep.search import AdaptiveSearch
from poolbench.sweep.sweepdir import SweepDir

DEFAULT_HEALTH_TIMEOUT_S = 30.0
DEFAULT_WINDOW_GRACE_S = 60.0  # Locust start-up before the window, and shutdown after it
DEFAULT_SEED_TIMEOUT_S = 600.0
DEFAULT_RESTART_TIMEOUT_S = 120.0
DEFAULT_POLL_S = 0.02


def wait_http(url: str, *, child: Child | None, timeout_s: float, what: str) -> None:
    """Poll url until it answers 200; fail early if child exits."""
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    with httpx.Client(timeout=2.0) as client:
        while time.monotonic() < deadline:
            if child is not None and not child.alive():
                raise RunError(f"{what} exited at start-up: {child.log_tail()}")
            try:
                response = client.get(url)
                if response.status_code == 200:
                    return
                last = f"HTTP {response.status_code}"
            except httpx.HTTPError as exc:
                last = type(exc).__name__
            time.sleep(0.1)
    raise RunError(f"{what} not healthy after {timeout_s:.0f} s at {url} ({last})")


@dataclass(frozen=True, kw_only=True)
class Measured:
    """A finished run: the figures for runs.csv and what else run.json keeps."""

    point: Point
    figures: dict[str, Any]
    extra: dict[str, Any]


class Runner:
    """Runs points one at a time; owns the sweep-wide processes (Postgres, downstream stub)."""

    def __init__(
        self,
        spec: SweepSpec,
        children: Children,
        *,
        dsn: str | None,
        workers: int | None,
        logs: Path,
        remote: RemoteWorkers | None = None,
        on_worker_command: Callable[[Point, str], None] | None = None,
    ) -> None:
        self.spec = spec
        self.children = children
        self.workers = workers
        self.remote = remote
        self.on_worker_command = on_worker_command
        self.logs = logs
        self.target = spec.target
        # Bring-your-own app: its database is the user's business unless they name it.
        self.db = DatabaseSlot(children, dsn=dsn, seed_users=spec.workload.seed_users, log_dir=logs)
        self.probe_dsn = dsn
        self.downstream_url: str | None = None
        self.downstream: Child | None = None

    def secret_dsns(self) -> list[str]:
        """Every DSN whose password must not reach a run's files."""
        return [dsn for dsn in [self.probe_dsn, *self.db.secret_dsns()] if dsn]

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
        return plan_workers(point, self.spec, given=self.workers)

    def _ensure_downstream(self) -> str:
        # /health checks the downstream too, so every scenario needs the stub, not just fanout.
        if self.downstream_url is None:
            port = free_port()
            child = self.children.spawn(
                "downstream",
                commands.downstream_argv(port, self.spec.workload.downstream_latency_ms),
                env=commands.python_env({}),
                log_path=self.logs / DOWNSTREAM_LOG,
            )
            url = f"http://127.0.0.1:{port}"
            wait_http(
                f"{url}/stats", child=child, timeout_s=DEFAULT_HEALTH_TIMEOUT_S, what="downstream"
            )
            self.downstream_url, self.downstream = url, child
        return self.downstream_url

    def _start_app(self, point: Point, db: Database, run_dir: Path) -> tuple[AppWorkers, Child]:
        """The app's worker processes (poolbench.sweep.appserver), every one of them healthy."""
        port, *private = commands.free_ports(1 + point.app_workers)
        env = commands.app_env(
            point,
            self.spec,
            database_url=db.sqlalchemy_url,
            downstream_url=self._ensure_downstream(),
        )
        child = self.children.spawn(
            "app",
            commands.app_argv(port, private),
            env=commands.python_env(env),
            log_path=run_dir / APP_LOG,
        )
        workers = AppWorkers(
            url=f"http://127.0.0.1:{port}",
            worker_urls=tuple(f"http://127.0.0.1:{p}" for p in private),
        )
        for url in (workers.url, *workers.worker_urls):
            wait_http(f"{url}/health", child=child, timeout_s=DEFAULT_HEALTH_TIMEOUT_S, what="app")
        return workers, child

    def _restart_target(self, point: Point, run_dir: Path) -> str:
        assert self.target is not None
        env = commands.python_env({**point.app_env(), **self.spec.app_env})
        try:
            command = self.target.restart_cmd.format(**point.as_dict())
        except (KeyError, IndexError, ValueError) as exc:
            raise UsageError(f"target.restart_cmd: bad placeholder {exc}") from None
        child = self.children.spawn(
            "restart_cmd", [command], env=env, log_path=run_dir / APP_LOG, shell=True
        )
        code = self.children.wait(child, DEFAULT_RESTART_TIMEOUT_S)
        if code is None:
            self.children.stop(child)
            raise RunError(
                f"target.restart_cmd still running after {DEFAULT_RESTART_TIMEOUT_S:.0f} s "
                f"(it must start the target in the background and return): {child.log_tail()}"
            )
        # Not stop(): that would kill the process group, and with it a target started with `&`.
        self.children.release(child)
        if code != 0:
            raise RunError(f"target.restart_cmd failed ({code=}): {child.log_tail()}")
        url = self.target.url
        wait_http(
            f"{url}{self.target.health_path}",
            child=None,
            timeout_s=DEFAULT_HEALTH_TIMEOUT_S,
            what="target",
        )
        return url

    def _target_pid(self) -> int | None:
        """The target's pid from its pid file (re-read every run: a restart changes it)."""
        if self.target is None or self.target.pid_file is None:
            return None
        path = Path(self.target.pid_file)
        try:
            return int(path.read_text().split()[0])
        except (OSError, ValueError, IndexError) as exc:
            raise RunError(f"target.pid_file {path}: no pid in it ({exc})") from None

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
        """
        db: Database | None = None
        app: Child | None = None
        probe: PgProbe | None = None
        pooler: PgBouncerSampler | None = None
        pooled: PgBouncerSample | None = None
        try:
            if self.target is None:
                db = self.db.ensure(point)
                workers, app = self._start_app(point, self.db.app_database(point, db), run_dir)
                probe_dsn: str | None = db.dsn
            else:
                url = self._restart_target(point, run_dir)
                workers = AppWorkers(url=url, worker_urls=(url,))
                probe_dsn = self.probe_dsn
        except BaseException:
            self.db.stop_bouncer()
            raise
        url = workers.url
        started = postmaster_started(probe_dsn) if probe_dsn else None
        http = httpx.Client(base_url=url, timeout=10.0)
        locust: Child | None = None
        metrics: MetricsWindow | None = None
        try:
            if probe_dsn:
                probe = PgProbe(probe_dsn).start()
            if self.db.bouncer is not None:
                pooler = PgBouncerSampler(self.db.bouncer)
            locust = self._locust(point, url, run_dir)
            start_timeout_s = point.warmup_s + DEFAULT_WINDOW_GRACE_S
            if self.remote is not None:
                start_timeout_s += commands.DEFAULT_REMOTE_WORKERS_WAIT_S
            self._wait_marker(run_dir, "start", locust, start_timeout_s)
            # The window opens: app telemetry, Postgres counters and CPU start counting together.
            telemetry_ok = workers.reset(http)
            # A target of the user's own may serve only Prometheus text: difference it instead.
            metrics = MetricsWindow.open(http) if self.target and not telemetry_ok else None
            sampler = WindowSampler(
                app_pid=app.pid if app else self._target_pid(),
                app_cgroup=Path(self.target.cgroup) if self.target and self.target.cgroup else None,
                locust_pid=locust.pid,
                pg_pid=db.pid if db else None,
                downstream_pid=self.downstream.pid if self.downstream else None,
                probe=probe,
            )
            sampler.begin()
            if pooler is not None:
                pooler.begin()
            self._wait_marker(run_dir, "end", locust, point.duration_s + DEFAULT_WINDOW_GRACE_S)
            sample = sampler.end()
            pooled = pooler.end() if pooler is not None else None
            self._check_survived(app, probe_dsn, started)
            telemetry = workers.read(http) if telemetry_ok else None
            missing: tuple[str, ...] = ()
            if metrics is not None:
                telemetry, missing = metrics.close(http)
            if self.children.wait(locust, DEFAULT_WINDOW_GRACE_S) is None:
                self.children.stop(locust)
            locust_code = locust.process.returncode
        except (RunError, httpx.HTTPError, ValueError) as exc:
            # A dead database or app explains a failure better than its symptom does.
            self._check_survived(app, probe_dsn, started)
            if isinstance(exc, RunError):
                raise
            raise RunError(f"the app stopped answering ({type(exc).__name__}: {exc})") from None
        finally:
            http.close()
            if probe is not None:
                probe.close()
            if pooler is not None:
                pooler.close()
            if locust is not None and locust.alive():
                self.children.stop(locust)
            if app is not None:
                self.children.stop(app)
            self.db.stop_bouncer()
        if locust_code not in (0, None, -2):
            raise RunError(f"locust exited with {locust_code}: {locust.log_tail()}")
        measured = self._figures(point, run_dir, sample, telemetry, pooled)
        if metrics is not None:
            measured.extra["telemetry_source"] = METRICS_PATH
            measured.extra["telemetry_missing"] = list(missing)
        return measured

    def _check_survived(
        self, app: Child | None, probe_dsn: str | None, started: str | None
    ) -> None:
        """Raise a RunError naming the cause if the database or the app went away in the run."""
        if probe_dsn and started is not None:
            if cause := database_went_away(probe_dsn, started, self.db.server):
                raise RunError(cause)
        if cause := self.db.bouncer_went_away():
            raise RunError(cause)
        if app is not None and not app.alive():
            code = app.process.returncode
            raise RunError(f"the app exited during the run ({code=}): {app.log_tail()}")

    def _figures(
        self,
        point: Point,
        run_dir: Path,
        sample: WindowSample,
        telemetry: dict[str, Any] | None,
        pooled: PgBouncerSample | None = None,
    ) -> Measured:
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
        extra = {
            "window": {
                "start_epoch": markers["start"],
                "end_epoch": markers["end"],
                "window_s": window_s,
                # Every Locust process counted its requests against this very window.
                "exact": None if window is None else window["window_exact"],
            },
            "locust_processes": (choice := self.locust_workers(point)).workers,
            "locust_workers": choice.as_dict(),
            "remote_workers": self.remote.count if self.remote else 0,
            "locust_requests": summary.get("requests"),
            "open_model": None
            if window is None
            else {
                "rps_per_user": window["open_rps_per_user"],
                "max_inflight_per_process": window["max_inflight"],
                "cap_reached": window["cap_reached"],
                "sent": window["sent"],
            },
            "requests_by_name": summary.get("by_name", {}),
            "endpoints": figures.endpoint_figures(summary, window),
            "sampler_errors": sample.errors + (pooled.errors if pooled else []),
            "app_worker_requests": figures.worker_requests(telemetry),
            "max_processes": {
                "app": sample.app.max_processes,
                "locust": sample.locust.max_processes,
                "pg": sample.pg.max_processes,
            },
        }
        return Measured(point=point, figures=values, extra=extra)


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
    # Children run in the checkout; every path they are given must not depend on our cwd.
    sweep_dir = Path(sweep_dir).resolve()
    points = spec.points()
    sweep = SweepDir(sweep_dir, points, manifest(spec, spec_path, dsn, workers, remote))
    sweep.open(resume=resume)
    todo = sweep.todo()
    status = "interrupted"
    search = (
        AdaptiveSearch.of(points, spec.slo, spec.timing.repetitions)
        if spec.search == ADAPTIVE
        else None
    )

    def next_point() -> Point | None:
        if search is not None:
            return search.next_point(sweep.runs)
        return next(iter(sweep.todo()), None)

    def announce(point: Point, command: str) -> None:
        script = sweep.write_worker_script(point.run_id, remote.count if remote else 1, command)
        listener.worker_command(point, command, script)

    try:
        with supervised() as children:
            listener.started(sweep, todo)
            runner = Runner(
                spec,
                children,
                dsn=dsn,
                workers=workers,
                logs=sweep.logs,
                remote=remote,
                on_worker_command=announce,
            )
            while (point := next_point()) is not None:
                listener.run_started(point)
                tmp = sweep.new_run(point)
                try:
                    measured = runner.run(point, tmp)
                except RunError as exc:
                    status = "failed"
                    kept = sweep.fail_run(tmp, point, str(exc), runner.secret_dsns())
                    raise RunError(f"run {point.run_id} failed: {exc} (its logs: {kept})") from None
                record = {
                    "format_version": sweep.manifest["format_version"],
                    "run_id": point.run_id,
                    "point": point.as_dict(),
                    "figures": measured.figures,
                    **measured.extra,
                    "finished_at": now(),
                }
                sweep.commit_run(tmp, record, runner.secret_dsns())
                listener.run_finished(len(sweep.runs), len(points), measured)
        status = "finished"
    except PostgresUnavailable as exc:
        raise UsageError(str(exc)) from None
    finally:
        sweep.close(status)
    return SweepResult(sweep_dir=sweep_dir, finished=len(sweep.runs), total=len(points))
