"""The figures of one measured window, and the bottleneck label that says whether to trust it."""

from __future__ import annotations

import contextlib
import csv
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from bench.results import LATENCY_FILE_PREFIX, TIMESERIES_COLUMNS, TIMESERIES_FILE
from bench.spec import Point
from bench.sweep.samplers import ProcessTree, WindowSample

# Bottleneck rules: every threshold in one place.
DEFAULT_LOADGEN_CPU_PCT = 90.0  # per load-generating Locust process (Locust warns at 90 %)
DEFAULT_APP_CPU_PCT = 90.0  # one uvicorn worker is one core at most for the event loop
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


def read_samples(run_dir: Path) -> np.ndarray:
    """Return (completion epoch, response_ms, failed) rows of every request, warm-up included."""
    rows: list[tuple[float, float, float]] = []
    for path in sorted(run_dir.glob(f"{LATENCY_FILE_PREFIX}*.txt")):
        for line in path.read_text().splitlines():
            with contextlib.suppress(ValueError):
                epoch, response_ms, failed = line.split()
                rows.append((float(epoch), float(response_ms), float(failed)))
    return np.asarray(rows, dtype=float).reshape(-1, 3)


def window_requests(samples: np.ndarray, start_epoch: float, end_epoch: float) -> np.ndarray:
    """Return (response_ms, failed) rows of the samples that completed inside the window."""
    inside = (samples[:, 0] >= start_epoch) & (samples[:, 0] < end_epoch)
    return samples[inside, 1:]


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
