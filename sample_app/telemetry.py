"""The sample app's own telemetry: downstream calls and the semaphore that bounds them.

Pools, requests in flight, statements per request, `/telemetry` and `/metrics` come from
`poolbench.instrumentation` (the same helper any service uses); this is the app-specific `http`
section of `/telemetry`, with its Prometheus series in the same registry.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from poolbench.instrumentation import RequestActivity, WindowHistogram, current_request
from poolbench.instrumentation.window import LATENCY_BUCKETS_S


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
        registry.register(_HttpGauges(self))

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

    def snapshot(self) -> dict[str, Any]:
        """Return the window figures in the /telemetry shape."""
        return {
            "limit": self.limit,
            "in_flight": self.in_flight,
            "peak_in_flight": self.peak_in_flight,
            "calls": self.calls,
            "timeouts": self.timeouts,
            "semaphore_wait_ms": self.semaphore_wait_ms.summary().as_dict(),
            "waiting_holding_connection": self.waiting_holding_connection,
            "connections_held_waiting": self.connections_held_waiting,
            "peak_connections_held_waiting": self.peak_connections_held_waiting,
        }


class _HttpGauges(Collector):
    """Instant values read at scrape time, so there is no second copy to keep in sync."""

    def __init__(self, http: HttpTelemetry) -> None:
        self._http = http

    def collect(self) -> Iterator[GaugeMetricFamily]:
        http = self._http
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
