"""Fan-out honours the app-wide semaphore and the deadline, leaks no calls, and measures the
wait for the semaphore, including waits that hold a DB connection (the hold_session demo)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import text

from poolbench.instrumentation import RequestActivity, current_request
from poolbench.sweep.pg import free_port
from tests.app.app_helpers import (
    AppRunner,
    Downstream,
    assert_problem,
    concurrently,
)

# Fixtures (app_db, downstream(s), run_app) live in tests/app_fixtures.py.


async def test_fanout_never_exceeds_the_semaphore(
    run_app: AppRunner, downstreams: Callable[[float], Downstream]
) -> None:
    stub = downstreams(100)
    async with run_app(downstream_url=stub.url, http_concurrency_limit=3) as (app, client):
        started = time.perf_counter()
        response = await client.get("/fanout", params={"calls": 12})
        elapsed = time.perf_counter() - started
        http = app.state.telemetry.snapshot()["http"]
    assert response.status_code == 200, response.text
    assert response.json()["calls"] == 12
    stats = stub.stats()
    assert stats["peak_in_flight"] == 3
    assert stats["completed"] == 12
    assert (http["limit"], http["peak_in_flight"], http["in_flight"], http["calls"]) == (
        3,
        3,
        0,
        12,
    )
    # Four waves of three 100 ms calls.
    assert 0.4 <= elapsed < 2.0


async def test_semaphore_is_shared_across_requests(
    run_app: AppRunner, downstreams: Callable[[float], Downstream]
) -> None:
    stub = downstreams(100)
    async with run_app(downstream_url=stub.url, http_concurrency_limit=4) as (_, client):
        responses = await concurrently(*(client.get("/fanout?calls=3") for _ in range(3)))
    assert all(r.status_code == 200 for r in responses)
    assert stub.stats()["peak_in_flight"] == 4


async def test_fanout_deadline_is_a_quick_504_without_leaks(
    run_app: AppRunner, downstreams: Callable[[float], Downstream]
) -> None:
    stub = downstreams(3000)
    async with run_app(downstream_url=stub.url, http_timeout_s=0.3) as (app, client):
        started = time.perf_counter()
        response = await client.get("/fanout", params={"calls": 4})
        elapsed = time.perf_counter() - started
        http = app.state.telemetry.snapshot()["http"]
    body = assert_problem(response, 504)
    assert body["type"] == "urn:poolbench:problem:downstream-timeout"
    assert elapsed < 1.0
    assert http["in_flight"] == 0 and http["timeouts"] == 1 and http["calls"] == 4
    # The cancelled calls closed their connections: the stub stops waiting for them.
    async with asyncio.timeout(2.5):
        while (stats := stub.stats())["cancelled"] < 4:
            await asyncio.sleep(0.05)
    assert stats["in_flight"] == 0 and stats["completed"] == 0


async def test_unreachable_downstream_is_502(run_app: AppRunner) -> None:
    async with run_app(downstream_url=f"http://127.0.0.1:{free_port()}") as (app, client):
        response = await client.get("/fanout", params={"calls": 3})
        http = app.state.telemetry.snapshot()["http"]
    body = assert_problem(response, 502)
    assert body["detail"] == "downstream call failed: ConnectError"
    assert http["in_flight"] == 0


async def test_fanout_default_downstream(run_app: AppRunner, downstream: Downstream) -> None:
    async with run_app() as (_, client):
        response = await client.get("/fanout")
    assert response.status_code == 200
    assert downstream.stats()["completed"] == 5


async def _semaphore_figures(
    run_app: AppRunner, stub: Downstream, limit: int, calls: int
) -> dict[str, Any]:
    async with run_app(downstream_url=stub.url, http_concurrency_limit=limit) as (_, client):
        await client.post("/telemetry/reset")
        response = await client.get("/fanout", params={"calls": calls})
        assert response.status_code == 200, response.text
        http: dict[str, Any] = (await client.get("/telemetry")).json()["http"]
        return http


async def test_semaphore_wait_grows_when_the_limit_is_small(
    run_app: AppRunner, downstreams: Callable[[float], Downstream]
) -> None:
    stub = downstreams(50)
    small = await _semaphore_figures(run_app, stub, limit=1, calls=8)
    large = await _semaphore_figures(run_app, stub, limit=20, calls=8)
    # One slot: the calls run one after another, the last waiting for seven 50 ms calls.
    assert small["semaphore_wait_ms"]["count"] == large["semaphore_wait_ms"]["count"] == 8
    assert small["semaphore_wait_ms"]["max"] >= 6 * 50
    assert small["semaphore_wait_ms"]["mean"] >= 100
    assert large["semaphore_wait_ms"]["p95"] < 20
    assert (small["peak_in_flight"], large["peak_in_flight"]) == (1, 8)
    # No session anywhere: no wait held a connection.
    assert small["waiting_holding_connection"] == large["waiting_holding_connection"] == 0


async def test_hold_session_counts_waits_holding_a_connection(
    run_app: AppRunner, downstreams: Callable[[float], Downstream]
) -> None:
    stub = downstreams(50)
    async with run_app(downstream_url=stub.url, http_concurrency_limit=2) as (app, client):
        await client.post("/telemetry/reset")
        released = await client.get("/fanout", params={"calls": 6})
        after_default = app.state.telemetry.snapshot()["http"]
        held = await concurrently(
            *(client.get("/fanout", params={"calls": 6, "hold_session": True}) for _ in range(2))
        )
        http = app.state.telemetry.snapshot()["http"]
        pool = app.state.telemetry.snapshot()["sqlalchemy"]
        metrics = (await client.get("/metrics")).text
    assert released.status_code == 200 and all(r.status_code == 200 for r in held)
    # The default route holds no connection: its four queued calls (six calls, two slots) count
    # as semaphore waits, none as waits holding a connection.
    assert after_default["semaphore_wait_ms"]["count"] == 6
    assert after_default["semaphore_wait_ms"]["max"] >= 50
    assert after_default["waiting_holding_connection"] == 0
    assert after_default["peak_connections_held_waiting"] == 0
    # Two requests each holding a session: twelve calls, two slots, ten queued, every one of
    # them while its request held a connection; the two connections count once each.
    assert http["waiting_holding_connection"] == 10
    assert http["peak_connections_held_waiting"] == 2
    assert http["connections_held_waiting"] == 0
    assert pool["checked_out"] == 0 and pool["peak_checked_out"] >= 2
    assert "poolbench_http_semaphore_waits_holding_connection_total 10.0" in metrics
    assert "poolbench_http_peak_connections_held_waiting 2.0" in metrics
    assert "poolbench_http_semaphore_wait_seconds_count 18.0" in metrics


async def test_connections_held_by_the_current_request(run_app: AppRunner) -> None:
    """Both pools' checkouts reach the request's own counter, SQLAlchemy's via its greenlet."""
    async with run_app() as (app, _):
        resources = app.state.resources
        activity = RequestActivity()
        token = current_request.set(activity)
        try:
            async with resources.sessionmaker() as session:
                assert activity.connections_held == 0  # no connection before the first query
                await session.execute(text("select 1"))
                assert activity.connections_held == 1
                async with resources.pg_pool.acquire() as conn:
                    await conn.fetchval("select 1")
                    assert activity.connections_held == 2
                assert activity.connections_held == 1
            assert activity.connections_held == 0
        finally:
            current_request.reset(token)
        # Outside a request nothing is attributed, and nothing breaks.
        async with resources.sessionmaker() as session:
            await session.execute(text("select 1"))
    assert activity.connections_held == 0
