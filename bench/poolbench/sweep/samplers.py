"""Samplers for one measured window: CPU and memory of process trees, and a Postgres probe."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Coroutine, Iterable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import psutil

DEFAULT_SAMPLE_INTERVAL_S = 0.25

T = TypeVar("T")


# --- process trees ------------------------------------------------------------------------


class ProcessTree:
    """CPU seconds and peak RSS of a process and all its descendants over a window.

    The roots are a pid and/or every process of a cgroup (its `cgroup.procs`, read at each
    sample, so processes that come and go are followed). CPU is kept per process (keyed by pid
    and start time) at every sample, so a child that exits mid-window still counts up to its
    last sample. RSS is summed over the tree, so pages shared between Postgres backends are
    counted once per backend (an upper bound).
    """

    def __init__(self, root_pid: int | None, *, cgroup: Path | None = None) -> None:
        self.root_pid = root_pid
        self.cgroup = cgroup
        self._first: dict[tuple[int, float], float] = {}
        self._last: dict[tuple[int, float], float] = {}
        self.peak_rss_bytes = 0
        self.max_processes = 0

    @property
    def measured(self) -> bool:
        """Whether there is anything to measure (a pid or a cgroup was given)."""
        return self.root_pid is not None or self.cgroup is not None

    def _roots(self) -> list[int]:
        roots = [] if self.root_pid is None else [self.root_pid]
        if self.cgroup is not None:
            with contextlib.suppress(OSError, ValueError):
                text = (self.cgroup / "cgroup.procs").read_text()
                roots += [int(line) for line in text.split()]
        return roots

    def _members(self) -> list[psutil.Process]:
        members: dict[int, psutil.Process] = {}
        for pid in self._roots():
            with contextlib.suppress(psutil.Error):
                root = psutil.Process(pid)
                for proc in (root, *root.children(recursive=True)):
                    members.setdefault(proc.pid, proc)
        return list(members.values())

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
        return sum(self._per_process().values())

    def busiest_process_cpu_seconds(self) -> float:
        """CPU seconds of the busiest single member (a process is one core at most)."""
        return max(self._per_process().values(), default=0.0)

    def _per_process(self) -> dict[tuple[int, float], float]:
        return {key: last - self._first.get(key, 0.0) for key, last in self._last.items()}


class HostCpu:
    """All CPU time on the machine over a window, whoever used it (other tenants included)."""

    def __init__(self) -> None:
        self._first: Any = None
        self._last: Any = None

    def sample(self, *, first: bool = False) -> None:
        """Record the machine's CPU times now."""
        times = psutil.cpu_times()
        if first:
            self._first = times
        self._last = times

    def busy_fraction(self) -> float | None:
        """Share of all cores' time that was busy (not idle or waiting for I/O) in the window."""
        if self._first is None or self._last is None:
            return None
        # guest and guest_nice are already counted in user and nice.
        skip = {"guest", "guest_nice"}
        delta = {
            name: getattr(self._last, name) - getattr(self._first, name)
            for name in self._last._fields
            if name not in skip
        }
        total = sum(delta.values())
        if total <= 0:
            return None
        idle = delta.get("idle", 0.0) + delta.get("iowait", 0.0)
        return max(0.0, min(1.0, (total - idle) / total))


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
    downstream: ProcessTree
    host: HostCpu = field(default_factory=HostCpu)
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
        app_cgroup: Path | None = None,
        locust_pid: int | None,
        pg_pid: int | None,
        downstream_pid: int | None,
        probe: PgProbe | None,
        interval_s: float = DEFAULT_SAMPLE_INTERVAL_S,
    ) -> None:
        self.sample = WindowSample(
            app=ProcessTree(app_pid, cgroup=app_cgroup),
            locust=ProcessTree(locust_pid),
            pg=ProcessTree(pg_pid),
            downstream=ProcessTree(downstream_pid),
        )
        self._probe = probe
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.started_at = 0.0
        self.ended_at = 0.0

    def _trees(self) -> Iterable[ProcessTree]:
        return (self.sample.app, self.sample.locust, self.sample.pg, self.sample.downstream)

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
        self.sample.host.sample(first=True)
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
        self.sample.host.sample()
        return self.sample
