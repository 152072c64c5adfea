"""Cumulative readings of a service and the window between two of them.

A Reading is what a service's counters said at one moment: from `/telemetry/totals`
(`reading_from_totals`) or from Prometheus `/metrics` (`poolbench.instrumentation.prometheus`). Two
readings give any window's figures by difference (`window_between`), so an observer never resets
the service's own window. A figure the service did not report is None, and the window names it
in `missing` instead of guessing it. Stdlib only: the sweep runner may use this for targets
without /telemetry.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

Buckets = tuple[tuple[float, float], ...]  # (upper bound in s, cumulative count), ascending


@dataclass(frozen=True, kw_only=True)
class PoolReading:
    """One pool's cumulative counters (None: not reported)."""

    pool_size: float | None = None
    max_overflow: float | None = None
    checked_out: float | None = None
    acquires: float | None = None
    acquire_wait_s: float | None = None
    acquire_wait_buckets: Buckets = ()
    timeouts: float | None = None
    leases: float | None = None
    hold_s: float | None = None
    hold_sq_s2: float | None = None
    connections_opened: float | None = None
    connections_closed: float | None = None


@dataclass(frozen=True, kw_only=True)
class Reading:
    """A service's cumulative counters at one moment; `pools` holds the instrumented ones."""

    source: str
    pid: int | None = None
    uptime_s: float | None = None
    in_flight: float | None = None
    completed: float | None = None
    statements: float | None = None
    in_flight_s: float | None = None
    pools: Mapping[str, PoolReading] = field(default_factory=dict)


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{what} is not a finite number: {value!r}")
    return float(value)


def reading_from_totals(doc: Mapping[str, Any], source: str = "/telemetry/totals") -> Reading:
    """Read a `/telemetry/totals` body (or `/telemetry`'s `totals`); ValueError if malformed."""
    try:
        requests, pools = doc["requests"], doc["pools"]
        pid = doc.get("pid")
        return Reading(
            source=source,
            pid=pid if isinstance(pid, int) and not isinstance(pid, bool) else None,
            uptime_s=_number(doc["uptime_s"], "uptime_s"),
            in_flight=_number(requests["in_flight"], "requests.in_flight"),
            completed=_number(requests["completed"], "requests.completed"),
            statements=_number(requests["statements"], "requests.statements"),
            in_flight_s=_number(requests["in_flight_s"], "requests.in_flight_s"),
            pools={name: _pool_from_totals(name, pool) for name, pool in pools.items()},
        )
    except (KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"not a poolbench totals document ({exc!r})") from None


def _pool_from_totals(name: str, pool: Mapping[str, Any]) -> PoolReading:
    numbers = {
        key: _number(pool[key], f"{name}.{key}")
        for key in (
            "pool_size", "max_overflow", "checked_out", "acquires", "acquire_wait_s",
            "timeouts", "leases", "hold_s", "hold_sq_s2", "connections_opened",
            "connections_closed",
        )
    }  # fmt: skip
    buckets = tuple(
        (_number(le, f"{name}.bucket"), _number(n, f"{name}.bucket"))
        for le, n in pool["acquire_wait_buckets"]
    )
    return PoolReading(acquire_wait_buckets=buckets, **numbers)


def bucket_quantile(q: float, buckets: Buckets, total: float) -> float | None:
    """The q-quantile of a bucketed histogram, interpolated inside its bucket (PromQL's
    histogram_quantile); the highest finite bound when it lies beyond; None without samples."""
    if total <= 0 or not buckets:
        return None
    rank = q * total
    lower, below = 0.0, 0.0
    for bound, cumulative in buckets:
        if cumulative >= rank:
            inside = cumulative - below
            return lower + (bound - lower) * ((rank - below) / inside if inside > 0 else 1.0)
        lower, below = bound, cumulative
    return buckets[-1][0]


@dataclass(frozen=True, kw_only=True)
class PoolWindow:
    """One pool over a window (None: a figure the service did not report)."""

    name: str
    pool_size: float | None
    max_overflow: float | None
    leases: float | None
    lease_rps: float | None
    hold_time_mean_ms: float | None
    hold_time_cv: float | None
    acquires: float | None
    acquire_wait_mean_ms: float | None
    # Bucketed (to a bucket's width), unlike /telemetry's exact window percentiles.
    acquire_wait_p95_ms: float | None
    timeouts: float | None


@dataclass(frozen=True, kw_only=True)
class Window:
    """A service's figures between two readings, with the figures it could not give."""

    source: str
    window_s: float
    completed: float | None
    rps: float | None
    inflight_mean: float | None
    statements_per_request: float | None
    pools: Mapping[str, PoolWindow]
    missing: tuple[str, ...]

    def telemetry(self) -> dict[str, Any]:
        """The window in the `/telemetry` shape (what it knows; None where it does not)."""
        body: dict[str, Any] = {"window_s": round(self.window_s, 3)}
        for name, pool in self.pools.items():
            mean = pool.hold_time_mean_ms
            cv = pool.hold_time_cv
            body[name] = {
                "pool_size": pool.pool_size,
                "max_overflow": pool.max_overflow,
                "timeouts": pool.timeouts,
                "acquire_wait_ms": {
                    "count": pool.acquires,
                    "mean": pool.acquire_wait_mean_ms,
                    "p95": pool.acquire_wait_p95_ms,
                },
                "hold_time_ms": {
                    "count": pool.leases,
                    "mean": mean,
                    "std": None if mean is None or cv is None else cv * mean,
                },
            }
        body["requests"] = {
            "completed": self.completed,
            "inflight_mean": self.inflight_mean,
            "statements_per_request": self.statements_per_request,
        }
        return body


def _delta(start: float | None, end: float | None, what: str, missing: list[str]) -> float | None:
    if start is None or end is None:
        missing.append(what)
        return None
    if end < start:
        raise ValueError(f"{what} went down ({start:g} -> {end:g}): the service restarted")
    return end - start


def _ratio(top: float | None, bottom: float | None) -> float | None:
    return None if top is None or bottom is None or bottom <= 0 else top / bottom


def _pool_window(
    name: str, start: PoolReading, end: PoolReading, window_s: float, missing: list[str]
) -> PoolWindow:
    leases = _delta(start.leases, end.leases, f"{name}.leases", missing)
    hold_s = _delta(start.hold_s, end.hold_s, f"{name}.hold_time", missing)
    hold_sq = _delta(start.hold_sq_s2, end.hold_sq_s2, f"{name}.hold_time_cv", missing)
    acquires = _delta(start.acquires, end.acquires, f"{name}.acquires", missing)
    wait_s = _delta(start.acquire_wait_s, end.acquire_wait_s, f"{name}.acquire_wait", missing)
    timeouts = _delta(start.timeouts, end.timeouts, f"{name}.timeouts", missing)
    mean_s = _ratio(hold_s, leases)
    cv = None
    if mean_s is not None and hold_sq is not None and leases and mean_s > 0:
        variance = max(0.0, hold_sq / leases - mean_s * mean_s)
        cv = math.sqrt(variance) / mean_s
    p95 = None
    if acquires and start.acquire_wait_buckets and end.acquire_wait_buckets:
        buckets = _bucket_delta(start.acquire_wait_buckets, end.acquire_wait_buckets)
        quantile = bucket_quantile(0.95, buckets, acquires)
        p95 = None if quantile is None else quantile * 1000
    elif not end.acquire_wait_buckets:
        missing.append(f"{name}.acquire_wait_p95")
    wait_mean = _ratio(wait_s, acquires)
    return PoolWindow(
        name=name,
        pool_size=end.pool_size,
        max_overflow=end.max_overflow,
        leases=leases,
        lease_rps=None if leases is None else leases / window_s,
        hold_time_mean_ms=None if mean_s is None else mean_s * 1000,
        hold_time_cv=cv,
        acquires=acquires,
        acquire_wait_mean_ms=None if wait_mean is None else wait_mean * 1000,
        acquire_wait_p95_ms=p95,
        timeouts=timeouts,
    )


def _bucket_delta(start: Buckets, end: Buckets) -> Buckets:
    before = dict(start)
    return tuple((bound, count - before.get(bound, 0.0)) for bound, count in end)


def window_between(start: Reading, end: Reading, *, elapsed_s: float) -> Window:
    """The figures of the window from `start` to `end`.

    The window's length is the service's own uptime difference when both readings have it,
    else `elapsed_s` (the observer's clock). ValueError when a counter went down (a restart).
    """
    missing: list[str] = []
    if start.uptime_s is not None and end.uptime_s is not None:
        if end.uptime_s <= start.uptime_s:
            raise ValueError("the service's uptime went back: it restarted during the window")
        window_s = end.uptime_s - start.uptime_s
    else:
        window_s = elapsed_s
    if window_s <= 0:
        raise ValueError("the window is empty")
    completed = _delta(start.completed, end.completed, "requests.completed", missing)
    statements = _delta(start.statements, end.statements, "requests.statements", missing)
    area = _delta(start.in_flight_s, end.in_flight_s, "requests.in_flight_seconds", missing)
    pools = {
        name: _pool_window(name, start.pools[name], pool, window_s, missing)
        for name, pool in end.pools.items()
        if name in start.pools
    }
    return Window(
        source=end.source,
        window_s=window_s,
        completed=completed,
        rps=None if completed is None else completed / window_s,
        inflight_mean=None if area is None else area / window_s,
        statements_per_request=_ratio(statements, completed),
        pools=pools,
        missing=tuple(dict.fromkeys(missing)),
    )


def merge_missing(*groups: Sequence[str]) -> tuple[str, ...]:
    """Missing figure names from several places, each once, in order."""
    return tuple(dict.fromkeys(name for group in groups for name in group))
