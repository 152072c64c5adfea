"""The Prometheus side of the telemetry: the pools' labelled series, the scrape-time collector."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from poolbench.instrumentation.window import LATENCY_BUCKETS_S

if TYPE_CHECKING:
    from poolbench.instrumentation.telemetry import Telemetry


class PoolSeries:
    """The Prometheus children of one pool (labels made once, not per event)."""

    def __init__(self, metrics: PoolMetrics, name: str) -> None:
        self.wait = metrics.acquire_wait.labels(pool=name)
        self.hold = metrics.hold.labels(pool=name)
        self.hold_sq = metrics.hold_sq.labels(pool=name)
        self.timeouts = metrics.timeouts.labels(pool=name)
        self.opened = metrics.opened.labels(pool=name)
        self.closed = metrics.closed.labels(pool=name)


class PoolMetrics:
    """Prometheus series shared by the pools, labelled `pool`."""

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
            "Time a connection was out of the pool (leaving it to checkin).",
            ["pool"],
            buckets=LATENCY_BUCKETS_S,
            registry=registry,
        )
        self.hold_sq = Counter(
            "poolbench_pool_hold_seconds_squared",
            "Sum of squared hold times (with the histogram's count and sum: their variance).",
            ["pool"],
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


class TelemetryCollector(Collector):
    """Instant values read at scrape time, so there is no second copy to keep in sync."""

    def __init__(self, telemetry: Telemetry) -> None:
        self._telemetry = telemetry

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        telemetry = self._telemetry
        pools = [p for p in telemetry.pools.values() if p.instrumented]
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
        requests = telemetry.requests
        now = time.perf_counter()
        window_s = now - telemetry.window_started
        for name, doc, number in (
            (
                "poolbench_telemetry_uptime_seconds",
                "Seconds since the telemetry started (a monotonic clock for rates).",
                now - telemetry.started,
            ),
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
