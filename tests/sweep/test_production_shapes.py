"""App worker processes: telemetry combined over workers, fleet budget, a real 2-worker sweep."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import psutil
import pytest

from poolbench import hdr
from poolbench.objectives import Demand, Fleet
from poolbench.spec import Point
from poolbench.sweep.appworkers import combine
from poolbench.sweep.figures import label_bottleneck
from tests.sweep.test_sweep import only_dir, read_rows
from tests.sweep.test_sweep import run_sweep as sweep

ROOT = Path(__file__).resolve().parents[2]
SPEC = """
name = "workers"
scenario = "single_query"
[grid]
pool_size = [2]
max_overflow = [0]
users = [16]
pg_max_size = [1]
app_workers = [1, 2]
[workload]
sim_latency_ms = 50
[timing]
repetitions = 1
warmup_s = 2
duration_s = 4
[fleet]
instances = 2
workers_per_instance = 2
"""


def snapshot(
    *, completed: int, statements: int, peak: int, hold: dict[str, float]
) -> dict[str, Any]:
    return {
        "window_s": 4.0 + completed / 1000,
        "sqlalchemy": {
            "pool_size": 2,
            "checked_out": 1,
            "peak_checked_out": peak,
            "timeouts": 1,
            "hold_time_ms": hold,
        },
        "requests": {
            "inflight_mean": 1.5,
            "inflight_peak": 3,
            "completed": completed,
            "statements": statements,
            "statements_per_request": statements / completed,
        },
    }


def hist(count: int, mean: float, std: float, p95: float) -> dict[str, Any]:
    values = hdr.new_histogram()
    for value_ms in [mean] * (count - count // 10) + [p95] * (count // 10):
        hdr.record_ms(values, value_ms)
    return {
        "count": count,
        "sum": count * mean,
        "mean": mean,
        "std": std,
        "p50": mean,
        "p95": p95,
        "p99": p95 + 1,
        "max": p95 + 2,
        "hdr": hdr.encode(values),
    }


def test_one_worker_is_its_own_snapshot() -> None:
    one = snapshot(completed=10, statements=10, peak=2, hold=hist(10, 50, 1, 52))
    assert combine([one]) == one


def test_workers_combine_into_one_app() -> None:
    a = snapshot(completed=100, statements=300, peak=2, hold=hist(100, 50.0, 2.0, 54.0))
    b = snapshot(completed=300, statements=600, peak=1, hold=hist(300, 60.0, 4.0, 66.0))
    out = combine([a, b])
    pool, requests = out["sqlalchemy"], out["requests"]
    # Counts and now-values summed; peaks summed (an upper bound); settings summed.
    assert (pool["timeouts"], pool["checked_out"], pool["pool_size"]) == (2, 2, 4)
    assert pool["peak_checked_out"] == 3 and requests["inflight_peak"] == 6
    assert requests["completed"] == 400 and requests["inflight_mean"] == 3.0
    assert requests["statements_per_request"] == 900 / 400
    hold = pool["hold_time_ms"]
    assert hold["count"] == 400 and hold["mean"] == pytest.approx(57.5)
    # Pooled std over all samples: E[x^2] - mean^2.
    second = (100 * (4 + 2500) + 300 * (16 + 3600)) / 400
    assert hold["std"] == pytest.approx(math.sqrt(second - 57.5**2), abs=1e-3)
    # Quantiles of all 400 samples from the added histograms: 90 % at the means (90 at 50,
    # 270 at 60), 10 % at the tails (10 at 54, 30 at 66), not the largest worker's quantile.
    assert hold["p50"] == pytest.approx(60.0, rel=1e-3)
    assert hold["p95"] == pytest.approx(66.0, rel=1e-3)
    # p99 is 66 over all samples; the largest worker p99 (67) was only an upper bound.
    assert hold["p99"] == pytest.approx(66.0, rel=1e-3)
    assert hold["max"] == 68.0 and hdr.decode(hold["hdr"]).get_total_count() == 400
    # A worker without a histogram (an older target): the quantiles are unknown, not guessed.
    del b["sqlalchemy"]["hold_time_ms"]["hdr"]
    old = combine([a, b])["sqlalchemy"]["hold_time_ms"]
    assert (old["p95"], old["count"]) == (None, 400)
    assert out["window_s"] == b["window_s"] and out["app_workers"] == 2
    assert out["per_worker"] == [a, b]


def test_fleet_budget_counts_measured_connections_and_pgbouncer() -> None:
    fleet = Fleet(instances=2, workers_per_instance=2, max_connections=40, reserved_connections=0)
    direct = {"pool_size": 5, "max_overflow": 2, "pg_max_size": 1, "app_workers": 2}
    # Configured: 8 per process, 4 processes = 32.
    assert fleet.total(Demand.of(direct)) == 32 and fleet.fits(Demand.of(direct))
    # Postgres saw 24 from 2 workers: 12 per process counts, 48 > 40.
    seen = Demand.of(direct | {"pg_peak_connections": 24})
    assert seen.per_process == 12 and not fleet.fits(seen)
    assert "x 12 connections (Postgres saw 24 from 2 workers) = 48 > 40" in fleet.describe(seen)
    # Behind PgBouncer only its server pool counts, whatever the app's pools.
    pgb = Demand.of(direct | {"pooler": "pgbouncer", "pgbouncer_pool_size": 6})
    assert fleet.total(pgb) == 6
    assert fleet.describe(pgb).startswith("1 PgBouncer x 6 server connections = 6 <= 40")
    two = Fleet(pgbouncer_instances=3, max_connections=20, reserved_connections=3)
    assert two.total(pgb) == 18 and not two.fits(pgb)
    # A row from before app_workers: one worker, direct, exactly as before.
    old = {"pool_size": 4.0, "max_overflow": 0.0, "pg_max_size": math.nan, "pooler": ""}
    assert fleet.total(Demand.of(old)) == fleet.total(4) == 16


def point(**values: Any) -> Point:
    base: dict[str, Any] = {
        "run_id": "x", "scenario": "single_query", "shape": "constant", "repetition": 1,
        "pool_size": 2, "max_overflow": 0, "http_concurrency_limit": 20, "users": 16,
        "pg_max_size": 1, "pg_max_connections": 100, "queries_per_request": 1,
        "sim_latency_ms": 50.0, "think_time_s": 0.0, "fanout_calls": 5, "open_model_rps": 0.0,
        "open_model_max_inflight": 1000, "experiment": "capacity", "spawn_rate": 100.0,
        "warmup_s": 1.0, "duration_s": 2.0,
    }  # fmt: skip
    return Point(**(base | values))


def test_bottleneck_judges_the_busiest_worker_and_every_workers_pool() -> None:
    two = point(app_workers=2)
    # Two workers at 75 % each: 150 % of a core in all, but no worker is CPU-bound.
    calm = {"app_cpu_pct": 150.0, "app_busiest_cpu_pct": 75.0, "p95_ms": 100.0}
    assert label_bottleneck(two, calm) == "none"
    assert label_bottleneck(two, calm | {"app_busiest_cpu_pct": 95.0}) == "app_cpu"
    waited = calm | {"acquire_wait_p95_ms": 5.0, "p95_ms": 1000.0}
    # One worker's pool full (2 of 2 x 2) is not every connection checked out...
    assert label_bottleneck(two, waited | {"peak_checked_out": 2}) == "none"
    # ...both workers' pools full is.
    assert label_bottleneck(two, waited | {"peak_checked_out": 4}) == "pool"
    # Clients queued in PgBouncer for a good share of the p95.
    queued = calm | {"pgb_cl_waiting_peak": 3, "pgb_maxwait_ms": 40.0}
    assert label_bottleneck(point(pooler="pgbouncer", pgbouncer_pool_size=2), queued) == "pool"


def appservers() -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        if "poolbench.sweep.appserver" in " ".join(proc.info["cmdline"] or []):
            found.append(proc)
    return found


@pytest.mark.slow
def test_two_workers_open_twice_the_connections_of_one(tmp_path: Path) -> None:
    spec = tmp_path / "workers.toml"
    spec.write_text(SPEC)
    before = {p.pid for p in appservers()}
    result = sweep(str(spec), "--out", str(tmp_path / "out"), "--no-report", timeout=240)
    assert result.returncode == 0, result.stderr[-2000:]
    sweep_dir = only_dir(tmp_path / "out")
    rows = {int(r["app_workers"]): r for r in read_rows(sweep_dir)[1]}
    one, two = rows[1], rows[2]
    assert two["run_id"] == "p2-o0-s20-u16-q1-w2-r1"
    # Every pool is per process: a saturated worker opens its SQLAlchemy pool (2) and its
    # asyncpg pool (min and max 1); Postgres sees that once per worker.
    assert int(one["app_max_connections"]) == int(one["pg_peak_connections"]) == 3
    assert int(two["app_max_connections"]) == int(two["pg_peak_connections"]) == 6
    assert int(two["peak_checked_out"]) == 2 * int(one["peak_checked_out"]) == 4
    for row in (one, two):
        assert float(row["error_rate"]) == 0 and row["pooler"] == "direct"
        assert row["pgbouncer_pool_size"] == "" and row["pgb_sv_active_peak"] == ""
    record = json.loads((sweep_dir / "runs" / two["run_id"] / "run.json").read_text())
    assert record["max_processes"]["app"] == 2
    # Both workers served requests (one accept queue, either worker may take a connection).
    requests = record["app_worker_requests"]
    assert len(requests) == 2 and all(r > 0 for r in requests)
    assert (
        sum(requests)
        == json.loads((sweep_dir / "runs" / two["run_id"] / "telemetry.json").read_text())[
            "requests"
        ]["completed"]
    )
    figures = record["figures"]
    assert 0 < figures["app_busiest_cpu_pct"] <= figures["app_cpu_pct"]
    analysis = subprocess.run(
        [sys.executable, "-m", "poolbench.cli", "analyze", str(sweep_dir)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert analysis.returncode == 0, analysis.stderr[-2000:]
    assert "Fleet (both pools): 2 instances x 2 workers x 3 connections" in analysis.stdout
    assert not {p.pid for p in appservers()} - before, "an app worker outlived the sweep"
