"""What one run measured: samplers for CPU, memory and Postgres, and the run's figures."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import json
import math
import os
import threading
import time
from collections.abc import Coroutine, Iterable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import numpy as np
import psutil

from bench.spec import Point

# Bottleneck rules: every threshold in one place.
DEFAULT_LOADGEN_CPU_PCT = 90.0  # per load-generating Locust process (Locust warns at 90 %)
DEFAULT_APP_CPU_PCT = 90.0  # one uvicorn worker is one core at most for the event loop
DEFAULT_DB_CPU_PCT = 90.0  # Postgres tree, percent of one core
DEFAULT_DB_CONNECTIONS_SHARE = 0.95  # of pg_max_connections minus reserved slots
DEFAULT_PG_RESERVED_CONNECTIONS = 3  # Postgres superuser_reserved_connections default
DEFAULT_POOL_WAIT_SHARE = 0.2  # acquire-wait p95 as a share of client p95 latency
DEFAULT_POOL_WAIT_MIN_MS = 1.0  # ...but waits below this are noise, whatever the share
DEFAULT_SAMPLE_INTERVAL_S = 0.25
LOCUST_CPU_WARNINGS = (
    "CPU usage above",
    "CPU usage was too high",
    "CPU usage threshold was exceeded",
)
BOTTLENECKS = ("pool", "app_cpu", "database", "load_generator", "none")

RUNS_CSV_COLUMNS = [
    # point
    "run_id", "scenario", "repetition", "pool_size", "max_overflow", "http_concurrency_limit",
    "users", "pg_max_size", "pg_max_connections", "queries_per_request", "sim_latency_ms",
    "think_time_s", "spawn_rate", "duration_s",
    # client (Locust, measured window only)
    "requests", "failures", "error_rate", "rps", "p50_ms", "p95_ms", "p99_ms", "mean_ms", "max_ms",
    # app telemetry (SQLAlchemy pool)
    "acquire_wait_mean_ms", "acquire_wait_p95_ms", "acquire_wait_p99_ms", "hold_time_mean_ms",
    "hold_time_p95_ms", "peak_checked_out", "pool_timeouts", "connections_opened",
    # database
    "pg_peak_connections", "pg_xact_commit",
    # CPU and memory
    "app_cpu_pct", "locust_cpu_pct", "pg_cpu_pct", "app_peak_rss_mb", "locust_peak_rss_mb",
    "pg_peak_rss_mb", "locust_cpu_warning", "host_cores",
    # verdict
    "bottleneck",
]  # fmt: skip

T = TypeVar("T")


# --- process trees ------------------------------------------------------------------------


class ProcessTree:
    """CPU seconds and peak RSS of a process and all its descendants over a window.

    CPU is kept per process (keyed by pid and start time) at every sample, so a child that
    exits mid-window still counts up to its last sample. RSS is summed over the tree, so pages
    shared between Postgres backends are counted once per backend (an upper bound).
    """

    def __init__(self, root_pid: int | None) -> None:
        self.root_pid = root_pid
        self._first: dict[tuple[int, float], float] = {}
        self._last: dict[tuple[int, float], float] = {}
        self.peak_rss_bytes = 0
        self.max_processes = 0

    def _members(self) -> list[psutil.Process]:
        if self.root_pid is None:
            return []
        try:
            root = psutil.Process(self.root_pid)
            return [root, *root.children(recursive=True)]
        except psutil.Error:
            return []

    def sample(self, *, first: bool = False) -> None:
        """Record CPU times and RSS of every member now."""
        rss = 0
        members = self._members()
        for proc in members:
            with contextlib.suppress(psutil.Error):
                with proc.oneshot():
                    key = (proc.pid, proc.create_time())
                    times = proc.cpu_times()
                    rss += proc.memory_info().rss
                cpu = times.user + times.system
                if first:
                    self._first[key] = cpu
                self._last[key] = cpu
        self.peak_rss_bytes = max(self.peak_rss_bytes, rss)
        self.max_processes = max(self.max_processes, len(members))

    def cpu_seconds(self) -> float:
        """CPU seconds used between the first sample and the latest one."""
        return sum(last - self._first.get(key, 0.0) for key, last in self._last.items())


# --- Postgres -----------------------------------------------------------------------------


def maintenance_dsn(dsn: str) -> str:
    """Return the DSN pointed at the `postgres` database.

    The probe's own queries commit transactions too; run from another database they do not
    show in the benchmark database's xact_commit.
    """
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path="/postgres"))


def database_name(dsn: str) -> str:
    """Return the database name of a DSN."""
    return urlsplit(dsn).path.lstrip("/") or "postgres"


class PgProbe:
    """One asyncpg connection on a private event loop thread, called from sync code."""

    def __init__(self, dsn: str) -> None:
        self.dbname = database_name(dsn)
        self._dsn = dsn
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._conn: asyncpg.Connection | None = None
        self._lock: asyncio.Lock | None = None
        # Commits the probe itself adds to the benchmark database (only if it must connect there).
        self.own_commits = 0
        self._same_db = False

    def _call(self, coro: Coroutine[Any, Any, T], timeout_s: float = 10.0) -> T:
        future: Future[T] = asyncio.run_coroutine_threadsafe(coro, self._loop)
        return future.result(timeout=timeout_s)

    def start(self) -> PgProbe:
        self._thread.start()
        self._call(self._connect())
        return self

    async def _connect(self) -> None:
        self._lock = asyncio.Lock()
        try:
            self._conn = await asyncpg.connect(maintenance_dsn(self._dsn), timeout=10)
        except (OSError, asyncpg.PostgresError):
            # No access to `postgres`: use the benchmark database and subtract our commits.
            self._conn = await asyncpg.connect(self._dsn, timeout=10)
            self._same_db = True

    async def _fetchval(self, query: str, *args: Any) -> Any:
        assert self._conn is not None and self._lock is not None
        async with self._lock:
            if self._same_db:
                self.own_commits += 1
            return await self._conn.fetchval(query, *args)

    def activity(self) -> tuple[int, int]:
        """Return (client connections to the benchmark database but the probe, xact_commit)."""
        query = (
            "SELECT ARRAY[(SELECT count(*) FROM pg_stat_activity WHERE datname = $1"
            " AND backend_type = 'client backend' AND pid <> pg_backend_pid()),"
            " (SELECT xact_commit FROM pg_stat_database WHERE datname = $1)]"
        )
        connections, commits = self._call(self._fetchval(query, self.dbname))
        return int(connections), int(commits or 0)

    def setting(self, name: str) -> str:
        """Return a server setting (e.g. max_connections, server_version)."""
        return str(self._call(self._fetchval("SELECT current_setting($1)", name)))

    def close(self) -> None:
        """Close the connection and stop the loop thread."""
        if self._thread.is_alive():
            if self._conn is not None:
                with contextlib.suppress(Exception):
                    self._call(self._conn.close(timeout=5))
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5)
        with contextlib.suppress(RuntimeError):
            self._loop.close()


# --- the window sampler -------------------------------------------------------------------


@dataclass(kw_only=True)
class WindowSample:
    """Counters at the window's edges and peaks inside it."""

    app: ProcessTree
    locust: ProcessTree
    pg: ProcessTree
    pg_peak_connections: int | None = None
    # (seconds since the window opened, xact_commit minus the probe's own commits)
    pg_commits: list[tuple[float, int]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


class WindowSampler:
    """Samples process trees and Postgres connections every ~250 ms while the window is open."""

    def __init__(
        self,
        *,
        app_pid: int | None,
        locust_pid: int | None,
        pg_pid: int | None,
        probe: PgProbe | None,
        interval_s: float = DEFAULT_SAMPLE_INTERVAL_S,
    ) -> None:
        self.sample = WindowSample(
            app=ProcessTree(app_pid), locust=ProcessTree(locust_pid), pg=ProcessTree(pg_pid)
        )
        self._probe = probe
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.started_at = 0.0
        self.ended_at = 0.0

    def _trees(self) -> Iterable[ProcessTree]:
        return (self.sample.app, self.sample.locust, self.sample.pg)

    def _sample_pg(self) -> None:
        if self._probe is None:
            return
        try:
            count, commits = self._probe.activity()
        except Exception as exc:  # noqa: BLE001 - a lost sample must not end the run
            self.sample.errors.append(f"pg_stat_activity: {exc}")
            return
        elapsed = time.monotonic() - self.started_at
        self.sample.pg_commits.append((elapsed, commits - self._probe.own_commits))
        peak = self.sample.pg_peak_connections or 0
        self.sample.pg_peak_connections = max(peak, count)

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            for tree in self._trees():
                tree.sample()
            self._sample_pg()

    def begin(self) -> None:
        """Open the window: baseline counters, then sample in the background."""
        self.started_at = time.monotonic()
        for tree in self._trees():
            tree.sample(first=True)
        self._sample_pg()
        self._thread.start()

    def end(self) -> WindowSample:
        """Close the window: final counters."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        self.ended_at = time.monotonic()
        self._sample_pg()
        for tree in self._trees():
            tree.sample()
        return self.sample


# --- Locust output ------------------------------------------------------------------------


def read_markers(path: Path) -> dict[str, float]:
    """Return {"start": epoch, "end": epoch} from a window.jsonl written by scenarios/common.py."""
    markers: dict[str, float] = {}
    if not path.exists():
        return markers
    for line in path.read_text().splitlines():
        with contextlib.suppress(ValueError, KeyError):
            entry = json.loads(line)
            markers[entry["event"]] = float(entry["epoch"])
    return markers


def read_samples(run_dir: Path) -> np.ndarray:
    """Return (completion epoch, response_ms, failed) rows of every request, warm-up included."""
    rows: list[tuple[float, float, float]] = []
    for path in sorted(run_dir.glob("latency-*.txt")):
        for line in path.read_text().splitlines():
            with contextlib.suppress(ValueError):
                epoch, response_ms, failed = line.split()
                rows.append((float(epoch), float(response_ms), float(failed)))
    return np.asarray(rows, dtype=float).reshape(-1, 3)


def window_requests(samples: np.ndarray, start_epoch: float, end_epoch: float) -> np.ndarray:
    """Return (response_ms, failed) rows of the samples that completed inside the window."""
    inside = (samples[:, 0] >= start_epoch) & (samples[:, 0] < end_epoch)
    return samples[inside, 1:]


TIMESERIES_FILE = "timeseries.csv"
TIMESERIES_COLUMNS = ("epoch_s", "requests", "failures", "p50_ms", "p95_ms", "p99_ms")


def write_timeseries(run_dir: Path, samples: np.ndarray) -> None:
    """Bin every request (warm-up included) by completion second into timeseries.csv.

    Locust's history holds rolling, bucketed figures that restart at the stats reset; these are
    exact per-second counts and percentiles from the same raw samples as the window's figures.
    """
    if not len(samples):
        return
    seconds = np.floor(samples[:, 0])
    with (run_dir / TIMESERIES_FILE).open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(TIMESERIES_COLUMNS)
        for second in np.unique(seconds):
            chunk = samples[seconds == second]
            p50, p95, p99 = np.percentile(chunk[:, 1], [50, 95, 99])
            writer.writerow(
                [int(second), len(chunk), int(chunk[:, 2].sum())]
                + [round(float(v), 3) for v in (p50, p95, p99)]
            )


def locust_cpu_warning(log_path: Path) -> bool:
    """True if Locust warned that its own CPU was saturated."""
    if not log_path.exists():
        return False
    text = log_path.read_text(errors="replace")
    return any(marker in text for marker in LOCUST_CPU_WARNINGS)


def client_figures(summary: Mapping[str, Any], requests: np.ndarray, window_s: float) -> dict:
    """Return the client columns: exact from the window's requests, else Locust's summary."""
    if requests.size:
        latencies = requests[:, 0]
        count, failures = len(latencies), int(requests[:, 1].sum())
        p50, p95, p99 = np.percentile(latencies, [50, 95, 99])
        figures: dict[str, Any] = {
            "p50_ms": float(p50),
            "p95_ms": float(p95),
            "p99_ms": float(p99),
            "mean_ms": float(latencies.mean()),
            "max_ms": float(latencies.max()),
            "latency_source": "exact",
        }
    else:
        count, failures = int(summary.get("requests") or 0), int(summary.get("failures") or 0)
        figures = {k: summary.get(k) for k in ("p50_ms", "p95_ms", "p99_ms", "mean_ms", "max_ms")}
        figures["latency_source"] = "locust_buckets"
    return {
        "requests": count,
        "failures": failures,
        "error_rate": failures / count if count else 0.0,
        "rps": count / window_s if window_s > 0 else 0.0,
        **figures,
    }


def telemetry_figures(telemetry: Mapping[str, Any] | None) -> dict[str, Any]:
    """Return the SQLAlchemy pool columns from a /telemetry snapshot (blank if none)."""
    pool = (telemetry or {}).get("sqlalchemy") or {}
    wait = pool.get("acquire_wait_ms") or {}
    hold = pool.get("hold_time_ms") or {}
    return {
        "acquire_wait_mean_ms": wait.get("mean"),
        "acquire_wait_p95_ms": wait.get("p95"),
        "acquire_wait_p99_ms": wait.get("p99"),
        "hold_time_mean_ms": hold.get("mean"),
        "hold_time_p95_ms": hold.get("p95"),
        "peak_checked_out": pool.get("peak_checked_out"),
        "pool_timeouts": pool.get("timeouts"),
        "connections_opened": pool.get("connections_opened"),
    }


def resource_figures(sample: WindowSample, window_s: float) -> dict[str, Any]:
    """Return the CPU, memory and Postgres columns of a window."""

    def pct(tree: ProcessTree) -> float | None:
        if tree.root_pid is None or window_s <= 0:
            return None
        return tree.cpu_seconds() / window_s * 100

    def mb(tree: ProcessTree) -> float | None:
        return tree.peak_rss_bytes / 2**20 if tree.root_pid is not None else None

    return {
        "pg_peak_connections": sample.pg_peak_connections,
        "pg_xact_commit": commits_in_window(sample.pg_commits, window_s),
        "app_cpu_pct": pct(sample.app),
        "locust_cpu_pct": pct(sample.locust),
        "pg_cpu_pct": pct(sample.pg),
        "app_peak_rss_mb": mb(sample.app),
        "locust_peak_rss_mb": mb(sample.locust),
        "pg_peak_rss_mb": mb(sample.pg),
    }


def commits_in_window(series: list[tuple[float, int]], window_s: float) -> int | None:
    """Return the window's commits: the commit rate fitted over the window times its length.

    A backend publishes its counters at most once a second (Postgres 15+, and only when idle
    between transactions), so a single reading under load lags by up to a second per backend and
    a plain end-minus-start delta is off by several percent. The lag is an offset; a least-squares
    slope over the ~4 readings a second ignores it. Fewer than 4 readings: the plain delta.
    """
    if len(series) < 2:
        return None
    if len(series) < 4:
        return series[-1][1] - series[0][1]
    times = np.array([t for t, _ in series])
    counts = np.array([c for _, c in series], dtype=float)
    slope = float(np.polyfit(times, counts, 1)[0])
    return round(slope * window_s)


# --- verdict ------------------------------------------------------------------------------


def _num(value: Any) -> float:
    """Return value as a float; None and NaN become 0 so a missing figure never triggers a rule."""
    if value is None:
        return 0.0
    number = float(value)
    return 0.0 if math.isnan(number) else number


def label_bottleneck(point: Point, figures: Mapping[str, Any], locust_processes: int = 1) -> str:
    """Name what limited this run, most disqualifying first.

    - load_generator: Locust near a full core per process, or Locust's own CPU warning; the run
      measured the load generator, so nothing else about it can be trusted;
    - app_cpu: the single uvicorn worker near a full core;
    - database: Postgres near a full core, or its connection slots (nearly) used up;
    - pool: requests waited for a connection: pool timeouts, or the acquire-wait p95 is a
      significant share of the client p95, or every connection was checked out while some waited;
    - none: the load did not push any of those limits.
    """
    if figures.get("locust_cpu_warning") or _num(figures.get("locust_cpu_pct")) >= (
        DEFAULT_LOADGEN_CPU_PCT * locust_processes
    ):
        return "load_generator"
    if _num(figures.get("app_cpu_pct")) >= DEFAULT_APP_CPU_PCT:
        return "app_cpu"
    usable = max(1, point.pg_max_connections - DEFAULT_PG_RESERVED_CONNECTIONS)
    pg_full = _num(figures.get("pg_peak_connections")) >= DEFAULT_DB_CONNECTIONS_SHARE * usable
    if _num(figures.get("pg_cpu_pct")) >= DEFAULT_DB_CPU_PCT or pg_full:
        return "database"
    wait_p95 = _num(figures.get("acquire_wait_p95_ms"))
    waited = wait_p95 >= DEFAULT_POOL_WAIT_MIN_MS
    all_checked_out = _num(figures.get("peak_checked_out")) >= point.pool_size + point.max_overflow
    if (
        _num(figures.get("pool_timeouts")) > 0
        or (waited and wait_p95 >= DEFAULT_POOL_WAIT_SHARE * _num(figures.get("p95_ms")))
        or (waited and all_checked_out)
    ):
        return "pool"
    return "none"


# --- runs.csv -----------------------------------------------------------------------------


def csv_row(point: Point, figures: Mapping[str, Any]) -> dict[str, Any]:
    """Return one runs.csv row: the point's columns and the figures, in DESIGN.md's order."""
    merged = {**point.as_dict(), **figures}
    return {column: _csv_value(merged.get(column)) for column in RUNS_CSV_COLUMNS}


def _csv_value(value: Any) -> Any:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return round(value, 4)
    return value


def write_runs_csv(path: Path, rows: Iterable[Mapping[str, Any]]) -> None:
    """Rewrite runs.csv atomically (a reader never sees half a table)."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=RUNS_CSV_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)
