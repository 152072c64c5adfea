"""The sweep runner: for every point, start Postgres, the app and Locust, measure one window."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import json
import math
import os
import platform
import shlex
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import asyncpg
import httpx
import psutil
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

from bench import collect
from bench.errors import UsageError, fail
from bench.pg import DSN_ENV, Database, PostgresServer, PostgresUnavailable, free_port, redact_dsn
from bench.procs import Child, Children, Interrupted, supervised
from bench.spec import ROOT, Point, SweepSpec, load_spec, parse_override, spec_from_dict

DEFAULT_RESULTS_DIR = Path("results")
DEFAULT_HEALTH_TIMEOUT_S = 30.0
DEFAULT_WINDOW_GRACE_S = 60.0  # Locust start-up before the window, and shutdown after it
DEFAULT_SEED_TIMEOUT_S = 600.0
DEFAULT_RESTART_TIMEOUT_S = 120.0
DEFAULT_ORDERS_PER_USER = 3
DEFAULT_ITEMS_PER_ORDER = 3
DEFAULT_POLL_S = 0.02
DEFAULT_MASTER_BIND_HOST = "127.0.0.1"
DEFAULT_REMOTE_WORKERS_WAIT_S = 300.0  # for someone to start the remote workers of a run
WORKER_SCRIPT = "worker_command.sh"
LOCUST_CSV_PREFIX = "locust"  # -> locust_stats.csv, locust_stats_history.csv, ...
VERSIONED_PACKAGES = (
    "poolbench", "locust", "fastapi", "uvicorn", "sqlalchemy", "asyncpg", "httpx", "pydantic",
    "numpy", "pandas", "scipy", "psutil", "typer", "rich",
)  # fmt: skip


class RunError(Exception):
    """A point could not be measured (a process did not start, or exited early)."""


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _python_env(extra: Mapping[str, str]) -> dict[str, str]:
    """Return the runner's environment plus extra; never hands the DSN env var to children."""
    env = {k: v for k, v in os.environ.items() if k != DSN_ENV}
    env["PYTHONUNBUFFERED"] = "1"
    return env | dict(extra)


def _wait_http(url: str, *, child: Child | None, timeout_s: float, what: str) -> None:
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


async def _count_users(dsn: str) -> int:
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        exists = await conn.fetchval("SELECT to_regclass('users') IS NOT NULL")
        return int(await conn.fetchval("SELECT count(*) FROM users")) if exists else 0
    finally:
        await conn.close()


class DatabaseSlot:
    """The Postgres behind the current points: one server per pg_max_connections value."""

    def __init__(self, children: Children, *, dsn: str | None, seed_users: int, log_dir: Path):
        self.children = children
        self.external_dsn = dsn
        self.seed_users = seed_users
        self.log_dir = log_dir
        self.server: PostgresServer | None = None
        self.database: Database | None = None
        self._key: int | None = None

    def ensure(self, point: Point) -> Database:
        """Return a seeded database configured for the point, (re)starting it when needed."""
        if self.external_dsn:
            if self.database is None:
                self.database = Database(dsn=self.external_dsn, managed=False)
                self._seed(self.database)
            return self.database
        if self.database is not None and self._key == point.pg_max_connections:
            return self.database
        if self.server is not None:
            self.server.stop()
        self.server = PostgresServer(max_connections=point.pg_max_connections)
        self.children.defer(self.server.stop)
        self.database = self.server.start().database
        self._key = point.pg_max_connections
        self._seed(self.database)
        return self.database

    def _seed(self, db: Database) -> None:
        if asyncio.run(_count_users(db.dsn)) >= self.seed_users:
            return  # an external database seeded by an earlier sweep
        argv = [sys.executable, "-m", "sample_app.seed", "--users", str(self.seed_users)]
        argv += ["--orders-per-user", str(DEFAULT_ORDERS_PER_USER)]
        argv += ["--items-per-order", str(DEFAULT_ITEMS_PER_ORDER)]
        env = _python_env({"DATABASE_URL": db.sqlalchemy_url, "LOG_LEVEL": "WARNING"})
        child = self.children.spawn(
            "seed", argv, env=env, cwd=ROOT, log_path=self.log_dir / "seed.log"
        )
        code = self.children.wait(child, DEFAULT_SEED_TIMEOUT_S)
        self.children.stop(child)
        if code != 0:
            raise RunError(f"seeding failed ({code=}): {child.log_tail()}")


@dataclass(frozen=True, kw_only=True)
class RemoteWorkers:
    """Locust workers on other machines, started by the user, that connect to the run's master.

    Locust's own distributed mode: the runner starts only the master, which waits for `count`
    workers. Their CPU is not measured (it is not on this host); Locust's CPU warning, which
    workers report to the master, still marks a saturated load generator.
    """

    count: int
    bind_host: str = DEFAULT_MASTER_BIND_HOST
    port: int

    @property
    def master_host(self) -> str:
        """The address workers connect to: this host's name when the master binds everywhere."""
        wildcard = self.bind_host in ("", "*", "0.0.0.0", "::")
        return socket.getfqdn() if wildcard else self.bind_host

    def master_args(self) -> list[str]:
        """Return the Locust options that make the runner's Locust the master."""
        return [
            "--master",
            "--expect-workers", str(self.count),
            "--expect-workers-max-wait", f"{DEFAULT_REMOTE_WORKERS_WAIT_S:g}",
            "--master-bind-host", self.bind_host,
            "--master-bind-port", str(self.port),
        ]  # fmt: skip

    def worker_command(self, scenario: str, env: Mapping[str, str]) -> str:
        """Return the shell command a worker runs from a poolbench checkout."""
        argv = ["locust", "-f", f"scenarios/{scenario}.py", "--worker"]
        argv += ["--master-host", self.master_host, "--master-port", str(self.port)]
        assignments = [f"{key}={shlex.quote(value)}" for key, value in sorted(env.items())]
        return " ".join([*assignments, *map(shlex.quote, argv)])


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
        workers: int,
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

    @property
    def locust_processes(self) -> int:
        """Locust processes on this host, whose CPU the run measures (remote workers' is not)."""
        return 1 if self.remote is not None else max(1, self.workers)

    def _ensure_downstream(self) -> str:
        # /health checks the downstream too, so every scenario needs the stub, not just fanout.
        if self.downstream_url is None:
            port = free_port()
            argv = [sys.executable, "-m", "sample_app.downstream", "--port", str(port)]
            argv += ["--latency-ms", f"{self.spec.workload.downstream_latency_ms:g}"]
            child = self.children.spawn(
                "downstream",
                argv,
                env=_python_env({}),
                cwd=ROOT,
                log_path=self.logs / "downstream.log",
            )
            url = f"http://127.0.0.1:{port}"
            _wait_http(
                f"{url}/stats", child=child, timeout_s=DEFAULT_HEALTH_TIMEOUT_S, what="downstream"
            )
            self.downstream_url = url
        return self.downstream_url

    def _start_app(self, point: Point, db: Database, run_dir: Path) -> tuple[str, Child]:
        port = free_port()
        env = _python_env(
            {
                "DATABASE_URL": db.sqlalchemy_url,
                "DOWNSTREAM_URL": self._ensure_downstream(),
                "LOG_LEVEL": "WARNING",
                "ACCESS_LOG": "false",
                **point.app_env(),
                **self.spec.app_env,
            }
        )
        argv = [sys.executable, "-m", "uvicorn", "sample_app.main:app", "--host", "127.0.0.1"]
        argv += ["--port", str(port), "--workers", "1", "--no-access-log"]
        argv += ["--log-level", "warning"]
        child = self.children.spawn("app", argv, env=env, cwd=ROOT, log_path=run_dir / "app.log")
        url = f"http://127.0.0.1:{port}"
        _wait_http(f"{url}/health", child=child, timeout_s=DEFAULT_HEALTH_TIMEOUT_S, what="app")
        return url, child

    def _restart_target(self, point: Point, run_dir: Path) -> str:
        assert self.target is not None
        env = _python_env({**point.app_env(), **self.spec.app_env})
        try:
            command = self.target.restart_cmd.format(**point.as_dict())
        except (KeyError, IndexError, ValueError) as exc:
            raise UsageError(f"target.restart_cmd: bad placeholder {exc}") from None
        child = self.children.spawn(
            "restart_cmd", [command], env=env, cwd=ROOT, log_path=run_dir / "app.log", shell=True
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
        _wait_http(
            f"{url}{self.target.health_path}",
            child=None,
            timeout_s=DEFAULT_HEALTH_TIMEOUT_S,
            what="target",
        )
        return url

    def _locust(self, point: Point, url: str, run_dir: Path) -> Child:
        run_time_s = math.ceil(point.warmup_s + point.duration_s)
        argv = [sys.executable, "-m", "locust", "-f", f"scenarios/{point.scenario}.py"]
        argv += ["--headless", "-u", str(point.users), "-r", f"{point.spawn_rate:g}"]
        argv += ["-t", f"{run_time_s}s", "--host", url]
        argv += ["--csv", str(run_dir / LOCUST_CSV_PREFIX), "--csv-full-history"]
        argv += ["--only-summary", "--exit-code-on-error", "0", "--loglevel", "WARNING"]
        if self.workers > 1:
            argv += ["--processes", str(self.workers)]
        scenario_env = {
            "POOLBENCH_WARMUP_S": f"{point.warmup_s:g}",
            "POOLBENCH_SEED_USERS": str(self.spec.workload.seed_users),
            "POOLBENCH_THINK_TIME_S": f"{point.think_time_s:g}",
            "POOLBENCH_OPEN_RPS": f"{point.open_model_rps:g}",
            "POOLBENCH_QUERIES": str(point.queries_per_request),
            "POOLBENCH_FANOUT_CALLS": str(point.fanout_calls),
            "POOLBENCH_SHAPE": point.shape,
            "POOLBENCH_USERS": str(point.users),
            "POOLBENCH_SPAWN_RATE": f"{point.spawn_rate:g}",
            "POOLBENCH_DURATION_S": str(run_time_s),
        }
        if self.remote is not None:
            argv += self.remote.master_args()
            if self.on_worker_command is not None:
                # No POOLBENCH_OUT_DIR: a remote worker cannot write into this run directory.
                command = self.remote.worker_command(point.scenario, scenario_env)
                self.on_worker_command(point, command)
        env = _python_env({"POOLBENCH_OUT_DIR": str(run_dir), **scenario_env})
        # SIGINT: Locust's graceful shutdown, which still writes its CSV files.
        return self.children.spawn(
            "locust", argv, env=env, cwd=ROOT, log_path=run_dir / "locust.log", stop_signal=2
        )

    def _wait_marker(self, run_dir: Path, event: str, locust: Child, timeout_s: float) -> float:
        deadline = time.monotonic() + timeout_s
        path = run_dir / "window.jsonl"
        while time.monotonic() < deadline:
            if event in (markers := collect.read_markers(path)):
                return markers[event]
            if not locust.alive():
                raise RunError(
                    f"locust exited before the window {event} marker: {locust.log_tail()}"
                )
            time.sleep(DEFAULT_POLL_S)
        raise RunError(f"no window {event} marker from locust after {timeout_s:.0f} s")

    def run(self, point: Point, run_dir: Path) -> Measured:
        """Measure one point into run_dir (a temporary directory the caller renames)."""
        db: Database | None = None
        app: Child | None = None
        probe: collect.PgProbe | None = None
        if self.target is None:
            db = self.db.ensure(point)
            url, app = self._start_app(point, db, run_dir)
            probe_dsn: str | None = db.dsn
        else:
            url = self._restart_target(point, run_dir)
            probe_dsn = self.probe_dsn
        http = httpx.Client(base_url=url, timeout=10.0)
        locust: Child | None = None
        try:
            if probe_dsn:
                probe = collect.PgProbe(probe_dsn).start()
            locust = self._locust(point, url, run_dir)
            start_timeout_s = point.warmup_s + DEFAULT_WINDOW_GRACE_S
            if self.remote is not None:
                start_timeout_s += DEFAULT_REMOTE_WORKERS_WAIT_S
            self._wait_marker(run_dir, "start", locust, start_timeout_s)
            # The window opens: app telemetry, Postgres counters and CPU start counting together.
            telemetry_ok = http.post("/telemetry/reset").status_code < 300
            sampler = collect.WindowSampler(
                app_pid=app.pid if app else None,
                locust_pid=locust.pid,
                pg_pid=db.pid if db else None,
                probe=probe,
            )
            sampler.begin()
            self._wait_marker(run_dir, "end", locust, point.duration_s + DEFAULT_WINDOW_GRACE_S)
            sample = sampler.end()
            telemetry = http.get("/telemetry").json() if telemetry_ok else None
            if self.children.wait(locust, DEFAULT_WINDOW_GRACE_S) is None:
                self.children.stop(locust)
            locust_code = locust.process.returncode
        finally:
            http.close()
            if probe is not None:
                probe.close()
            if locust is not None and locust.alive():
                self.children.stop(locust)
            if app is not None:
                self.children.stop(app)
        if locust_code not in (0, None, -2):
            raise RunError(f"locust exited with {locust_code}: {locust.log_tail()}")
        return self._figures(point, run_dir, sample, telemetry)

    def _figures(
        self,
        point: Point,
        run_dir: Path,
        sample: collect.WindowSample,
        telemetry: dict[str, Any] | None,
    ) -> Measured:
        markers = collect.read_markers(run_dir / "window.jsonl")
        window_s = markers["end"] - markers["start"]
        summary_path = run_dir / "summary.json"
        summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
        samples = collect.read_samples(run_dir)
        requests = collect.window_requests(samples, markers["start"], markers["end"])
        collect.write_timeseries(run_dir, samples)
        for path in run_dir.glob("latency-*.txt"):
            path.unlink()  # summarised above; the raw samples would dwarf everything else
        figures = collect.client_figures(summary, requests, window_s)
        figures |= collect.telemetry_figures(telemetry)
        figures |= collect.resource_figures(sample, window_s)
        figures["locust_cpu_warning"] = bool(
            summary.get("cpu_warning") or collect.locust_cpu_warning(run_dir / "locust.log")
        )
        figures["host_cores"] = os.cpu_count()
        figures["bottleneck"] = collect.label_bottleneck(point, figures, self.locust_processes)
        if telemetry is not None:
            (run_dir / "telemetry.json").write_text(json.dumps(telemetry, indent=2) + "\n")
        extra = {
            "window": {
                "start_epoch": markers["start"],
                "end_epoch": markers["end"],
                "window_s": window_s,
            },
            "locust_processes": self.locust_processes,
            "remote_workers": self.remote.count if self.remote else 0,
            "locust_requests": summary.get("requests"),
            "requests_by_name": summary.get("by_name", {}),
            "sampler_errors": sample.errors,
            "max_processes": {
                "app": sample.app.max_processes,
                "locust": sample.locust.max_processes,
                "pg": sample.pg.max_processes,
            },
        }
        return Measured(point=point, figures=figures, extra=extra)


# --- sweep directory ------------------------------------------------------------------------


def _git_sha() -> str | None:
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{sha}-dirty" if sha and dirty else sha or None


def _versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in VERSIONED_PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def _manifest(
    spec: SweepSpec, spec_path: str, dsn: str | None, workers: int, remote: RemoteWorkers | None
) -> dict[str, Any]:
    memory = psutil.virtual_memory().total
    if dsn:
        database = redact_dsn(dsn)
    elif spec.target is not None:
        database = "the target's own (not probed: give --dsn to measure it)"
    else:
        database = "embedded (a throwaway cluster per pg_max_connections)"
    return {
        "spec": spec.to_dict(),
        "spec_path": spec_path,
        "versions": _versions(),
        "git_sha": _git_sha(),
        "host": {
            "cores": os.cpu_count(),
            "physical_cores": psutil.cpu_count(logical=False),
            "memory_mb": round(memory / 2**20),
            "platform": platform.platform(),
            "python": sys.version.split()[0],
        },
        "dsn": database,
        "locust_processes": 1 if remote else max(1, workers),
        "remote_workers": asdict(remote) if remote else None,
        "started_at": _now(),
        "finished_at": None,
        "status": "running",
        "points": len(spec.points()),
    }


def _write_json(path: Path, data: Mapping[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    os.replace(tmp, path)


def _redact_files(run_dir: Path, dsn: str | None) -> None:
    """Replace a DSN password in every text file of the run (logs may echo the URL)."""
    password = httpx.URL(dsn).password if dsn else None
    if not password:
        return
    for path in run_dir.iterdir():
        if path.is_file():
            text = path.read_text(errors="replace")
            if password in text:
                path.write_text(text.replace(password, "***"))


def finished_runs(sweep_dir: Path) -> dict[str, dict[str, Any]]:
    """Return run.json of every complete run in a sweep directory, by run_id."""
    runs: dict[str, dict[str, Any]] = {}
    for path in sorted((sweep_dir / "runs").glob("*/run.json")):
        with contextlib.suppress(ValueError, OSError):
            data = json.loads(path.read_text())
            if data.get("run_id") == path.parent.name and "figures" in data:
                runs[path.parent.name] = data
    return runs


def _rows(points: list[Point], runs: Mapping[str, Mapping[str, Any]]) -> Iterator[dict]:
    for point in points:
        if point.run_id in runs:
            yield collect.csv_row(point, runs[point.run_id]["figures"])


def _summary_line(index: int, total: int, measured: Measured) -> str:
    f = measured.figures

    def num(key: str, unit: str = "") -> str:
        value = f.get(key)
        return "-" if value is None else f"{value:.1f}{unit}"

    errors = f.get("error_rate")
    return (
        f"[{index}/{total}] {measured.point.run_id:<28} rps {num('rps'):>7}  "
        f"p95 {num('p95_ms', ' ms'):>10}  "
        f"err {'-' if errors is None else f'{errors * 100:.1f}%':>6}  "
        f"wait p95 {num('acquire_wait_p95_ms', ' ms'):>9}  {f['bottleneck']}"
    )


def _table(points: list[Point], runs: Mapping[str, Mapping[str, Any]]) -> Table:
    table = Table(title="runs", show_lines=False)
    columns = (
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
    for title, *_ in columns:
        table.add_column(title, justify="left" if title in ("run_id", "bottleneck") else "right")
    for point in points:
        if point.run_id not in runs:
            continue
        row = {"run_id": point.run_id, **runs[point.run_id]["figures"]}
        table.add_row(*("-" if row.get(k) is None else fmt.format(row[k]) for _, k, fmt in columns))
    return table


def _write_worker_script(path: Path, run_id: str, count: int, command: str) -> None:
    """Write the next run's worker command where a user (or a loop) can pick it up."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(
        "#!/bin/sh\n"
        f"# One remote Locust worker for run {run_id}: start {count} of these in all, from a\n"
        "# poolbench checkout with its virtualenv active. Workers exit when the run ends;\n"
        "# this file is rewritten before every run.\n"
        f"{command}\n"
    )
    tmp.chmod(0o755)
    os.replace(tmp, path)


@dataclass(frozen=True, kw_only=True)
class SweepResult:
    """Where a sweep wrote its output and how far it got."""

    sweep_dir: Path
    finished: int
    total: int


def run_sweep(
    spec: SweepSpec,
    *,
    sweep_dir: Path,
    spec_path: str,
    dsn: str | None,
    workers: int,
    console: Console,
    resume: bool = False,
    remote: RemoteWorkers | None = None,
) -> SweepResult:
    """Run every unfinished point of the spec into sweep_dir; Ctrl-C keeps finished points."""
    runs_dir = sweep_dir / "runs"
    logs = sweep_dir / "logs"
    for directory in (runs_dir, logs):
        directory.mkdir(parents=True, exist_ok=True)
    manifest_path = sweep_dir / "manifest.json"
    manifest = _manifest(spec, spec_path, dsn, workers, remote)
    if resume and manifest_path.exists():
        previous = json.loads(manifest_path.read_text())
        manifest["started_at"] = previous.get("started_at", manifest["started_at"])
        manifest["resumed_at"] = [*previous.get("resumed_at", []), _now()]
    _write_json(manifest_path, manifest)
    for stale in runs_dir.glob(".*.tmp"):
        shutil.rmtree(stale, ignore_errors=True)  # a run cut short last time

    points = spec.points()
    runs = finished_runs(sweep_dir)
    todo = [p for p in points if p.run_id not in runs]
    if runs:
        console.print(f"resume: {len(points) - len(todo)} of {len(points)} runs already finished")
    status = "interrupted"
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    )
    printed_command = ""

    def announce(point: Point, command: str) -> None:
        nonlocal printed_command
        script = sweep_dir / WORKER_SCRIPT
        _write_worker_script(script, point.run_id, remote.count if remote else 1, command)
        if command == printed_command:
            progress.console.print(f"{point.run_id}: start the remote workers again ({script})")
            return
        progress.console.print(f"{point.run_id}: start remote workers with ({script}):")
        progress.console.print(command, markup=False, highlight=False, soft_wrap=True)
        printed_command = command

    try:
        with supervised() as children, progress:
            runner = Runner(
                spec,
                children,
                dsn=dsn,
                workers=workers,
                logs=logs,
                remote=remote,
                on_worker_command=announce,
            )
            task = progress.add_task(spec.name, total=len(todo))
            for index, point in enumerate(todo, start=len(points) - len(todo) + 1):
                progress.update(task, description=f"{spec.name} {point.run_id}")
                tmp = runs_dir / f".{point.run_id}.tmp"
                shutil.rmtree(tmp, ignore_errors=True)
                tmp.mkdir()
                measured = runner.run(point, tmp)
                record = {
                    "run_id": point.run_id,
                    "point": point.as_dict(),
                    "figures": measured.figures,
                    **measured.extra,
                    "finished_at": _now(),
                }
                _write_json(tmp / "run.json", record)
                _redact_files(tmp, dsn)
                final = runs_dir / point.run_id
                shutil.rmtree(final, ignore_errors=True)
                os.replace(tmp, final)  # a run directory exists only once it is complete
                runs[point.run_id] = record
                collect.write_runs_csv(sweep_dir / "runs.csv", _rows(points, runs))
                progress.console.print(_summary_line(index, len(points), measured))
                progress.advance(task)
        status = "finished"
    except PostgresUnavailable as exc:
        raise UsageError(str(exc)) from None
    finally:
        collect.write_runs_csv(sweep_dir / "runs.csv", _rows(points, runs))
        manifest |= {"finished_at": _now(), "status": status, "finished_runs": len(runs)}
        _write_json(manifest_path, manifest)
    console.print(_table(points, runs))
    return SweepResult(sweep_dir=sweep_dir, finished=len(runs), total=len(points))


# --- command ------------------------------------------------------------------------------


def _resolve(
    spec_path: Path | None,
    resume: Path | None,
    overrides: dict[str, Any],
) -> tuple[SweepSpec, str]:
    if resume is not None:
        manifest_path = resume / "manifest.json"
        if not manifest_path.is_file():
            raise UsageError(f"--resume {resume}: no manifest.json (not a sweep directory)")
        manifest = json.loads(manifest_path.read_text())
        stored = spec_from_dict(manifest["spec"], source=str(manifest_path))
        if spec_path is None:
            return spec_from_dict(
                manifest["spec"], source=str(manifest_path), overrides=overrides
            ), str(manifest.get("spec_path", manifest_path))
        spec = load_spec(spec_path, overrides)
        if spec != stored:
            raise UsageError(
                f"--resume {resume}: {spec_path} (with options) differs from the spec in "
                "manifest.json; resume without SPEC to reuse the stored one"
            )
        return spec, str(spec_path)
    if spec_path is None:
        raise UsageError("give a SPEC file (e.g. bench/specs/quick.toml) or --resume DIR")
    return load_spec(spec_path, overrides), str(spec_path)


def sweep(
    spec_path: Annotated[
        Path | None,
        typer.Argument(metavar="SPEC", help="Sweep spec (TOML), e.g. bench/specs/quick.toml."),
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
        int,
        typer.Option(
            help="Local Locust worker processes (locust --processes); their CPU is measured as "
            "the load generator's.",
            min=1,
        ),
    ] = 1,
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
    report: Annotated[
        bool, typer.Option(help="Render the HTML report at the end (bench.report).")
    ] = True,
) -> None:
    """Run a sweep: every grid point, measured, into results/<name>-<timestamp>/."""
    overrides = {
        "timing.duration_s": duration,
        "timing.warmup_s": warmup,
        "timing.repetitions": repetitions,
        "grid.users": [users] if users is not None else None,
    }
    try:
        remote = _remote_workers(remote_workers, workers, master_bind_host, master_port)
        _sweep(spec_path, out, resume, dsn, workers, remote, set_ or [], overrides, report=report)
    except UsageError as exc:
        fail(str(exc))  # inside the command, so typer turns it into exit code 2


def _remote_workers(
    count: int, local_workers: int, bind_host: str, port: int | None
) -> RemoteWorkers | None:
    if count == 0:
        return None
    if local_workers > 1:
        raise UsageError("--workers and --remote-workers: give one (local or remote workers)")
    return RemoteWorkers(count=count, bind_host=bind_host, port=port or free_port())


def _sweep(
    spec_path: Path | None,
    out: Path,
    resume: Path | None,
    dsn: str | None,
    workers: int,
    remote: RemoteWorkers | None,
    settings: list[str],
    options: dict[str, Any],
    *,
    report: bool,
) -> None:
    overrides = dict(parse_override(item) for item in settings)
    overrides |= {key: value for key, value in options.items() if value is not None}
    spec, source = _resolve(spec_path, resume, overrides)
    dsn = dsn or os.environ.get(DSN_ENV) or None
    if resume is not None:
        sweep_dir = resume
    else:
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        sweep_dir = out / f"{spec.name}-{stamp}"
        if sweep_dir.exists():
            raise UsageError(f"{sweep_dir} already exists; wait a second or use --resume")
    # Not a terminal (CI, a pipe): wide enough that the table is not squeezed.
    console = Console(highlight=False, width=None if sys.stdout.isatty() else 140)
    console.print(f"sweep {spec.name}: {len(spec.points())} runs -> {sweep_dir}")
    try:
        result = run_sweep(
            spec,
            sweep_dir=sweep_dir,
            spec_path=source,
            dsn=dsn,
            workers=workers,
            console=console,
            resume=resume is not None,
            remote=remote,
        )
    except Interrupted as exc:
        kept = len(finished_runs(sweep_dir))
        console.print(f"interrupted ({exc}): {kept} finished runs kept in {sweep_dir}")
        raise typer.Exit(128 + exc.signum) from None
    except RunError as exc:
        kept = len(finished_runs(sweep_dir))
        fail(f"{exc} ({kept} finished runs kept in {sweep_dir}; --resume {sweep_dir})", code=1)
    console.print(f"results: {result.sweep_dir} ({result.finished}/{result.total} runs)")
    if not report:
        return
    try:
        from bench.report import render_report
    except ImportError:
        return
    console.print(f"report: {render_report(result.sweep_dir)}")
