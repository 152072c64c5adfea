"""Pool exhaustion answers 503 problems quickly, for both pools, and never hangs."""

from __future__ import annotations

import asyncio

from tests.app.app_helpers import (
    AppRunner,
    assert_problem,
    concurrently,
)

# Fixtures (app_db, downstream(s), run_app) live in tests/app_fixtures.py.

EXHAUSTED = {"sim_query_latency_ms": 500}


async def test_sqlalchemy_pool_exhaustion_is_503_with_retry_after(run_app: AppRunner) -> None:
    async with asyncio.timeout(10):
        async with run_app(
            db_pool_size=1, db_max_overflow=0, db_pool_timeout_s=0.2, **EXHAUSTED
        ) as (app, client):
            app.state.telemetry.reset_window()
            responses = await concurrently(*(client.get("/users/1") for _ in range(4)))
            snapshot = app.state.telemetry.snapshot()["sqlalchemy"]
            health = await client.get("/health")
    statuses = sorted(r.status_code for r in responses)
    assert statuses[0] == 200 and statuses[-1] == 503, statuses
    for response in responses:
        if response.status_code == 503:
            body = assert_problem(response, 503)
            assert body["type"] == "urn:poolbench:problem:pool-timeout"
            assert body["pool"] == "sqlalchemy"
            assert response.headers["retry-after"] == "1"
    assert snapshot["timeouts"] == statuses.count(503)
    assert snapshot["peak_checked_out"] == 1
    # Every connection came back: the failed requests leaked nothing.
    assert snapshot["checked_out"] == 0
    assert health.status_code == 200


async def test_asyncpg_pool_exhaustion_is_503_with_retry_after(run_app: AppRunner) -> None:
    async with asyncio.timeout(10):
        async with run_app(
            pg_pool_min_size=1, pg_pool_max_size=1, pg_pool_acquire_timeout_s=0.2, **EXHAUSTED
        ) as (app, client):
            app.state.telemetry.reset_window()
            responses = await concurrently(*(client.get("/raw/users/1") for _ in range(4)))
            snapshot = app.state.telemetry.snapshot()["asyncpg"]
    statuses = sorted(r.status_code for r in responses)
    assert statuses[0] == 200 and statuses[-1] == 503, statuses
    body = assert_problem(responses[[r.status_code for r in responses].index(503)], 503)
    assert body["pool"] == "asyncpg"
    assert snapshot["timeouts"] == statuses.count(503)
    assert snapshot["pool_size"] == 1 and snapshot["max_overflow"] == 0
    assert snapshot["checked_out"] == 0


async def test_overflow_in_use_counts_beyond_pool_size(run_app: AppRunner) -> None:
    async with asyncio.timeout(10):
        async with run_app(db_pool_size=1, db_max_overflow=2, sim_query_latency_ms=400) as (
            app,
            client,
        ):
            telemetry = app.state.telemetry

            async def sample_midway() -> tuple[int, int]:
                await asyncio.sleep(0.2)
                return telemetry.sqlalchemy.checked_out, telemetry.sqlalchemy.overflow_in_use

            *responses, midway = await concurrently(
                *(client.get("/users/1") for _ in range(3)), sample_midway()
            )
            after = telemetry.snapshot()["sqlalchemy"]
    assert all(r.status_code == 200 for r in responses)
    assert midway == (3, 2)
    # Overflow connections close on checkin; the idle pool shows no (negative) overflow.
    assert after["overflow_in_use"] == 0 and after["checked_out"] == 0
    assert after["connections_closed"] >= 2
