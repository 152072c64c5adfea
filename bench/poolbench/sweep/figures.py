"""The figures of one measured window, and the bottleneck label that says whether to trust it."""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from poolbench import hdr
from poolbench.results import TIMESERIES_COLUMNS, TIMESERIES_FILE
from poolbench.spec import Point
from poolbench.sweep.samplers import ProcessTree, WindowSample

# Bottleneck rules: every threshold in one place.
DEFAULT_LOADGEN_CPU_PCT = 90.0  # per load-generating Locust process (Locust warns at 90 %)
DEFAULT_APP_CPU_PCT = 90.0  # per uvicorn worker: one core at most for its event loop
DEFAULT_HOST_CPU_PCT = 90.0  # all processes on the machine, percent of all its cores
DEFAULT_DB_CPU_PCT = 90.0  # Postgres tree, percent of one core
DEFAULT_DB_CONNECTIONS_SHARE = 0.95  # of pg_max_connections minus reserved slots
DEFAULT_PG_RESERVED_CONNECTIONS = 3  # Postgres superuser_reserved_connections default
DEFAULT_POOL_WAIT_SHARE = 0.2  # acquire-wait p95 as a share of client p95 latency
DEFAULT_POOL_WAIT_MIN_MS = 1.0  # ...but waits below this are noise, whatever the share
LOCUST_CPU_WARNINGS = (
    "CPU usage above",
    "CPU usage was too high",
    "CPU usage threshold was exceeded",
)


# --- Locust output ------------------------------------------------------------------------


def write_timeseries(run_dir: Path, seconds: list[list[Any]]) -> None:
    """Write the per-second series (every request, warm-up included) into timeseries.csv.

    `seconds` is `arrivals.RequestLog.seconds`: per completion second, the requests, failures
    and a coarse HDR histogram (2 significant digits, `poolbench.hdr`) of all Locust processes
    together, so the file is bounded by the run's length, not its request count. Locust's history
    holds rolling, bucketed figures that restart at the stats reset; these are per-second counts
    and percentiles to 1 %.
    """
    if not seconds:
        return
    with (run_dir / TIMESERIES_FILE).open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(TIMESERIES_COLUMNS)
        for second, requests, failures, encoded in seconds:
            quantiles = hdr.quantiles_ms(hdr.decode(encoded), (0.50, 0.95, 0.99))
            writer.writerow([int(second), requests, failures] + [round(v, 3) for v in quantiles])


def locust_cpu_warning(log_path: Path) -> bool:
    """True if Locust warned that its own CPU was saturated."""
    if not log_path.exists():
        return False
    text = log_path.read_text(errors="replace")
    return any(marker in text for marker in LOCUST_CPU_WARNINGS)


def client_figures(
    summary: Mapping[str, Any], window: Mapping[str, Any] | None, window_s: float
) -> dict[str, Any]:
    """Return the client columns of a window.

    `window` is `arrivals.figures_in_window(...)`: counts, mean and max exact, quantiles from the
    merged HDR histograms of every Locust process (local and remote), latency from the intended
    start in the open model. None when no Locust process left its figures (a worker that never
    answered): then Locust's bucketed summary is all there is. A window in which no request
    completed has no percentiles and no error rate (NaN, not 0): nothing measured must not pass
    an SLO.
    """
    lateness = {
        "schedule_lag_p95_ms": None,
        "dropped_arrivals": None,
        "inflight_at_end": None,
    }
    if window is not None:
        lateness = {key: window[key] for key in lateness}
        figures: dict[str, Any] = dict(window["latency"])
        figures["latency_source"] = "hdr" if window.get("window_exact", True) else "hdr_inexact"
    else:
        count, failures = int(summary.get("requests") or 0), int(summary.get("failures") or 0)
        figures = {k: summary.get(k) for k in ("p50_ms", "p95_ms", "p99_ms", "mean_ms", "max_ms")}
        figures |= {
            "requests": count,
            "failures": failures,
            "error_rate": failures / count if count else math.nan,
            "latency_source": "locust_buckets",
        }
    count = figures["requests"]
    return {"rps": count / window_s if window_s > 0 else 0.0, **figures, **lateness}


def endpoint_figures(
    summary: Mapping[str, Any], window: Mapping[str, Any] | None
) -> dict[str, dict[str, Any]]:
    """Return {endpoint: figures} of a window (run.json `endpoints`, endpoints.csv rows).

    From the merged per-endpoint histograms (`window["endpoints"]`); with no figures from the
    Locust processes, Locust's bucketed figures per name, as `client_figures` falls back to its
    totals. Only endpoints with a completed request appear; their `requests` add up to the run's.
    """
    if window is not None:
        return dict(window["endpoints"])
    out: dict[str, dict[str, Any]] = {}
    for name, entry in sorted((summary.get("by_name") or {}).items()):
        count = int(entry.get("requests") or 0)
        if count:
            failures = int(entry.get("failures") or 0)
            out[name] = {"requests": count, "failures": failures, "error_rate": failures / count}
            out[name] |= {k: entry.get(k) for k in ("p50_ms", "p95_ms", "p99_ms", "mean_ms")}
    return out


def telemetry_figures(telemetry: Mapping[str, Any] | None) -> dict[str, Any]:
    """Return the app's columns from a /telemetry snapshot (blank where it says nothing)."""
    snapshot = telemetry or {}
    pool = snapshot.get("sqlalchemy") or {}
    wait = pool.get("acquire_wait_ms") or {}
    hold = pool.get("hold_time_ms") or {}
    direct = snapshot.get("asyncpg") or {}
    requests = snapshot.get("requests") or {}
    http = snapshot.get("http") or {}
    return {
        "acquire_wait_mean_ms": wait.get("mean"),
        "acquire_wait_p95_ms": wait.get("p95"),
        "acquire_wait_p99_ms": wait.get("p99"),
        "hold_time_mean_ms": hold.get("mean"),
        "hold_time_p95_ms": hold.get("p95"),
        # Coefficient of variation of the hold time (Cs), for Allen-Cunneen.
        "hold_time_cv": hold["std"] / hold["mean"] if hold.get("mean") and "std" in hold else None,
        "peak_checked_out": pool.get("peak_checked_out"),
        "pool_timeouts": pool.get("timeouts"),
        "connections_opened": pool.get("connections_opened"),
        "app_inflight_mean": requests.get("inflight_mean"),
        "app_inflight_peak": requests.get("inflight_peak"),
        "statements_per_request": requests.get("statements_per_request"),
        "pg_pool_acquire_wait_p95_ms": (direct.get("acquire_wait_ms") or {}).get("p95"),
        "pg_pool_hold_time_mean_ms": (direct.get("hold_time_ms") or {}).get("mean"),
        "pg_pool_peak_checked_out": direct.get("peak_checked_out"),
        "pg_pool_timeouts": direct.get("timeouts"),
        "http_peak_in_flight": http.get("peak_in_flight"),
        "http_semaphore_wait_p95_ms": (http.get("semaphore_wait_ms") or {}).get("p95"),
        "http_waits_holding_connection": http.get("waiting_holding_connection"),
        **efficiency_figures(snapshot),
    }


def efficiency_figures(snapshot: Mapping[str, Any]) -> dict[str, Any]:
    """Return Little's-law efficiency of the SQLAlchemy pool and where the rest of it went.

    `littles_efficiency` = served rps x mean hold / connections: the share of the pool's
    connection-seconds that served requests (1.0 = every connection always leased). Rate and
    hold both come from the app's own window (one clock). Connections = pool_size plus the
    overflow actually used (all workers summed). The rest splits into `handoff_share` (idle in
    the pool while a checkout waited: the hand-off), `idle_share` (idle, nobody waiting) and
    whatever neither covers (work outside the lease; requests that lease more or less than
    once). `ping_mean_ms` and `pings`: pool_pre_ping's cost per checkout, inside the hold.
    """
    pool = snapshot.get("sqlalchemy") or {}
    hold = pool.get("hold_time_ms") or {}
    ping = pool.get("ping_ms") or {}
    window_s = snapshot.get("window_s") or 0.0
    completed = (snapshot.get("requests") or {}).get("completed")
    connections = max(pool.get("pool_size") or 0, pool.get("peak_checked_out") or 0)
    out: dict[str, Any] = {
        "littles_efficiency": None,
        "handoff_share": None,
        "idle_share": None,
        "ping_mean_ms": ping.get("mean") if ping.get("count") else None,
        "pings": ping.get("count"),
    }
    capacity_s = connections * window_s
    if capacity_s <= 0:
        return out
    if completed is not None and hold.get("count"):
        out["littles_efficiency"] = completed / window_s * hold["mean"] / 1000 / connections
    handoff_s, idle_s = pool.get("handoff_s"), pool.get("idle_s")
    if handoff_s is not None and idle_s is not None:
        out["handoff_share"] = handoff_s / capacity_s
        out["idle_share"] = max(0.0, idle_s - handoff_s) / capacity_s
    return out


def worker_requests(telemetry: Mapping[str, Any] | None) -> list[int | None] | None:
    """Requests each app worker completed in the window (how evenly they shared the load)."""
    if not telemetry:
        return None
    snapshots = telemetry.get("per_worker") or [telemetry]
    return [(s.get("requests") or {}).get("completed") for s in snapshots]


def resource_figures(sample: WindowSample, window_s: float) -> dict[str, Any]:
    """Return the CPU, memory and Postgres columns of a window."""

    def pct(tree: ProcessTree) -> float | None:
        if not tree.measured or window_s <= 0:
            return None
        return tree.cpu_seconds() / window_s * 100

    def mb(tree: ProcessTree) -> float | None:
        return tree.peak_rss_bytes / 2**20 if tree.measured else None

    def busiest(tree: ProcessTree) -> float | None:
        if not tree.measured or window_s <= 0:
            return None
        return tree.busiest_process_cpu_seconds() / window_s * 100

    busy = sample.host.busy_fraction()
    return {
        "host_cpu_pct": None if busy is None else busy * 100,
        "downstream_cpu_pct": pct(sample.downstream),
        "locust_busiest_cpu_pct": busiest(sample.locust),
        "app_busiest_cpu_pct": busiest(sample.app),
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


def label_bottleneck(point: Point, figures: Mapping[str, Any]) -> str:
    """Name what limited this run, most disqualifying first.

    - load_generator: a Locust process near a full core (each process is judged alone: with
      `--processes N` the busiest one, never the sum), or Locust's own CPU warning; the run
      measured the load generator, so nothing else about it can be trusted;
    - host_cpu: the whole machine near all its cores busy (app, Postgres, Locust, the stub and
      anything else together), though no single process was;
    - app_cpu: a uvicorn worker near a full core (the busiest worker, never the sum);
    - database: Postgres near a full core, or its connection slots (nearly) used up;
    - pool: requests waited for a connection: pool timeouts, or the acquire-wait p95 is a
      significant share of the client p95, or every connection was checked out while some waited,
      or clients queued in PgBouncer for a significant share of the client p95;
    - none: the load did not push any of those limits.
    """
    busiest_locust = figures.get("locust_busiest_cpu_pct", figures.get("locust_cpu_pct"))
    if figures.get("locust_cpu_warning") or _num(busiest_locust) >= DEFAULT_LOADGEN_CPU_PCT:
        return "load_generator"
    if _num(figures.get("host_cpu_pct")) >= DEFAULT_HOST_CPU_PCT:
        return "host_cpu"
    busiest_app = figures.get("app_busiest_cpu_pct", figures.get("app_cpu_pct"))
    if _num(busiest_app) >= DEFAULT_APP_CPU_PCT:
        return "app_cpu"
    usable = max(1, point.pg_max_connections - DEFAULT_PG_RESERVED_CONNECTIONS)
    pg_full = _num(figures.get("pg_peak_connections")) >= DEFAULT_DB_CONNECTIONS_SHARE * usable
    if _num(figures.get("pg_cpu_pct")) >= DEFAULT_DB_CPU_PCT or pg_full:
        return "database"
    wait_p95 = _num(figures.get("acquire_wait_p95_ms"))
    waited = wait_p95 >= DEFAULT_POOL_WAIT_MIN_MS
    # The workers' peaks summed (poolbench.sweep.appworkers): every worker's pool was full once.
    pools = point.app_workers * point.sqlalchemy_connections
    all_checked_out = _num(figures.get("peak_checked_out")) >= pools
    # Behind PgBouncer a request also queues for a server connection there (SHOW POOLS maxwait:
    # how long the oldest waiting client had waited, a worst case like a high quantile).
    pgb_wait = _num(figures.get("pgb_maxwait_ms"))
    pgb_queued = (
        _num(figures.get("pgb_cl_waiting_peak")) > 0 and pgb_wait >= DEFAULT_POOL_WAIT_MIN_MS
    )
    p95 = _num(figures.get("p95_ms"))
    if (
        _num(figures.get("pool_timeouts")) > 0
        or (waited and wait_p95 >= DEFAULT_POOL_WAIT_SHARE * p95)
        or (waited and all_checked_out)
        or (pgb_queued and pgb_wait >= DEFAULT_POOL_WAIT_SHARE * p95)
    ):
        return "pool"
    return "none"
