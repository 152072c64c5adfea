"""Telemetry measures what it claims: hold time, acquire wait, peaks, windows."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from poolbench import hdr
from poolbench.instrumentation import PoolTelemetry, Telemetry, WindowHistogram, percentile
from tests.app.app_helpers import (
    AppRunner,
    concurrently,
    server_timing,
)

# Fixtures (app_db, downstream(s), run_app) live in tests/app_fixtures.py.

SIM_MS = 50


async def test_hold_time_covers_simulated_latency(run_app: AppRunner) -> None:
    async with run_app(sim_query_latency_ms=SIM_MS) as (_, client):
        await client.post("/telemetry/reset")
        for _ in range(3):
            assert (await client.get("/users/1")).status_code == 200
            assert (await client.get("/raw/users/1")).status_code == 200
        orders = await client.get("/users/1/orders")
        snapshot = (await client.get("/telemetry")).json()
    assert orders.status_code == 200
    for pool in ("sqlalchemy", "asyncpg"):
        hold = snapshot[pool]["hold_time_ms"]
        assert hold["count"] >= 3
        assert hold["p50"] >= SIM_MS, (pool, hold)
        assert hold["max"] >= hold["p99"] >= hold["p95"] >= hold["p50"]
    # /users/1/orders runs three statements (user, orders, items), each sleeping inside.
    assert snapshot["sqlalchemy"]["hold_time_ms"]["max"] >= 3 * SIM_MS


async def _wait_under_load(run_app: AppRunner, pool_size: int) -> dict[str, Any]:
    async with run_app(db_pool_size=pool_size, db_max_overflow=0, sim_query_latency_ms=SIM_MS) as (
        _,
        client,
    ):
        # Open the pool's connections first: on a busy host opening 7 of them takes tens of ms,
        # which is connect cost, not waiting for a connection that is in use.
        await concurrently(*(client.get("/users/1") for _ in range(8)))
        await client.post("/telemetry/reset")
        responses = await concurrently(*(client.get("/users/1") for _ in range(8)))
        assert all(r.status_code == 200 for r in responses)
        snapshot: dict[str, Any] = (await client.get("/telemetry")).json()["sqlalchemy"]
        snapshot["pool_timing_ms"] = max(server_timing(r)["pool"] for r in responses)
        return snapshot


async def test_acquire_wait_rises_when_the_pool_is_too_small(run_app: AppRunner) -> None:
    small = await _wait_under_load(run_app, pool_size=1)
    large = await _wait_under_load(run_app, pool_size=8)
    # Eight requests through one connection queue behind each other: ~SIM_MS * 3.5 on average.
    assert small["acquire_wait_ms"]["mean"] > 2 * SIM_MS
    assert small["acquire_wait_ms"]["mean"] > 10 * large["acquire_wait_ms"]["mean"]
    assert small["peak_checked_out"] == 1
    assert 1 < large["peak_checked_out"] <= 8
    # The per-request accumulator reaches Server-Timing through SQLAlchemy's greenlet bridge.
    assert small["pool_timing_ms"] >= 5 * SIM_MS
    assert large["pool_timing_ms"] < SIM_MS


async def test_reset_starts_a_new_window_but_not_prometheus(run_app: AppRunner) -> None:
    async with run_app() as (_, client):
        await client.get("/users/1")
        await client.get("/raw/users/1")
        closed = (await client.post("/telemetry/reset")).json()
        fresh = (await client.get("/telemetry")).json()
        metrics = (await client.get("/metrics")).text
    assert closed["sqlalchemy"]["hold_time_ms"]["count"] >= 1
    for pool in ("sqlalchemy", "asyncpg"):
        assert fresh[pool]["acquire_wait_ms"]["count"] == 0
        empty = dict(fresh[pool]["hold_time_ms"])
        assert hdr.decode(empty.pop("hdr")).get_total_count() == 0
        assert empty == {
            "count": 0,
            "sum": 0.0,
            "mean": 0.0,
            "std": 0.0,
            "p50": 0.0,
            "p95": 0.0,
            "p99": 0.0,
            "max": 0.0,
        }
        assert fresh[pool]["peak_checked_out"] == 0
        assert fresh[pool]["connections_opened"] == 0
    assert fresh["window_s"] < closed["window_s"] + 1
    assert fresh["http"] == {
        "limit": 20,
        "in_flight": 0,
        "peak_in_flight": 0,
        "calls": 0,
        "timeouts": 0,
        "semaphore_wait_ms": fresh["sqlalchemy"]["hold_time_ms"],  # the same empty summary
        "waiting_holding_connection": 0,
        "connections_held_waiting": 0,
        "peak_connections_held_waiting": 0,
    }
    # Prometheus keeps counting across windows.
    count_line = 'poolbench_pool_hold_seconds_count{pool="sqlalchemy"} '
    counts = [line for line in metrics.splitlines() if line.startswith(count_line)]
    assert float(counts[0].removeprefix(count_line)) >= 1


async def test_snapshot_has_the_design_keys(run_app: AppRunner) -> None:
    async with run_app(db_pool_size=4, db_max_overflow=6, pg_pool_max_size=3) as (_, client):
        body = (await client.get("/telemetry")).json()
    # The window's keys (the contract figures.py reads), the cumulative totals, the stack.
    assert body.keys() == {
        "window_s", "sqlalchemy", "asyncpg", "http", "requests", "totals", "stack",
    }  # fmt: skip
    # What the service runs on, for the manifest: its versions and the pools' real limits.
    stack = body["stack"]
    assert stack["versions"]["sqlalchemy"] and stack["versions"]["python"]
    assert stack["pools"] == {
        "sqlalchemy": {"driver": "asyncpg", "pool_size": 4, "max_overflow": 6},
        "asyncpg": {"driver": "asyncpg", "pool_size": 3, "max_overflow": 0},
    }
    pool_keys = {
        "pool_size", "max_overflow", "checked_out", "overflow_in_use", "peak_checked_out",
        "timeouts", "connections_opened", "connections_closed", "acquire_wait_ms",
        "hold_time_ms", "ping_ms", "idle_s", "handoff_s",
    }  # fmt: skip
    assert body["sqlalchemy"].keys() == body["asyncpg"].keys() == pool_keys
    assert body["sqlalchemy"]["acquire_wait_ms"].keys() == {
        "count",
        "sum",
        "mean",
        "std",
        "p50",
        "p95",
        "p99",
        "max",
        "hdr",
    }
    assert (body["sqlalchemy"]["pool_size"], body["sqlalchemy"]["max_overflow"]) == (4, 6)
    assert (body["asyncpg"]["pool_size"], body["asyncpg"]["max_overflow"]) == (3, 0)
    assert body["http"].keys() == {
        "limit", "in_flight", "peak_in_flight", "calls", "timeouts", "semaphore_wait_ms",
        "waiting_holding_connection", "connections_held_waiting", "peak_connections_held_waiting",
    }  # fmt: skip


async def test_connections_opened_and_closed_are_counted(run_app: AppRunner) -> None:
    async with run_app(pg_pool_min_size=2, pg_pool_max_size=2) as (app, client):
        await client.get("/users/1")
        telemetry = app.state.telemetry
    await asyncio.sleep(0)  # asyncpg reports terminations with call_soon
    assert telemetry.sqlalchemy.connections_opened >= 1
    assert telemetry.asyncpg.connections_opened == 2
    assert telemetry.sqlalchemy.connections_closed == telemetry.sqlalchemy.connections_opened
    assert telemetry.asyncpg.connections_closed == 2


def test_window_histogram_keeps_exact_sums_and_hdr_quantiles() -> None:
    hist = WindowHistogram()
    for value in range(1, 101):
        hist.observe(float(value))
    stats = hist.summary()
    assert (stats.count, stats.sum, stats.mean, stats.max) == (100, 5050.0, 50.5, 100.0)
    assert stats.std == pytest.approx(28.8661, abs=1e-4)  # population std of 1..100
    # HDR quantiles are recorded values (nearest rank), to 3 significant digits.
    assert stats.p50 == pytest.approx(50.0, rel=1e-3)
    assert stats.p95 == pytest.approx(95.0, rel=1e-3)
    assert stats.p99 == pytest.approx(99.0, rel=1e-3)
    assert hdr.decode(stats.hdr).get_total_count() == 100
    memory = len(hdr.decode(stats.hdr).counts)
    for _ in range(50_000):
        hist.observe(1.0)
    assert hist.summary().count == 50_100  # every sample counted, in the same fixed memory
    assert hist.summary().p95 == pytest.approx(1.0, rel=1e-3)
    assert len(hist._histogram.counts) == memory
    hist.reset()
    assert (hist.summary().count, hist.summary().p99, hist.summary().std) == (0, 0.0, 0.0)
    assert percentile([], 0.5) == 0.0


def test_overflow_in_use_is_not_sqlalchemys_negative_overflow() -> None:
    telemetry = Telemetry()
    pool: PoolTelemetry = telemetry.sqlalchemy
    pool.attach(pool_size=2, max_overflow=3)
    assert pool.overflow_in_use == 0  # SQLAlchemy's pool.overflow() would say -2 here
    for _ in range(4):
        pool.record_checkout()
    assert (pool.checked_out, pool.overflow_in_use, pool.peak_checked_out) == (4, 2, 4)
    pool.record_checkin()
    telemetry.reset_window()
    assert pool.peak_checked_out == 3  # the peak restarts from what is still checked out


async def test_access_log_writes_one_json_line(
    run_app: AppRunner, caplog: pytest.LogCaptureFixture
) -> None:
    import json

    caplog.set_level("INFO", logger="sample_app.access")
    async with run_app(access_log=True) as (_, client):
        response = await client.get("/users/1", headers={"X-Request-ID": "log-1"})
    lines = [r for r in caplog.records if r.name == "sample_app.access"]
    assert len(lines) == 1
    record = json.loads(lines[0].getMessage())
    assert record["request_id"] == "log-1" and record["status"] == response.status_code
    assert record["path"] == "/users/1" and record["pool_wait_ms"] >= 0


async def test_no_access_log_by_default(
    run_app: AppRunner, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="sample_app.access")
    async with run_app() as (_, client):
        await client.get("/users/1")
    assert not [r for r in caplog.records if r.name == "sample_app.access"]


async def test_peaks_never_exceed_the_pool_bounds(run_app: AppRunner) -> None:
    async with run_app(
        db_pool_size=2, db_max_overflow=0, pg_pool_max_size=2, sim_query_latency_ms=20
    ) as (_, client):
        await client.post("/telemetry/reset")
        for path in ("/users/1", "/raw/users/1"):
            responses = await concurrently(*(client.get(path) for _ in range(12)))
            assert all(r.status_code == 200 for r in responses)
        snapshot = (await client.get("/telemetry")).json()
    for pool in ("sqlalchemy", "asyncpg"):
        # Exactly the bound: requeued connections are uncounted before a waiter takes them.
        assert snapshot[pool]["peak_checked_out"] == 2, pool
        assert snapshot[pool]["checked_out"] == 0
        assert snapshot[pool]["hold_time_ms"]["count"] == 12
