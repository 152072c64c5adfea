"""Prometheus text (`/metrics` of an instrumented service) to a Reading, and what it lacks.

For services that expose only `/metrics` (or whose `/telemetry` has no totals): the poolbench_*
series `poolbench.instrumentation` exports, read with prometheus_client's own text parser. Two
readings give a window (`poolbench.instrumentation.readings.window_between`), the same as from
/telemetry/totals.
"""

from __future__ import annotations

import math
from collections import defaultdict

from prometheus_client.parser import text_string_to_metric_families

from poolbench.instrumentation.readings import PoolReading, Reading

SOURCE = "/metrics"
POOL_LABEL = "pool"
# Reading field -> sample name.
REQUEST_SERIES = {
    "uptime_s": "poolbench_telemetry_uptime_seconds",
    "in_flight": "poolbench_requests_in_flight",
    "completed": "poolbench_requests_completed_total",
    "statements": "poolbench_request_statements_total",
    "in_flight_s": "poolbench_requests_in_flight_seconds_total",
}
POOL_SERIES = {
    "pool_size": "poolbench_pool_size",
    "max_overflow": "poolbench_pool_max_overflow",
    "checked_out": "poolbench_pool_checked_out",
    "acquires": "poolbench_pool_acquire_wait_seconds_count",
    "acquire_wait_s": "poolbench_pool_acquire_wait_seconds_sum",
    "timeouts": "poolbench_pool_checkout_timeouts_total",
    "leases": "poolbench_pool_hold_seconds_count",
    "hold_s": "poolbench_pool_hold_seconds_sum",
    "hold_sq_s2": "poolbench_pool_hold_seconds_squared_total",
    "connections_opened": "poolbench_pool_connections_opened_total",
    "connections_closed": "poolbench_pool_connections_closed_total",
}
WAIT_BUCKETS = "poolbench_pool_acquire_wait_seconds_bucket"


def parse_metrics(text: str) -> tuple[Reading, list[str]]:
    """Read poolbench's series from Prometheus text; return the Reading and the missing series.

    A pool is instrumented when any series carries its `pool` label. ValueError when the text
    is not Prometheus exposition format.
    """
    plain: dict[str, float] = {}
    per_pool: dict[str, dict[str, float]] = defaultdict(dict)
    buckets: dict[str, list[tuple[float, float]]] = defaultdict(list)
    try:
        families = list(text_string_to_metric_families(text))
    except Exception as exc:  # the parser raises bare ValueErrors and others on bad input
        raise ValueError(f"not Prometheus text ({exc})") from None
    for family in families:
        for sample in family.samples:
            pool = sample.labels.get(POOL_LABEL)
            if sample.name == WAIT_BUCKETS and pool is not None:
                bound = float(sample.labels["le"])
                if math.isfinite(bound):
                    buckets[pool].append((bound, sample.value))
            elif pool is not None:
                per_pool[pool][sample.name] = sample.value
            elif not sample.labels:
                plain[sample.name] = sample.value
    missing = [series for series in REQUEST_SERIES.values() if series not in plain]
    pools: dict[str, PoolReading] = {}
    for name, series in per_pool.items():
        missing += [f"{s}{{pool={name!r}}}" for s in POOL_SERIES.values() if s not in series]
        if not buckets.get(name):
            missing.append(f"{WAIT_BUCKETS}{{pool={name!r}}}")
        pools[name] = PoolReading(
            acquire_wait_buckets=tuple(sorted(buckets.get(name, []))),
            **{field: series.get(sample) for field, sample in POOL_SERIES.items()},
        )
    figures = {field: plain.get(sample) for field, sample in REQUEST_SERIES.items()}
    reading = Reading(
        source=SOURCE,
        uptime_s=figures["uptime_s"],
        in_flight=figures["in_flight"],
        completed=figures["completed"],
        statements=figures["statements"],
        in_flight_s=figures["in_flight_s"],
        pools=pools,
    )
    return reading, missing
