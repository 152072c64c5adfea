"""The results contract: file names, runs.csv columns, bottleneck names, manifest and run.json.

The sweep writes these files and the analysis reads them; both import the names from here.
Standard library only, so a Locust process can import it cheaply.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import socket
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from poolbench.errors import UsageError

# Bumped when a file below changes incompatibly; written to manifest.json and every run.json.
# 2: app_workers, pooler and pgbouncer_pool_size are config columns (a reader grouping by the
# version-1 columns would take a 1-worker and a 2-worker run for repetitions of one config).
FORMAT_VERSION = 2

# --- file names -------------------------------------------------------------------------------
MANIFEST_FILE = "manifest.json"
RUNS_CSV_FILE = "runs.csv"
RUNS_DIR = "runs"
LOGS_DIR = "logs"
FAILED_DIR = "failed"  # under logs/: the files of runs that failed, kept for a post-mortem
RUN_FILE = "run.json"
TELEMETRY_FILE = "telemetry.json"
TIMESERIES_FILE = "timeseries.csv"
# Exact per-second figures of every request, warm-up included.
TIMESERIES_COLUMNS = ("epoch_s", "requests", "failures", "p50_ms", "p95_ms", "p99_ms")
APP_LOG = "app.log"
LOCUST_LOG = "locust.log"
SEED_LOG = "seed.log"
DOWNSTREAM_LOG = "downstream.log"
WORKER_SCRIPT = "worker_command.sh"
LOCUST_CSV_PREFIX = "locust"  # -> locust_stats.csv, locust_stats_history.csv, ...
LOCUST_STATS_SUFFIX = "_stats.csv"
LOCUST_HISTORY_SUFFIX = "_stats_history.csv"
LOCUST_HISTORY_FILE = f"{LOCUST_CSV_PREFIX}{LOCUST_HISTORY_SUFFIX}"
# Written by every Locust process (`poolbench.load.window`): the window markers and the
# master's totals. Each process's figures of the window, `latency-*.json`, and the run's merge,
# `latency.json`, are a record of their own: `poolbench.load.latency_file` (names, format
# version, JSON both ways), imported by the Locust processes and `poolbench.sweep.arrivals`.
WINDOW_FILE = "window.jsonl"
SUMMARY_FILE = "summary.json"

# --- runs.csv ---------------------------------------------------------------------------------
POINT_COLUMNS = (
    "run_id", "scenario", "repetition", "pool_size", "max_overflow", "http_concurrency_limit",
    "users", "pg_max_size", "pg_max_connections", "queries_per_request", "sim_latency_ms",
    "think_time_s", "spawn_rate", "duration_s", "experiment", "offered_rps", "app_workers",
    "pooler", "pgbouncer_pool_size", "app_max_connections",
)  # fmt: skip
# Client (Locust), measured window only; in open-model runs latency counts from the intended
# start, and the load generator's lateness and dropped arrivals are reported.
CLIENT_COLUMNS = (
    "requests", "failures", "error_rate", "rps", "p50_ms", "p95_ms", "p99_ms", "mean_ms", "max_ms",
    "schedule_lag_p95_ms", "dropped_arrivals", "inflight_at_end",
)  # fmt: skip
# App telemetry: the SQLAlchemy pool, requests in flight and statements, the asyncpg pool,
# downstream calls and their semaphore.
TELEMETRY_COLUMNS = (
    "acquire_wait_mean_ms", "acquire_wait_p95_ms", "acquire_wait_p99_ms", "hold_time_mean_ms",
    "hold_time_p95_ms", "hold_time_cv", "peak_checked_out", "pool_timeouts", "connections_opened",
    "app_inflight_mean", "app_inflight_peak", "statements_per_request",
    "pg_pool_acquire_wait_p95_ms", "pg_pool_hold_time_mean_ms", "pg_pool_peak_checked_out",
    "pg_pool_timeouts", "http_peak_in_flight", "http_semaphore_wait_p95_ms",
    "http_waits_holding_connection",
    "littles_efficiency", "handoff_share", "idle_share", "ping_mean_ms", "pings",
)  # fmt: skip
DB_COLUMNS = ("pg_peak_connections", "pg_xact_commit")
# PgBouncer (pooler = pgbouncer; blank when direct): SHOW POOLS peaks over the window for the
# benchmark database, and the mean wait per transaction from SHOW STATS.
PGBOUNCER_COLUMNS = (
    "pgb_cl_waiting_peak", "pgb_maxwait_ms", "pgb_sv_active_peak", "pgb_clients_peak",
    "pgb_wait_mean_ms",
)  # fmt: skip
# CPU in percent of one core, except host_cpu_pct: percent of the whole host (all cores).
CPU_COLUMNS = (
    "app_cpu_pct", "locust_cpu_pct", "pg_cpu_pct", "app_peak_rss_mb", "locust_peak_rss_mb",
    "pg_peak_rss_mb", "locust_cpu_warning", "host_cores", "host_cpu_pct", "downstream_cpu_pct",
)  # fmt: skip
VERDICT_COLUMNS = ("bottleneck",)
RUNS_CSV_COLUMNS = (
    POINT_COLUMNS
    + CLIENT_COLUMNS
    + TELEMETRY_COLUMNS
    + DB_COLUMNS
    + PGBOUNCER_COLUMNS
    + CPU_COLUMNS
    + VERDICT_COLUMNS
)
STRING_COLUMNS = ("run_id", "scenario", "experiment", "pooler", "bottleneck")
BOOL_COLUMNS = ("locust_cpu_warning",)

# --- endpoints.csv: one row per run and endpoint, the measured window's figures ------------
ENDPOINTS_CSV_FILE = "endpoints.csv"
# Per endpoint, as the client columns: completed in the window, latency from the intended start.
ENDPOINT_FIGURES = ("requests", "failures", "error_rate", "p50_ms", "p95_ms", "p99_ms", "mean_ms")
ENDPOINTS_CSV_COLUMNS = ("run_id", "endpoint", *ENDPOINT_FIGURES)
ENDPOINTS_STRING_COLUMNS = ("run_id", "endpoint")

# --- bottleneck labels ------------------------------------------------------------------------
BOTTLENECKS = ("pool", "app_cpu", "host_cpu", "database", "load_generator", "none")
# Runs limited by something other than the pool say nothing about pool sizing.
UNTRUSTED_BOTTLENECKS = ("app_cpu", "host_cpu", "load_generator")


def csv_row(point: Mapping[str, Any], figures: Mapping[str, Any]) -> dict[str, Any]:
    """Return one runs.csv row: the point's columns and the figures, in column order."""
    merged = {**point, **figures}
    return {column: _csv_value(merged.get(column)) for column in RUNS_CSV_COLUMNS}


def _csv_value(value: Any) -> Any:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return round(value, 4)
    return value


def endpoint_rows(run_id: str, endpoints: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Return one run's endpoints.csv rows from run.json's `endpoints` ({name: figures})."""
    return [
        {
            "run_id": run_id,
            "endpoint": name,
            **{column: _csv_value(figures.get(column)) for column in ENDPOINT_FIGURES},
        }
        for name, figures in endpoints.items()
    ]


def write_runs_csv(path: Path, rows: Iterable[Mapping[str, Any]]) -> None:
    """Rewrite runs.csv atomically (a reader never sees half a table)."""
    _write_csv(path, RUNS_CSV_COLUMNS, rows)


def write_endpoints_csv(path: Path, rows: Iterable[Mapping[str, Any]]) -> None:
    """Rewrite endpoints.csv atomically."""
    _write_csv(path, ENDPOINTS_CSV_COLUMNS, rows)


def _write_csv(path: Path, columns: Iterable[str], rows: Iterable[Mapping[str, Any]]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(columns))
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)


# --- JSON files -------------------------------------------------------------------------------


def write_json(path: Path, data: Mapping[str, Any]) -> None:
    """Write a JSON file atomically."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    os.replace(tmp, path)


def read_manifest(sweep_dir: Path) -> dict[str, Any] | None:
    """Return a sweep's manifest.json (None when there is none); a bad one is a UsageError."""
    path = Path(sweep_dir) / MANIFEST_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise UsageError(f"{path}: expected a JSON object")
    return data


def sweep_ending(manifest: Mapping[str, Any]) -> str | None:
    """How a sweep that did not finish ended, in words, from its manifest; None if it finished.

    A manifest still saying `running` whose process is gone (SIGKILL, a crash, a reboot) was
    cut off; one whose process is alive is still running.
    """
    status = manifest.get("status")
    failed = manifest.get("failed_runs") or [{}]
    if status in (None, "finished"):
        return None
    if status == "failed":
        last = failed[-1]
        return f"stopped when run {last.get('run_id', '?')} failed: {last.get('error', '?')}"
    if status == "interrupted":
        return "was interrupted (Ctrl-C or SIGTERM)"
    if status == "running":
        if still_running(manifest):
            return f"is still running (pid {manifest['runner']['pid']})"
        return "was cut off: its manifest still says running but the process that ran it is gone"
    return f"ended with status {status!r}"


def still_running(manifest: Mapping[str, Any]) -> bool:
    """Whether the process that wrote a `running` manifest is alive on this host."""
    runner = manifest.get("runner")
    if manifest.get("status") != "running" or not isinstance(runner, dict):
        return False
    if runner.get("host") != socket.gethostname():
        return False
    import psutil  # here, not at the top: Locust processes import this module

    try:
        process = psutil.Process(int(runner["pid"]))
        return abs(process.create_time() - float(runner["process_started"])) < 1.0
    except (psutil.Error, KeyError, TypeError, ValueError):
        return False


def finished_runs(sweep_dir: Path) -> dict[str, dict[str, Any]]:
    """Return run.json of every complete run in a sweep directory, by run_id."""
    runs: dict[str, dict[str, Any]] = {}
    for path in sorted((Path(sweep_dir) / RUNS_DIR).glob(f"*/{RUN_FILE}")):
        with contextlib.suppress(ValueError, OSError):
            data = json.loads(path.read_text())
            if data.get("run_id") == path.parent.name and "figures" in data:
                runs[path.parent.name] = data
    return runs


def read_markers(path: Path) -> dict[str, float]:
    """Return {"start": epoch, "end": epoch, ...} from a window.jsonl (torn lines skipped)."""
    markers: dict[str, float] = {}
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return markers
    for line in text.splitlines():
        with contextlib.suppress(ValueError, KeyError, TypeError):
            entry = json.loads(line)
            markers[str(entry["event"])] = float(entry["epoch"])
    return markers
