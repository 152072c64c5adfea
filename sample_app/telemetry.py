"""Pool, request and downstream telemetry: Prometheus metrics plus an exact JSON window snapshot.

Two views of the same events:
- Prometheus (`/metrics`): cumulative counters and bucketed histograms in a registry owned by
  one app, never reset (scrapers compute rates themselves).
- The window (`/telemetry`): counts, exact percentiles and peaks since the last reset, which is
  what one benchmark run needs. Samples are kept in a bounded buffer; count, sum and max stay
  exact past the bound, percentiles then cover the most recent samples.
"""

from __future__ import annotations

import math
import statistics
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from sample_app.schemas import (
    HttpSnapshot,
    PoolSnapshot,
    RequestsSnapshot,
    TelemetrySnapshot,
    WindowStats,
)

DEFAULT_WINDOW_SAMPLES = 200_000
# Seconds; from sub-millisecond checkouts of an idle pool to waits that hit a 30 s pool_timeout.
LATENCY_BUCKETS_S = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
    0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip


@dataclass
class RequestPoolWait:
    """Pool acquire wait of one request, summed over both pools (feeds Server-Timing)."""

    seconds: float = 0.0


# The timing middleware puts a fresh accumulator here per request. It is a mutable object, not a
# float, so that additions made in another context still reach the request: SQLAlchemy's async
# bridge runs pool code in a greenlet that shares the task's context, and the object survives a
# context copy too.
current_pool_wait: ContextVar[RequestPoolWait | None] = ContextVar(
    "current_pool_wait", default=None
)


class RequestActivity:
    """What one request is doing: statements sent so far, DB connections held, calls waiting.

    The middleware hands one to the DB hooks and the fan-out through `current_request`.
    """

    __slots__ = ("count", "connections_held", "calls_waiting", "held_while_waiting")

    def __init__(self) -> None:
        self.count = 0  # SQL statements sent
        self.connections_held = 0  # DB connections checked out now, both pools
        self.calls_waiting = 0  # downstream calls queued on the semaphore now
        self.held_while_waiting = 0  # connections counted in HttpTelemetry while it waits


# Set by the in-flight middleware for every counted request; None outside one (start-up, health
# checks, telemetry endpoints, the seed), so those statements are never attributed. A mutable
# object for the same reason as current_pool_wait: the pool hooks run in SQLAlchemy's greenlet
# and the fan-out's calls in tasks of their own (each with a copy of the request's context), and
# all of them must reach the same request.
current_request: ContextVar[RequestActivity | None] = ContextVar("current_request", default=None)


def count_statement() -> None:
    """Attribute one SQL statement sent to the database to the current request, if any."""
    if (request := current_request.get()) is not None:
        request.count += 1


def hold_connection() -> RequestActivity | None:
    """Count a DB connection as held by the current request; return it for the release."""
    if (request := current_request.get()) is not None:
        request.connections_held += 1
    return request


def release_connection(request: RequestActivity | None) -> None:
    """Uncount a connection counted by `hold_connection` (pass what it returned).

    The checkout hands the request over rather than the checkin looking it up again, so a
    connection returned from another context (a session closed elsewhere) uncounts its own request.
    """
    if request is not None:
        request.connections_held -= 1


def percentile(sorted_values: list[float], q: float) -> float:
    """Return the q-quantile (0..1) by linear interpolation, as numpy's default does."""
    if not sorted_values:
        return 0.0
    rank = q * (len(sorted_values) - 1)
    low = math.floor(rank)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (rank - low)


class WindowHistogram:
    """Samples in milliseconds for the current window, with an exact summary."""

    def __init__(self, max_samples: int = DEFAULT_WINDOW_SAMPLES) -> None:
        self._samples: deque[float] = deque(maxlen=max_samples)
        self.count = 0
        self.total = 0.0
        self.max = 0.0

    def observe(self, value_ms: float) -> None:
        """Add one sample."""
        self._samples.append(value_ms)
        self.count += 1
        self.total += value_ms
        self.max = max(self.max, value_ms)

    def reset(self) -> None:
        """Drop every sample."""
        self._samples.clear()
        self.count = 0
        self.total = 0.0
        self.max = 0.0

    def summary(self) -> WindowStats:
        """Return count, sum, mean, std, p50/p95/p99 and max of the window."""
        values = sorted(self._samples)
        return WindowStats(
            count=self.count,
            sum=round(self.total, 4),
            mean=round(self.total / self.count, 4) if self.count else 0.0,
            # Over the kept samples: the hold time's variability for Allen-Cunneen.
            std=round(statistics.pstdev(values), 4) if values else 0.0,
            p50=round(percentile(values, 0.50), 4),
            p95=round(percentile(values, 0.95), 4),
            p99=round(percentile(values, 0.99), 4),
            max=round(self.max, 4),
        )


class _PoolMetrics:
    """Prometheus series shared by both pools, labelled `pool`."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.acquire_wait = Histogram(
            "poolbench_pool_acquire_wait_seconds",
            "Time a request waited to get a connection from the pool.",
            ["pool"],
            buckets=LATENCY_BUCKETS_S,
            registry=registry,
        )
        self.hold = Histogram(
            "poolbench_pool_hold_seconds",
            "Time a connection stayed checked out (checkout to checkin).",
            ["pool"],
            buckets=LATENCY_BUCKETS_S,
            registry=registry,
        )
        self.timeouts = Counter(
            "poolbench_pool_checkout_timeouts",
            "Checkouts that gave up after the pool timeout.",
            ["pool"],
            registry=registry,
        )
        self.opened = Counter(
            "poolbench_pool_connections_opened",
            "Database connections opened by the pool.",
            ["pool"],
            registry=registry,
        )
        self.closed = Counter(
            "poolbench_pool_connections_closed",
            "Database connections closed by the pool.",
            ["pool"],
            registry=registry,
        )


class PoolTelemetry:
    """Checkouts, waits, leases and connection churn of one pool."""

    def __init__(
        self, name: str, *, pool_size: int, max_overflow: int, metrics: _PoolMetrics
    ) -> None:
        self.name = name
        self.pool_size = pool_size
        self.max_overflow = max_overflow
        self.checked_out = 0
        self.peak_checked_out = 0
        self.timeouts = 0
        self.connections_opened = 0
        self.connections_closed = 0
        self.acquire_wait_ms = WindowHistogram()
        self.hold_time_ms = WindowHistogram()
        self._wait_hist = metrics.acquire_wait.labels(pool=name)
        self._hold_hist = metrics.hold.labels(pool=name)
        self._timeouts = metrics.timeouts.labels(pool=name)
        self._opened = metrics.opened.labels(pool=name)
        self._closed = metrics.closed.labels(pool=name)

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
        self._wait_hist.observe(wait_s)
        if timed_out:
            self.timeouts += 1
            self._timeouts.inc()
        if (acc := current_pool_wait.get()) is not None:
            acc.seconds += wait_s

    def record_checkout(self) -> None:
        """Count a connection handed out."""
        self.checked_out += 1
        self.peak_checked_out = max(self.peak_checked_out, self.checked_out)

    def record_checkin(self) -> None:
        """Count a connection given back (call before another task can check it out)."""
        self.checked_out = max(0, self.checked_out - 1)

    def record_hold(self, hold_s: float) -> None:
        """Record one lease of `hold_s` seconds, checkout to checkin."""
        self.hold_time_ms.observe(hold_s * 1000)
        self._hold_hist.observe(hold_s)

    def record_opened(self) -> None:
        """Count a new database connection."""
        self.connections_opened += 1
        self._opened.inc()

    def record_closed(self) -> None:
        """Count a closed database connection."""
        self.connections_closed += 1
        self._closed.inc()

    def reset_window(self) -> None:
        """Start a new window; the peak restarts from what is checked out now."""
        self.peak_checked_out = self.checked_out
        self.timeouts = 0
        self.connections_opened = 0
        self.connections_closed = 0
        self.acquire_wait_ms.reset()
        self.hold_time_ms.reset()

    def snapshot(self) -> PoolSnapshot:
        """Return the window figures in the /telemetry shape."""
        return PoolSnapshot(
            pool_size=self.pool_size,
            max_overflow=self.max_overflow,
            checked_out=self.checked_out,
            overflow_in_use=self.overflow_in_use,
            peak_checked_out=self.peak_checked_out,
            timeouts=self.timeouts,
            connections_opened=self.connections_opened,
            connections_closed=self.connections_closed,
            acquire_wait_ms=self.acquire_wait_ms.summary(),
            hold_time_ms=self.hold_time_ms.summary(),
        )


class HttpTelemetry:
    """Downstream calls: in flight now, peak, totals, timeouts and the wait for the semaphore.

    A call queued on the semaphore while its request holds a DB connection keeps that connection
    idle for the whole wait: counted in `waiting_holding_connection`, and the connections so held
    in `connections_held_waiting` (each request once, however many of its calls wait).
    """

    def __init__(self, *, limit: int, registry: CollectorRegistry) -> None:
        self.limit = limit
        self.in_flight = 0
        self.peak_in_flight = 0
        self.calls = 0
        self.timeouts = 0
        self.semaphore_wait_ms = WindowHistogram()
        self.waiting_holding_connection = 0
        self.connections_held_waiting = 0
        self.peak_connections_held_waiting = 0
        self._calls = Counter(
            "poolbench_http_calls", "Downstream calls started.", registry=registry
        )
        self._timeouts = Counter(
            "poolbench_http_timeouts",
            "Fan-out requests that ran out of time (answered 504).",
            registry=registry,
        )
        self._semaphore_wait = Histogram(
            "poolbench_http_semaphore_wait_seconds",
            "Time a downstream call waited for a slot of the semaphore (HTTP_CONCURRENCY_LIMIT).",
            buckets=LATENCY_BUCKETS_S,
            registry=registry,
        )
        self._waiting_holding = Counter(
            "poolbench_http_semaphore_waits_holding_connection",
            "Downstream calls that queued on the semaphore while their request held a DB "
            "connection.",
            registry=registry,
        )

    @contextmanager
    def track_semaphore_wait(self, *, queued: bool) -> Iterator[None]:
        """Time the block as one call's wait for the semaphore (`queued`: it found no free slot).

        Cancelled waits (the deadline) are recorded too: the time was spent waiting.
        """
        request = current_request.get()
        holding = queued and request is not None and request.connections_held > 0
        holder = request if holding else None
        if holder is not None:
            self._start_holding(holder)
        started = time.perf_counter()
        try:
            yield
        finally:
            wait_s = time.perf_counter() - started
            self.semaphore_wait_ms.observe(wait_s * 1000)
            self._semaphore_wait.observe(wait_s)
            if holder is not None:
                self._stop_holding(holder)

    def _start_holding(self, request: RequestActivity) -> None:
        self.waiting_holding_connection += 1
        self._waiting_holding.inc()
        if request.calls_waiting == 0:
            # A request's connections count once while any of its calls waits; what it held
            # when the first one queued is what is taken off when the last one leaves.
            request.held_while_waiting = request.connections_held
            self.connections_held_waiting += request.held_while_waiting
            self.peak_connections_held_waiting = max(
                self.peak_connections_held_waiting, self.connections_held_waiting
            )
        request.calls_waiting += 1

    def _stop_holding(self, request: RequestActivity) -> None:
        request.calls_waiting -= 1
        if request.calls_waiting == 0:
            self.connections_held_waiting -= request.held_while_waiting
            request.held_while_waiting = 0

    @contextmanager
    def track_call(self) -> Iterator[None]:
        """Count one downstream call as in flight for the duration of the block."""
        self.calls += 1
        self._calls.inc()
        self.in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        try:
            yield
        finally:
            self.in_flight -= 1

    def record_timeout(self) -> None:
        """Count a fan-out that hit its deadline."""
        self.timeouts += 1
        self._timeouts.inc()

    def reset_window(self) -> None:
        """Start a new window; the peaks restart from what is in flight (held) now."""
        self.peak_in_flight = self.in_flight
        self.calls = 0
        self.timeouts = 0
        self.semaphore_wait_ms.reset()
        self.waiting_holding_connection = 0
        self.peak_connections_held_waiting = self.connections_held_waiting

    def snapshot(self) -> HttpSnapshot:
        """Return the window figures in the /telemetry shape."""
        return HttpSnapshot(
            limit=self.limit,
            in_flight=self.in_flight,
            peak_in_flight=self.peak_in_flight,
            calls=self.calls,
            timeouts=self.timeouts,
            semaphore_wait_ms=self.semaphore_wait_ms.summary(),
            waiting_holding_connection=self.waiting_holding_connection,
            connections_held_waiting=self.connections_held_waiting,
            peak_connections_held_waiting=self.peak_connections_held_waiting,
        )


class RequestTelemetry:
    """HTTP requests in flight, integrated over time, and the SQL statements they sent.

    The in-flight count is a step function of time; its integral (request-seconds) is kept
    exactly by adding `in_flight x elapsed` at every step, so the window's mean in flight is
    that area divided by the window length. Everything here is plain arithmetic on the event
    loop thread: no locks, no allocation per request beyond the caller's RequestActivity.
    Totals are cumulative (Prometheus reads them); the window subtracts the values at reset.
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

    def snapshot(self, now: float, window_s: float) -> RequestsSnapshot:
        """Return the window figures in the /telemetry shape."""
        completed = self.completed_total - self._window_completed
        statements = self.statements_total - self._window_statements
        return RequestsSnapshot(
            in_flight=self.in_flight,
            inflight_mean=round(self.inflight_mean(now, window_s), 4),
            inflight_peak=self.peak_in_flight,
            completed=completed,
            statements=statements,
            statements_per_request=round(statements / completed, 4) if completed else None,
        )


class _GaugeCollector(Collector):
    """Instant values read at scrape time, so there is no second copy to keep in sync."""

    def __init__(self, telemetry: Telemetry) -> None:
        self._telemetry = telemetry

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        pools = (self._telemetry.sqlalchemy, self._telemetry.asyncpg)
        gauges = {
            "poolbench_pool_size": ("Base size of the pool.", lambda p: p.pool_size),
            "poolbench_pool_max_overflow": ("Allowed overflow.", lambda p: p.max_overflow),
            "poolbench_pool_checked_out": ("Connections in use now.", lambda p: p.checked_out),
            "poolbench_pool_overflow_in_use": (
                "Connections in use beyond pool_size.",
                lambda p: p.overflow_in_use,
            ),
            "poolbench_pool_peak_checked_out": (
                "Most connections in use at once in this window.",
                lambda p: p.peak_checked_out,
            ),
        }
        for name, (doc, value) in gauges.items():
            family = GaugeMetricFamily(name, doc, labels=["pool"])
            for pool in pools:
                family.add_metric([pool.name], value(pool))
            yield family
        http = self._telemetry.http
        for name, doc, number in (
            ("poolbench_http_in_flight", "Downstream calls in flight now.", http.in_flight),
            (
                "poolbench_http_peak_in_flight",
                "Most downstream calls in flight at once in this window.",
                http.peak_in_flight,
            ),
            ("poolbench_http_concurrency_limit", "Semaphore limit on calls.", http.limit),
            (
                "poolbench_http_connections_held_waiting",
                "DB connections held now by requests with a call queued on the semaphore.",
                http.connections_held_waiting,
            ),
            (
                "poolbench_http_peak_connections_held_waiting",
                "Most DB connections held at once by requests with a call queued on the "
                "semaphore in this window.",
                http.peak_connections_held_waiting,
            ),
        ):
            yield GaugeMetricFamily(name, doc, value=number)
        yield from self._request_metrics()

    def _request_metrics(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        telemetry = self._telemetry
        requests = telemetry.requests
        now = time.perf_counter()
        window_s = now - telemetry.window_started
        for name, doc, number in (
            ("poolbench_requests_in_flight", "HTTP requests in the app now.", requests.in_flight),
            (
                "poolbench_requests_peak_in_flight",
                "Most HTTP requests in the app at once in this window.",
                requests.peak_in_flight,
            ),
            (
                "poolbench_requests_mean_in_flight",
                "Mean HTTP requests in the app over this window (exact time average).",
                requests.inflight_mean(now, window_s),
            ),
        ):
            yield GaugeMetricFamily(name, doc, value=number)
        # Counters for scrapers: rate(in_flight_seconds) is the mean in flight over any range.
        for name, doc, number in (
            (
                "poolbench_requests_in_flight_seconds",
                "Integral of HTTP requests in flight over time (request-seconds).",
                requests.area(now),
            ),
            ("poolbench_requests_completed", "HTTP requests completed.", requests.completed_total),
            (
                "poolbench_request_statements",
                "SQL statements sent by completed HTTP requests.",
                requests.statements_total,
            ),
        ):
            yield CounterMetricFamily(name, doc, value=number)


class Telemetry:
    """All telemetry of one app instance, with its own Prometheus registry."""

    def __init__(
        self,
        *,
        db_pool_size: int,
        db_max_overflow: int,
        pg_pool_max_size: int,
        http_concurrency_limit: int,
    ) -> None:
        # One registry per app: the global default registry would refuse a second app in the
        # same process (duplicate series), which every test with custom settings needs.
        self.registry = CollectorRegistry()
        metrics = _PoolMetrics(self.registry)
        self.sqlalchemy = PoolTelemetry(
            "sqlalchemy", pool_size=db_pool_size, max_overflow=db_max_overflow, metrics=metrics
        )
        self.asyncpg = PoolTelemetry(
            "asyncpg", pool_size=pg_pool_max_size, max_overflow=0, metrics=metrics
        )
        self.http = HttpTelemetry(limit=http_concurrency_limit, registry=self.registry)
        # One clock for the window and the in-flight integral, so the mean is area / window_s.
        self.window_started = time.perf_counter()
        self.requests = RequestTelemetry(self.window_started)
        self.registry.register(_GaugeCollector(self))

    def reset_window(self) -> None:
        """Start a new measurement window (Prometheus counters keep counting)."""
        now = time.perf_counter()
        self.sqlalchemy.reset_window()
        self.asyncpg.reset_window()
        self.http.reset_window()
        self.requests.reset_window(now)
        self.window_started = now

    def snapshot(self) -> TelemetrySnapshot:
        """Return the /telemetry body for the current window."""
        now = time.perf_counter()
        window_s = now - self.window_started
        return TelemetrySnapshot(
            window_s=round(window_s, 3),
            sqlalchemy=self.sqlalchemy.snapshot(),
            asyncpg=self.asyncpg.snapshot(),
            http=self.http.snapshot(),
            requests=self.requests.snapshot(now, window_s),
        )
