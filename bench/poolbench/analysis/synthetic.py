"""Write realistic synthetic sweep directories (DESIGN.md layout) for tests and benchmarks."""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from poolbench.analysis.models import usl_throughput
from poolbench.results import RUNS_CSV_COLUMNS

SECRET = "s3cretpw"
HISTORY_HEADER = [
    "Timestamp",
    "User Count",
    "Type",
    "Name",
    "Requests/s",
    "Failures/s",
    "50%",
    "66%",
    "75%",
    "80%",
    "90%",
    "95%",
    "98%",
    "99%",
    "99.9%",
    "99.99%",
    "100%",
    "Total Request Count",
    "Total Failure Count",
    "Total Median Response Time",
    "Total Average Response Time",
    "Total Min Response Time",
    "Total Max Response Time",
    "Total Average Content Size",
]
STATS_HEADER = [
    "Type",
    "Name",
    "Request Count",
    "Failure Count",
    "Median Response Time",
    "Average Response Time",
    "Min Response Time",
    "Max Response Time",
    "Average Content Size",
    "Requests/s",
    "Failures/s",
    "50%",
    "66%",
    "75%",
    "80%",
    "90%",
    "95%",
    "98%",
    "99%",
    "99.9%",
    "99.99%",
    "100%",
]
# The measured window of every synthetic run, in seconds after its first history row: Locust's
# stats are reset at WINDOW_START_S (the history row of that second is the reset's zeros).
WINDOW_START_S = 3.4
WINDOW_END_S = 11.6
APP_OVERHEAD_MS = 2.0
HOLD_OVERHEAD_MS = 1.5
SIGMA = 0.002
KAPPA = 0.0001


def expected_rps(connections: float, users: float, queries: float, sim_latency_ms: float) -> float:
    """The noiseless throughput curve: pool-bound USL growth, capped by the closed-loop users."""
    hold_ms = queries * sim_latency_ms + HOLD_OVERHEAD_MS
    pool_bound = float(usl_throughput(connections, SIGMA, KAPPA, 1000.0 / hold_ms))
    demand = users * 1000.0 / (hold_ms + APP_OVERHEAD_MS)
    return min(pool_bound, demand)


def make_sweep(
    root: Path,
    *,
    name: str = "quick-20250101-120000",
    scenario: str = "single_query",
    pool_sizes: Sequence[int] = (1, 2, 4, 8, 12, 16, 20, 24, 32, 48),
    max_overflows: Sequence[int] = (0, 4),
    http_limits: Sequence[int] = (20,),
    users: Sequence[int] = (24,),
    queries: Sequence[int] = (1,),
    repetitions: int = 3,
    sim_latency_ms: float = 20.0,
    slo: dict[str, float] | None = None,
    fleet: dict[str, int] | None = None,
    history: bool = True,
    seed: int = 7,
) -> Path:
    """Create `root/name` with manifest.json, runs.csv and runs/<run_id>/ files; return it."""
    rng = np.random.default_rng(seed)
    sweep = root / name
    (sweep / "runs").mkdir(parents=True)
    spec = {
        "name": name.rsplit("-", 2)[0],
        "scenario": scenario,
        "shape": "constant",
        "open_model_rps": 0,
        "grid": {
            "pool_size": list(pool_sizes),
            "max_overflow": list(max_overflows),
            "http_concurrency_limit": list(http_limits),
            "users": list(users),
            "pg_max_size": [10],
            "pg_max_connections": [200],
            "queries_per_request": list(queries),
        },
        "workload": {"sim_latency_ms": sim_latency_ms, "think_time_s": 0},
        "timing": {"repetitions": repetitions, "warmup_s": 3, "duration_s": 10, "spawn_rate": 100},
        "slo": slo if slo is not None else {"p95_ms": 250, "max_error_rate": 0.01},
        "fleet": fleet
        if fleet is not None
        else {
            "instances": 1,
            "workers_per_instance": 2,
            "max_connections": 100,
            "reserved_connections": 3,
        },
    }
    manifest = {
        "spec": spec,
        "versions": {"python": "3.11.9", "sqlalchemy": "2.0.36", "locust": "2.32.0"},
        "git_sha": "c407c7b",
        "host_cores": 2,
        "started_at": "2025-01-01T12:00:00Z",
        "ended_at": "2025-01-01T12:30:00Z",
        # A runner bug that forgot to redact must still never leak into a report.
        "dsn": f"postgresql://bench:{SECRET}@127.0.0.1:5432/poolbench",
        "app_env": {
            "DATABASE_URL": f"postgresql+asyncpg://app:{SECRET}@127.0.0.1:5432/poolbench",
            "note": f"connect with postgres://admin:{SECRET}@db.internal/poolbench if needed",
        },
    }
    (sweep / "manifest.json").write_text(json.dumps(manifest, indent=2))
    rows: list[dict[str, Any]] = []
    largest = (max(pool_sizes), max(max_overflows))
    for pool in pool_sizes:
        for overflow in max_overflows:
            for limit in http_limits:
                for u in users:
                    for q in queries:
                        for rep in range(1, repetitions + 1):
                            row = _run_row(
                                rng, scenario, pool, overflow, limit, u, q, rep, sim_latency_ms
                            )
                            if (pool, overflow) == largest and rep == repetitions:
                                row["bottleneck"] = "load_generator"
                                row["locust_cpu_warning"] = True
                                row["locust_cpu_pct"] = 97.0
                            rows.append(row)
                            if history:
                                _write_run_dir(sweep / "runs" / row["run_id"], row)
    with (sweep / "runs.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(RUNS_CSV_COLUMNS))
        writer.writeheader()
        writer.writerows(rows)
    return sweep


def _run_row(
    rng: np.random.Generator,
    scenario: str,
    pool: int,
    overflow: int,
    limit: int,
    users: int,
    queries: int,
    rep: int,
    sim_latency_ms: float,
) -> dict[str, Any]:
    connections = pool + overflow
    hold_ms = queries * sim_latency_ms + HOLD_OVERHEAD_MS
    rps = expected_rps(connections, users, queries, sim_latency_ms) * (1 + rng.normal(0, 0.02))
    mean_ms = users * 1000.0 / rps
    wait_ms = max(0.0, mean_ms - hold_ms - APP_OVERHEAD_MS)
    duration_s = 10
    requests = int(rps * duration_s)
    starved = connections == 1
    failures = int(requests * 0.02) if starved else 0
    busy = min(connections, rps * hold_ms / 1000.0)
    pool_bound = busy >= connections * 0.9
    return {
        "run_id": f"p{pool}-o{overflow}-s{limit}-u{users}-q{queries}-r{rep}",
        "scenario": scenario,
        "repetition": rep,
        "pool_size": pool,
        "max_overflow": overflow,
        "http_concurrency_limit": limit,
        "users": users,
        "pg_max_size": 10,
        "pg_max_connections": 200,
        "queries_per_request": queries,
        "sim_latency_ms": sim_latency_ms,
        "think_time_s": 0,
        "spawn_rate": 100,
        "duration_s": duration_s,
        "experiment": "capacity",
        "offered_rps": 0,
        "requests": requests,
        "failures": failures,
        "error_rate": failures / requests if requests else 0.0,
        "rps": round(rps, 2),
        "p50_ms": round(mean_ms * 0.95, 1),
        "p95_ms": round(mean_ms * 1.4, 1),
        "p99_ms": round(mean_ms * 1.8, 1),
        "mean_ms": round(mean_ms, 2),
        "max_ms": round(mean_ms * 3, 1),
        "acquire_wait_mean_ms": round(wait_ms, 2),
        "acquire_wait_p95_ms": round(wait_ms * 1.6, 2),
        "acquire_wait_p99_ms": round(wait_ms * 2.0, 2),
        "hold_time_mean_ms": round(hold_ms * (1 + rng.normal(0, 0.01)), 2),
        "hold_time_p95_ms": round(hold_ms * 1.2, 2),
        "hold_time_cv": 0.1,
        "peak_checked_out": min(connections, users),
        # A closed loop: every user is in the app (Little's law), each request one statement each.
        "app_inflight_mean": round(rps * mean_ms / 1000, 2),
        "app_inflight_peak": users,
        "statements_per_request": queries,
        "pool_timeouts": 5 if starved else 0,
        "connections_opened": min(connections, users),
        "pg_peak_connections": min(connections, users) + 1,
        "pg_xact_commit": requests,
        "app_cpu_pct": round(min(95.0, rps * 0.05), 1),
        "locust_cpu_pct": round(min(85.0, rps * 0.04), 1),
        "pg_cpu_pct": round(min(60.0, rps * 0.02), 1),
        "app_peak_rss_mb": 90.0,
        "locust_peak_rss_mb": 60.0,
        "pg_peak_rss_mb": 40.0,
        "locust_cpu_warning": False,
        "host_cores": 2,
        "bottleneck": "pool" if pool_bound else "none",
    }


def _write_run_dir(run_dir: Path, row: dict[str, Any], *, window: bool = True) -> None:
    run_dir.mkdir(parents=True)
    (run_dir / "run.json").write_text(json.dumps(row))
    start = 1_735_732_800
    if window:
        # As poolbench.load writes it: the master's markers, plus a worker's (ignored).
        markers = (
            ("start", start + WINDOW_START_S, 4242),
            ("worker_start", start + WINDOW_START_S + 0.01, 4243),
            ("end", start + WINDOW_END_S, 4242),
        )
        (run_dir / "window.jsonl").write_text(
            "".join(
                json.dumps({"event": event, "epoch": epoch, "pid": pid}) + "\n"
                for event, epoch, pid in markers
            )
        )
    with (run_dir / "locust_stats_history.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(HISTORY_HEADER)
        total = 0
        for second in range(12):
            ramp = min(1.0, (second + 1) / 3)
            users = math.ceil(row["users"] * ramp)
            rps = row["rps"] * ramp * (1 + 0.03 * math.sin(second))
            total += int(rps)
            # Latency climbs while users ramp up, then wobbles around the run's figures.
            wobble = ramp * (1 + 0.05 * math.cos(1.7 * second))
            p50, p95, p99 = (round(row[k] * wobble, 1) for k in ("p50_ms", "p95_ms", "p99_ms"))
            if window and second == int(WINDOW_START_S):
                # Just after the reset Locust has no requests to rank: it writes zeros.
                total, rps, p50, p95, p99 = 0, 0.0, 0, 0, 0
            for name in ("/users/[id]", "Aggregated"):
                writer.writerow(
                    [
                        start + second,
                        users,
                        "GET" if name != "Aggregated" else "",
                        name,
                        round(rps, 2),
                        0.0,
                        p50,
                        p50,
                        p95,
                        p95,
                        p95,
                        p95,
                        p99,
                        p99,
                        p99,
                        p99,
                        row["max_ms"],
                        total,
                        0,
                        p50,
                        row["mean_ms"],
                        1,
                        row["max_ms"],
                        42,
                    ]
                )


def write_locust_stats(path_prefix: Path, *, rps: float = 120.0, p95_ms: float = 180.0) -> Path:
    """Write plain Locust `<prefix>_stats.csv` (+ history) output for one run; return stats CSV."""
    stats = path_prefix.with_name(path_prefix.name + "_stats.csv")
    with stats.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(STATS_HEADER)
        for name, scale in (("/users/[id]", 1.0), ("Aggregated", 1.0)):
            writer.writerow(
                [
                    "GET" if name != "Aggregated" else "",
                    name,
                    int(rps * 30 * scale),
                    3,
                    60,
                    70.5,
                    2,
                    900,
                    42,
                    rps,
                    0.1,
                    60,
                    70,
                    80,
                    90,
                    120,
                    p95_ms,
                    200,
                    250,
                    400,
                    800,
                    900,
                ]
            )
    row = {
        "users": 16,
        "rps": rps,
        "p50_ms": 60,
        "p95_ms": p95_ms,
        "p99_ms": 250,
        "mean_ms": 70.5,
        "max_ms": 900,
    }
    tmp = path_prefix.parent / ".history"
    _write_run_dir(tmp, row, window=False)  # plain Locust: no window.jsonl
    (tmp / "locust_stats_history.csv").rename(
        path_prefix.with_name(path_prefix.name + "_stats_history.csv")
    )
    (tmp / "run.json").unlink()
    tmp.rmdir()
    return stats


def make_slo_sweep(
    root: Path,
    runs: Sequence[tuple[int, int, float, float]],
    *,
    offered_rps: float = 90.0,
    slo_p95_ms: float = 130.0,
    name: str = "slo-20250101-120000",
    bottleneck: str | None = None,
) -> Path:
    """An SLO sweep (open model at `offered_rps`) from (pool_size, repetition, rps, p95_ms) runs.

    A run is pool-bound when Little's law fills 90% of its pool, unless `bottleneck` says.
    """
    sweep = root / name
    sweep.mkdir(parents=True)
    spec = {
        "name": "slo",
        "scenario": "single_query",
        "kind": "slo",
        "open_model_rps": offered_rps / 30,
        "grid": {"pool_size": sorted({r[0] for r in runs}), "max_overflow": [0], "users": [30]},
        "slo": {"p95_ms": slo_p95_ms, "max_error_rate": 0.01},
    }
    (sweep / "manifest.json").write_text(json.dumps({"spec": spec}))
    rows = []
    for pool, rep, rps, p95 in runs:
        busy = rps * 0.021  # 21 ms holds: Little's law
        rows.append(
            {
                "run_id": f"p{pool}-o0-s20-u30-q1-r{rep}",
                "scenario": "single_query",
                "repetition": rep,
                "pool_size": pool,
                "max_overflow": 0,
                "http_concurrency_limit": 20,
                "users": 30,
                "pg_max_size": 10,
                "pg_max_connections": 100,
                "queries_per_request": 1,
                "sim_latency_ms": 20,
                "think_time_s": 0,
                "spawn_rate": 100,
                "duration_s": 6,
                "experiment": "slo",
                "offered_rps": offered_rps,
                "requests": int(rps * 6),
                "failures": 0,
                "error_rate": 0.0,
                "rps": rps,
                "p50_ms": p95 / 3,
                "p95_ms": p95,
                "p99_ms": p95 * 1.3,
                "mean_ms": p95 / 2.5,
                "max_ms": p95 * 2,
                "dropped_arrivals": 0,
                "inflight_at_end": 2,
                "schedule_lag_p95_ms": 1.0,
                "hold_time_mean_ms": 21.0,
                "hold_time_cv": 0.1,
                "acquire_wait_p95_ms": max(0.0, p95 - 30),
                "peak_checked_out": min(pool, 30),
                "pool_timeouts": 0,
                "app_inflight_mean": busy + 0.5,
                "app_inflight_peak": 12,
                "statements_per_request": 1,
                "pg_pool_peak_checked_out": 1,
                "pg_peak_connections": pool + 2,
                "host_cores": 8,
                "bottleneck": bottleneck or ("pool" if busy >= 0.9 * pool else "none"),
            }
        )
    with (sweep / "runs.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(RUNS_CSV_COLUMNS))
        writer.writeheader()
        writer.writerows(rows)
    return sweep
