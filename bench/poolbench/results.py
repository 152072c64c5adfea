"""The results contract: file names, runs.csv columns, bottleneck names, manifest and run.json.

The sweep writes these files and the analysis reads them; both import the names from here.
Standard library only, so a Locust process can import it cheaply.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import json
import math
import os
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
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


# --- manifest.json and run.json: records that write and read themselves ----------------------
# A sweep's status in its manifest: `running` until it ends one of the other three ways.
RUNNING, FINISHED, FAILED, INTERRUPTED = "running", "finished", "failed", "interrupted"


def _format_version(data: Mapping[str, Any]) -> int:
    """The record's format version; a record without one is taken as the current format.

    A newer version is read as far as its keys are known (as every version so far has been).
    """
    version = data.get("format_version", FORMAT_VERSION)
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ValueError(f"format_version {version!r} is not a format version")
    return version


def _known(cls: type, data: Mapping[str, Any]) -> dict[str, Any]:
    """The keys of data that are fields of cls (unknown keys are a newer writer's: skipped)."""
    return {f.name: data[f.name] for f in dataclasses.fields(cls) if f.name in data}


def _json_object(data: object, what: str) -> Mapping[str, Any]:
    if not isinstance(data, Mapping):
        raise ValueError(f"{what}: expected a JSON object, not {type(data).__name__}")
    return data


@dataclass(frozen=True, kw_only=True)
class Manifest:
    """A sweep's manifest.json: the spec it ran, where and with what, and how it ended.

    Every field but `spec` has a default, so a hand-made or older manifest still reads.
    """

    format_version: int = FORMAT_VERSION
    spec: dict[str, Any] = field(default_factory=dict)  # SweepSpec.to_dict()
    spec_path: str | None = None
    # poolbench's own environment (the runner and Locust) and checkout, not the service's.
    versions: dict[str, str | None] = field(default_factory=dict)
    git_sha: str | None = None
    # The service's: what its telemetry reports it runs on (Python, FastAPI, SQLAlchemy, the
    # driver, each pool's limits), from its latest run; None until a run reported one.
    target_stack: dict[str, Any] | None = None
    host: dict[str, Any] = field(default_factory=dict)
    dsn: str | None = None  # redacted, or how the database was chosen
    # "auto" (no --workers): chosen per run, see RunRecord.locust_processes, locust_workers.
    locust_processes: int | str | None = None
    remote_workers: dict[str, Any] | None = None
    started_at: str | None = None
    finished_at: str | None = None
    status: str | None = None  # None: a manifest from before statuses, taken as finished
    # Who writes this sweep ({pid, host, process_started}): a `running` manifest whose process
    # is gone was cut off.
    runner: dict[str, Any] | None = None
    points: int | None = None
    # Only in the file once they happen: resumes, failed runs ({run_id, error, at}), the end.
    resumed_at: tuple[str, ...] = ()
    failed_runs: tuple[dict[str, Any], ...] | None = None
    finished_runs: int | None = None

    def as_json(self) -> dict[str, Any]:
        """The manifest as manifest.json's object (keys only once they happen left out)."""
        data = dataclasses.asdict(self)
        if not self.resumed_at:
            del data["resumed_at"]
        for key in ("failed_runs", "finished_runs"):
            if data[key] is None:
                del data[key]
        return data

    @classmethod
    def from_json(cls, data: object) -> Manifest:
        """Read manifest.json's object; ValueError when it is not one."""
        data = _json_object(data, MANIFEST_FILE)
        known = _known(cls, data) | {"format_version": _format_version(data)}
        known["resumed_at"] = tuple(known.get("resumed_at") or ())
        if known.get("failed_runs") is not None:
            known["failed_runs"] = tuple(known["failed_runs"])
        return cls(**known)

    @classmethod
    def read(cls, sweep_dir: Path) -> Manifest | None:
        """A sweep's manifest (None when there is none); a bad one is a UsageError."""
        data = read_manifest(sweep_dir)
        try:
            return None if data is None else cls.from_json(data)
        except (ValueError, TypeError) as exc:
            raise UsageError(f"{Path(sweep_dir) / MANIFEST_FILE}: {exc}") from None

    def ending(self) -> str | None:
        """How a sweep that did not finish ended, in words; None if it finished.

        A manifest still saying `running` whose process is gone (SIGKILL, a crash, a reboot) was
        cut off; one whose process is alive is still running.
        """
        status = self.status
        if status in (None, FINISHED):
            return None
        if status == FAILED:
            last = (self.failed_runs or ({},))[-1]
            return f"stopped when run {last.get('run_id', '?')} failed: {last.get('error', '?')}"
        if status == INTERRUPTED:
            return "was interrupted (Ctrl-C or SIGTERM)"
        if status == RUNNING:
            if self.still_running():
                assert self.runner is not None
                return f"is still running (pid {self.runner['pid']})"
            return (
                "was cut off: its manifest still says running but the process that ran it is gone"
            )
        return f"ended with status {status!r}"

    def still_running(self) -> bool:
        """Whether the process that wrote a `running` manifest is alive on this host."""
        runner = self.runner
        if self.status != RUNNING or not isinstance(runner, dict):
            return False
        if runner.get("host") != socket.gethostname():
            return False
        import psutil  # here, not at the top: Locust processes import this module

        try:
            process = psutil.Process(int(runner["pid"]))
            return abs(process.create_time() - float(runner["process_started"])) < 1.0
        except (psutil.Error, KeyError, TypeError, ValueError):
            return False


@dataclass(frozen=True, kw_only=True)
class RunRecord:
    """One finished run's run.json: its point, its runs.csv figures, what else the run measured.

    `runs.csv` is an index of these: a row is `csv_row(record.point, record.figures)`.
    """

    format_version: int = FORMAT_VERSION
    run_id: str
    point: dict[str, Any] = field(default_factory=dict)  # Point.as_dict()
    figures: dict[str, Any]  # the runs.csv figures
    # The measured window: start_epoch, end_epoch, window_s, and whether every Locust process
    # counted its requests against this very window (`exact`).
    window: dict[str, Any] | None = None
    locust_processes: int | None = None  # on this host (see locust_workers.reason)
    locust_workers: dict[str, Any] | None = None  # poolbench.sweep.loadgen.WorkersChoice
    remote_workers: int = 0
    locust_requests: int | None = None  # the master's total, warm-up included
    # The open model's pacing (rps_per_user, max_inflight_per_process, cap_reached, sent).
    open_model: dict[str, Any] | None = None
    requests_by_name: dict[str, Any] = field(default_factory=dict)
    endpoints: dict[str, dict[str, Any]] = field(default_factory=dict)  # -> endpoints.csv
    sampler_errors: tuple[str, ...] = ()
    app_worker_requests: list[int | None] | None = None  # completed per app worker
    max_processes: dict[str, Any] | None = None  # app, locust, pg
    # Set only when the target served no /telemetry: its Prometheus path, what it lacked.
    telemetry_source: str | None = None
    telemetry_missing: tuple[str, ...] | None = None
    finished_at: str | None = None

    def as_json(self) -> dict[str, Any]:
        """The record as run.json's object."""
        data = dataclasses.asdict(self)
        if self.telemetry_source is None:
            del data["telemetry_source"], data["telemetry_missing"]
        return data

    @classmethod
    def from_json(cls, data: object) -> RunRecord:
        """Read run.json's object; ValueError when it is not a finished run's."""
        data = _json_object(data, RUN_FILE)
        if not isinstance(data.get("run_id"), str):
            raise ValueError(f"{RUN_FILE}: no run_id")
        for key in ("figures", "point", "endpoints"):
            if key in data and not isinstance(data[key], Mapping):
                raise ValueError(f"{RUN_FILE}: {key} is not a JSON object")
        if "figures" not in data:
            raise ValueError(f"{RUN_FILE}: no figures")
        known = _known(cls, data) | {"format_version": _format_version(data)}
        known["sampler_errors"] = tuple(known.get("sampler_errors") or ())
        if known.get("telemetry_missing") is not None:
            known["telemetry_missing"] = tuple(known["telemetry_missing"])
        return cls(**known)


def finished_runs(sweep_dir: Path) -> dict[str, RunRecord]:
    """Return the record of every complete run in a sweep directory, by run_id."""
    runs: dict[str, RunRecord] = {}
    for path in sorted((Path(sweep_dir) / RUNS_DIR).glob(f"*/{RUN_FILE}")):
        with contextlib.suppress(ValueError, TypeError, OSError):
            record = RunRecord.from_json(json.loads(path.read_text()))
            if record.run_id == path.parent.name:
                runs[record.run_id] = record
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
