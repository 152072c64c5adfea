"""Pool and request telemetry: Prometheus metrics, an exact window and cumulative totals.

Three views of the same events, all updated on the event loop thread without locks:
- Prometheus (`/metrics`): counters and bucketed histograms in a registry owned by one app,
  never reset (scrapers compute rates themselves).
- The window (`/telemetry`): counts, exact percentiles and peaks since the last reset, which is
  what one benchmark run needs (docs/DESIGN.md has the contract).
- The totals (`/telemetry/totals`, also under `totals` in `/telemetry`): cumulative counters,
  never reset, O(1) to keep and to read, so an observer can measure any window by difference
  without resetting anyone's window.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import time
from collections.abc import Mapping
from typing import Any, Protocol

from prometheus_client import CollectorRegistry

from poolbench.instrumentation.context import current_pool_wait
from poolbench.instrumentation.metrics import PoolMetrics, PoolSeries, TelemetryCollector
from poolbench.instrumentation.window import (
    Totals,
    WindowHistogram,
)

SQLALCHEMY, ASYNCPG = "sqlalchemy", "asyncpg"
POOLS = (SQLALCHEMY, ASYNCPG)
# The packages a pool's behaviour depends on, reported under `stack` in /telemetry when installed.
STACK_PACKAGES = (
    "fastapi", "starlette", "sqlalchemy", "asyncpg", "psycopg", "psycopg2", "aiopg", "uvicorn",
    "gunicorn", "hypercorn", "granian", "pydantic", "poolbench",
)  # fmt: skip


def package_versions() -> dict[str, str]:
    """This process's Python and the installed STACK_PACKAGES, by distribution name."""
    found = {"python": platform.python_version()}
    for name in STACK_PACKAGES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return found


class PoolOccupancy:
    """Connection-seconds a pool's connections sat idle in it, and idle while a checkout waited.

    Two step functions of time, both integrated exactly at every change (no sampling): idle
    connections (in the pool, open, not leased) and waiting checkouts. `handoff_s` is the area
    under min(idle, waiting): a connection was back in the pool and someone wanted it, but had not
    taken it yet (the event-loop turns between a checkin and the waiter resuming). `idle_s` is the
    area under idle; `idle_s - handoff_s` is idle time nobody asked for.
    """

    __slots__ = ("idle", "waiting", "idle_s", "handoff_s", "_changed", "_window")

    def __init__(self, now: float) -> None:
        self.idle = 0
        self.waiting = 0
        self.idle_s = 0.0
        self.handoff_s = 0.0
        self._changed = now
        self._window = (0.0, 0.0)

    def update(self, now: float, *, idle: int, waiting_delta: int = 0) -> None:
        """Close the step that ends at `now`, then take the new idle count and waiters."""
        elapsed = now - self._changed
        self.idle_s += self.idle * elapsed
        self.handoff_s += min(self.idle, self.waiting) * elapsed
        self._changed = now
        self.idle = idle
        self.waiting = max(0, self.waiting + waiting_delta)

    def reset_window(self, now: float) -> None:
        """Start a new window at `now`."""
        self.update(now, idle=self.idle)
        self._window = (self.idle_s, self.handoff_s)

    def window(self, now: float) -> tuple[float, float]:
        """Return (idle_s, handoff_s) since the window started, up to `now`."""
        self.update(now, idle=self.idle)
        return self.idle_s - self._window[0], self.handoff_s - self._window[1]


class PoolTelemetry:
    """Checkouts, waits, leases and connection churn of one pool.

    Inert until `attach`: a pool nobody instrumented exports no Prometheus series and no totals,
    so an observer can tell "not instrumented" from "not used".
    """

    def __init__(self, name: str, metrics: PoolMetrics) -> None:
        self.name = name
        self.instrumented = False
        self.driver: str | None = None  # the DBAPI driver, as SQLAlchemy's dialect names it
        self.pool_size = 0
        self.max_overflow = 0
        self.checked_out = 0
        self.peak_checked_out = 0
        self.timeouts = 0
        self.connections_opened = 0
        self.connections_closed = 0
        self.acquire_wait_ms = WindowHistogram()
        self.hold_time_ms = WindowHistogram()
        # pool_pre_ping's round trip per checkout that pinged (inside the hold).
        self.ping_ms = WindowHistogram()
        # None until the pool's hook reports its idle count (pools without a queue never do).
        self.occupancy: PoolOccupancy | None = None
        self.acquire_totals = Totals()
        self.hold_totals = Totals()
        self.timeouts_total = 0
        self.opened_total = 0
        self.closed_total = 0
        self._metrics = metrics
        self._series: PoolSeries | None = None

    def attach(self, *, pool_size: int, max_overflow: int) -> None:
        """Start measuring a pool of this size (called by the engine and asyncpg hooks)."""
        self.pool_size = pool_size
        self.max_overflow = max_overflow
        if self._series is None:
            self._series = PoolSeries(self._metrics, self.name)
        self.instrumented = True

    @property
    def overflow_in_use(self) -> int:
        """Connections in use beyond pool_size.

        Not SQLAlchemy's `pool.overflow()`: that counter starts at -pool_size and only turns
        positive once overflow connections exist, so dashboards that plot it show a negative
        "overflow" on an idle pool. What is in use beyond the base size is this difference.
        """
        return max(0, self.checked_out - self.pool_size)

    def record_acquire(self, wait_s: float, *, timed_out: bool = False) -> None:
        """Record one checkout attempt: its wait, and whether it timed out."""
        self.acquire_wait_ms.observe(wait_s * 1000)
        self.acquire_totals.observe(wait_s)
        if self._series is not None:
            self._series.wait.observe(wait_s)
        if timed_out:
            self.timeouts += 1
            self.timeouts_total += 1
            if self._series is not None:
                self._series.timeouts.inc()
        if (acc := current_pool_wait.get()) is not None:
            acc.seconds += wait_s

    def record_checkout(self) -> None:
        """Count a connection handed out."""
        self.checked_out += 1
        self.peak_checked_out = max(self.peak_checked_out, self.checked_out)

    def record_checkin(self) -> None:
        """Count a connection given back (call before another task can check it out)."""
        self.checked_out = max(0, self.checked_out - 1)

    def record_ping(self, ping_s: float) -> None:
        """Record one pre-ping: from leaving the pool to the checkout event, ping included."""
        self.ping_ms.observe(ping_s * 1000)

    def record_pool_state(self, *, idle: int, waiting_delta: int = 0) -> None:
        """Record the pool's idle connections now, and a checkout starting (+1) or ending (-1)."""
        now = time.perf_counter()
        if self.occupancy is None:
            self.occupancy = PoolOccupancy(now)
        self.occupancy.update(now, idle=idle, waiting_delta=waiting_delta)

    def record_hold(self, hold_s: float) -> None:
        """Record one lease of `hold_s` seconds, leaving the pool to checkin."""
        self.hold_time_ms.observe(hold_s * 1000)
        self.hold_totals.observe(hold_s)
        if self._series is not None:
            self._series.hold.observe(hold_s)
            self._series.hold_sq.inc(hold_s * hold_s)

    def record_opened(self) -> None:
        """Count a new database connection."""
        self.connections_opened += 1
        self.opened_total += 1
        if self._series is not None:
            self._series.opened.inc()

    def record_closed(self) -> None:
        """Count a closed database connection."""
        self.connections_closed += 1
        self.closed_total += 1
        if self._series is not None:
            self._series.closed.inc()

    def reset_window(self, now: float | None = None) -> None:
        """Start a new window at `now` (perf_counter); the peak restarts from what is out now."""
        now = time.perf_counter() if now is None else now
        self.peak_checked_out = self.checked_out
        self.timeouts = 0
        self.connections_opened = 0
        self.connections_closed = 0
        self.acquire_wait_ms.reset()
        self.hold_time_ms.reset()
        self.ping_ms.reset()
        if self.occupancy is not None:
            # At the window's own start: resetting the histograms above takes milliseconds, and
            # idle time before a later start would fall outside both the hold and idle_s.
            self.occupancy.reset_window(now)

    def snapshot(self, now: float | None = None) -> dict[str, Any]:
        """Return the window figures in the /telemetry shape (idle time up to `now`)."""
        return {
            "pool_size": self.pool_size,
            "max_overflow": self.max_overflow,
            "checked_out": self.checked_out,
            "overflow_in_use": self.overflow_in_use,
            "peak_checked_out": self.peak_checked_out,
            "timeouts": self.timeouts,
            "connections_opened": self.connections_opened,
            "connections_closed": self.connections_closed,
            "acquire_wait_ms": self.acquire_wait_ms.summary().as_dict(),
            "hold_time_ms": self.hold_time_ms.summary().as_dict(),
            "ping_ms": self.ping_ms.summary().as_dict(),
            # On the caller's clock reading: summarising histograms takes time of its own.
            **self._occupancy_window(time.perf_counter() if now is None else now),
        }

    def _occupancy_window(self, now: float) -> dict[str, float | None]:
        if self.occupancy is None:
            return {"idle_s": None, "handoff_s": None}
        idle_s, handoff_s = self.occupancy.window(now)
        return {"idle_s": round(idle_s, 6), "handoff_s": round(handoff_s, 6)}

    def totals(self) -> dict[str, Any]:
        """Return the cumulative counters in the /telemetry/totals shape."""
        return {
            "pool_size": self.pool_size,
            "max_overflow": self.max_overflow,
            "checked_out": self.checked_out,
            "acquires": self.acquire_totals.count,
            "acquire_wait_s": self.acquire_totals.sum_s,
            "acquire_wait_buckets": self.acquire_totals.cumulative_buckets(),
            "timeouts": self.timeouts_total,
            "leases": self.hold_totals.count,
            "hold_s": self.hold_totals.sum_s,
            "hold_sq_s2": self.hold_totals.sum_sq_s2,
            "connections_opened": self.opened_total,
            "connections_closed": self.closed_total,
        }


class RequestTelemetry:
    """HTTP requests in flight, integrated over time, and the SQL statements they sent.

    The in-flight count is a step function of time; its integral (request-seconds) is kept
    exactly by adding `in_flight x elapsed` at every step, so the window's mean in flight is
    that area divided by the window length. Totals are cumulative (Prometheus and observers read
    them); the window subtracts the values at reset.
    """

    def __init__(self, now: float) -> None:
        self.in_flight = 0
        self.peak_in_flight = 0
        self.completed_total = 0
        self.statements_total = 0
        self._area = 0.0  # request-seconds up to self._changed
        self._changed = now
        self._window_area = 0.0
        self._window_completed = 0
        self._window_statements = 0

    def area(self, now: float) -> float:
        """Return the request-seconds in flight since process start, up to `now`."""
        return self._area + self.in_flight * (now - self._changed)

    def start(self, now: float) -> None:
        """Count a request entering the app at `now` (perf_counter seconds)."""
        self._area += self.in_flight * (now - self._changed)
        self._changed = now
        self.in_flight += 1
        if self.in_flight > self.peak_in_flight:
            self.peak_in_flight = self.in_flight

    def finish(self, now: float, statements: int) -> None:
        """Count a request leaving the app at `now`, with every statement it sent."""
        self._area += self.in_flight * (now - self._changed)
        self._changed = now
        self.in_flight -= 1
        self.completed_total += 1
        self.statements_total += statements

    def reset_window(self, now: float) -> None:
        """Start a new window at `now`; requests still in flight count from here on."""
        self._window_area = self.area(now)
        self._window_completed = self.completed_total
        self._window_statements = self.statements_total
        self.peak_in_flight = self.in_flight

    def inflight_mean(self, now: float, window_s: float) -> float:
        """Return the exact mean of requests in flight over a window of `window_s` to `now`."""
        return (self.area(now) - self._window_area) / window_s if window_s > 0 else 0.0

    def snapshot(self, now: float, window_s: float) -> dict[str, Any]:
        """Return the window figures in the /telemetry shape."""
        completed = self.completed_total - self._window_completed
        statements = self.statements_total - self._window_statements
        return {
            "in_flight": self.in_flight,
            "inflight_mean": round(self.inflight_mean(now, window_s), 4),
            "inflight_peak": self.peak_in_flight,
            "completed": completed,
            "statements": statements,
            "statements_per_request": round(statements / completed, 4) if completed else None,
        }

    def totals(self, now: float) -> dict[str, Any]:
        """Return the cumulative counters in the /telemetry/totals shape."""
        return {
            "in_flight": self.in_flight,
            "completed": self.completed_total,
            "statements": self.statements_total,
            "in_flight_s": self.area(now),
        }


class TelemetrySection(Protocol):
    """App-specific figures served under their own key of /telemetry (e.g. downstream calls)."""

    def snapshot(self) -> Mapping[str, Any]:
        """Return the window figures."""
        ...

    def reset_window(self) -> None:
        """Start a new window."""
        ...


class Telemetry:
    """All telemetry of one app instance (one process), with its own Prometheus registry."""

    def __init__(self) -> None:
        # One registry per app: the global default registry would refuse a second app in the
        # same process (duplicate series).
        self.registry = CollectorRegistry()
        metrics = PoolMetrics(self.registry)
        self.sqlalchemy = PoolTelemetry(SQLALCHEMY, metrics)
        self.asyncpg = PoolTelemetry(ASYNCPG, metrics)
        self.pools = {SQLALCHEMY: self.sqlalchemy, ASYNCPG: self.asyncpg}
        self.sections: dict[str, TelemetrySection] = {}
        # One clock for the window and the in-flight integral, so the mean is area / window_s.
        self.started = time.perf_counter()
        self.window_started = self.started
        self.requests = RequestTelemetry(self.started)
        self.registry.register(TelemetryCollector(self))
        self.versions = package_versions()  # read once: a process's packages do not change

    def add_section(self, name: str, section: TelemetrySection) -> None:
        """Serve an app's own window figures under `name` in /telemetry, reset with the rest."""
        if (
            name in self.pools
            or name in ("window_s", "requests", "totals", "stack")
            or name in self.sections
        ):
            raise ValueError(f"telemetry section {name!r} exists already")
        self.sections[name] = section

    def reset_window(self) -> None:
        """Start a new measurement window (totals and Prometheus counters keep counting)."""
        now = time.perf_counter()
        for pool in self.pools.values():
            pool.reset_window(now)
        for section in self.sections.values():
            section.reset_window()
        self.requests.reset_window(now)
        self.window_started = now

    def snapshot(self) -> dict[str, Any]:
        """Return the /telemetry body: the current window, then the totals."""
        now = time.perf_counter()
        window_s = now - self.window_started
        body: dict[str, Any] = {"window_s": round(window_s, 3)}
        body.update((name, pool.snapshot(now)) for name, pool in self.pools.items())
        body.update((name, dict(section.snapshot())) for name, section in self.sections.items())
        body["requests"] = self.requests.snapshot(now, window_s)
        body["totals"] = self._totals(now)
        body["stack"] = self.stack()
        return body

    def stack(self) -> dict[str, Any]:
        """What the service runs on: versions, and each instrumented pool's driver and limits."""
        pools = {
            name: {"driver": p.driver, "pool_size": p.pool_size, "max_overflow": p.max_overflow}
            for name, p in self.pools.items()
            if p.instrumented
        }
        return {"versions": dict(self.versions), "pools": pools}

    def totals(self) -> dict[str, Any]:
        """Return the /telemetry/totals body: cumulative counters only (cheap: no sorting)."""
        return self._totals(time.perf_counter())

    def _totals(self, now: float) -> dict[str, Any]:
        return {
            # Which process answered: behind one port, several workers each keep their own.
            "pid": os.getpid(),
            "uptime_s": now - self.started,
            "requests": self.requests.totals(now),
            # Only the pools that are instrumented: an absent pool is not measured, not idle.
            "pools": {n: p.totals() for n, p in self.pools.items() if p.instrumented},
        }
