"""Fan-out honours the app-wide semaphore and the deadline, and leaks no calls."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from bench.sweep.pg import free_port
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
        http = app.state.telemetry.snapshot().http
    assert response.status_code == 200, response.text
    assert response.json()["calls"] == 12
    stats = stub.stats()
    assert stats["peak_in_flight"] == 3
    assert stats["completed"] == 12
    assert (http.limit, http.peak_in_flight, http.in_flight, http.calls) == (3, 3, 0, 12)
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
        http = app.state.telemetry.snapshot().http
    body = assert_problem(response, 504)
    assert body["type"] == "urn:poolbench:problem:downstream-timeout"
    assert elapsed < 1.0
    assert http.in_flight == 0 and http.timeouts == 1 and http.calls == 4
    # The cancelled calls closed their connections: the stub stops waiting for them.
    async with asyncio.timeout(2.5):
        while (stats := stub.stats())["cancelled"] < 4:
            await asyncio.sleep(0.05)
    assert stats["in_flight"] == 0 and stats["completed"] == 0


async def test_unreachable_downstream_is_502(run_app: AppRunner) -> None:
    async with run_app(downstream_url=f"http://127.0.0.1:{free_port()}") as (app, client):
        response = await client.get("/fanout", params={"calls": 3})
        http = app.state.telemetry.snapshot().http
    body = assert_problem(response, 502)
    assert body["detail"] == "downstream call failed: ConnectError"
    assert http.in_flight == 0


async def test_fanout_default_downstream(run_app: AppRunner, downstream: Downstream) -> None:
    async with run_app() as (_, client):
        response = await client.get("/fanout")
    assert response.status_code == 200
    assert downstream.stats()["completed"] == 5
