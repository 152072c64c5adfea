"""The app measures truthfully: requests in flight, statements per request, one round trip each.

Everything runs against the real Postgres; the statement counts are checked against Postgres's
own: every handler statement carries the folded `pg_sleep` when SIM_QUERY_LATENCY_MS > 0, so
`pg_prepared_statements` (per connection, with pools of one connection) tells how many times
each such statement was executed and that no separate sleep statement was ever sent.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any

import asyncpg
import httpx
import pytest
from fastapi import FastAPI
from poolbench.sample_app.db import fold_sim_latency
from poolbench.sample_app.models import Order
from sqlalchemy import func, insert, select, update

from poolbench.instrumentation import RequestTelemetry
from poolbench.sweep.pg import free_port
from tests.app.app_helpers import (
    ROOT,
    AppDatabase,
    AppRunner,
    Downstream,
    concurrently,
    server_timing,
    stop_process,
    wait_http_ok,
)

# Fixtures (app_db, downstream(s), run_app) live in tests/app/conftest.py.

SIM_MS = 20
ONE_CONNECTION = {
    "db_pool_size": 1,
    "db_max_overflow": 0,
    "pg_pool_min_size": 1,
    "pg_pool_max_size": 1,
}
ORDER = {"user_id": 4, "items": [{"sku": "M-1", "quantity": 1, "price_cents": 100}] * 2}
# Executions of the prepared statements of this connection whose text holds $1 (pg_sleep).
PREPARED = (
    "select statement, generic_plans + custom_plans as executions from pg_prepared_statements "
    "where strpos(statement, $1) > 0"
)
SLEEP = "pg_sleep("
TABLES = ("from users", "from orders", "from items", "insert into")


async def prepared_executions(app: FastAPI) -> list[tuple[str, int]]:
    """Return (statement, executions) of every sleeping statement both pools' connections ran."""
    resources = app.state.resources
    # Outside any request and without the latency option: the probe is neither counted nor
    # rewritten. With pools of one connection these are the connections the handlers used.
    async with resources.engine.connect() as conn:
        result = await conn.exec_driver_sql(PREPARED, (SLEEP,))
        rows = [(str(statement), int(executions)) for statement, executions in result]
    async with resources.pg_pool.acquire(rewrite=False) as raw:
        rows += [(r["statement"], r["executions"]) for r in await raw.fetch(PREPARED, SLEEP)]
    return rows


async def request(client: httpx.AsyncClient, method: str, path: str) -> httpx.Response:
    response = await client.request(method, path, json=ORDER if method == "POST" else None)
    assert response.status_code in (200, 201), response.text
    return response


@pytest.mark.parametrize(
    ("method", "path", "statements"),
    [
        ("GET", "/queries?queries=1", 1),
        ("GET", "/queries?queries=5", 5),
        ("GET", "/users/3", 1),
        # The user, its orders (selectinload), the orders' items (selectinload).
        ("GET", "/users/3/orders", 3),
        ("GET", "/raw/users/3", 1),
        # The user check, INSERT order RETURNING, one insertmanyvalues INSERT of the items.
        ("POST", "/orders", 3),
    ],
)
async def test_statements_per_request_are_the_handlers_statements(
    run_app: AppRunner, method: str, path: str, statements: int
) -> None:
    repeats = 3
    async with run_app(sim_query_latency_ms=1, **ONE_CONNECTION) as (app, client):
        await client.post("/telemetry/reset")
        for _ in range(repeats):
            await request(client, method, path)
            # Probes of the measurement are not requests: no count, no statements.
            for probe in ("/health", "/metrics", "/telemetry"):
                assert (await client.get(probe)).status_code == 200
        body = (await client.get("/telemetry")).json()["requests"]
        executed = await prepared_executions(app)
    assert body["completed"] == repeats
    assert body["statements"] == repeats * statements
    assert body["statements_per_request"] == statements
    assert (body["in_flight"], body["inflight_peak"]) == (0, 1)
    # Postgres executed exactly that many statements carrying the sleep, each naming its table.
    assert sum(executions for _, executions in executed) == repeats * statements, executed
    assert all(any(table in statement.lower() for table in TABLES) for statement, _ in executed)


@pytest.mark.parametrize("pre_ping", [True, False])
async def test_pre_ping_and_transaction_control_are_not_statements(
    run_app: AppRunner, pre_ping: bool
) -> None:
    async with run_app(db_pool_pre_ping=pre_ping) as (app, client):
        await client.post("/telemetry/reset")
        for _ in range(4):
            await request(client, "GET", "/users/3")
        snapshot = app.state.telemetry.snapshot()
    # Every request checked a connection out (and pinged it when pre_ping is on), began and
    # rolled back a transaction: none of that is a statement the handler sent.
    assert snapshot["sqlalchemy"]["acquire_wait_ms"]["count"] == 4
    assert snapshot["requests"]["statements"] == 4
    assert snapshot["requests"]["statements_per_request"] == 1


async def test_statements_outside_requests_do_not_count(run_app: AppRunner) -> None:
    async with run_app() as (app, client):
        # Start-up read the highest user id and /health ran `select 1` on both pools.
        assert (await client.get("/health")).status_code == 200
        requests = app.state.telemetry.requests
        assert (requests.completed_total, requests.statements_total) == (0, 0)
        await request(client, "GET", "/users/1")
        closed = (await client.post("/telemetry/reset")).json()["requests"]
        fresh = (await client.get("/telemetry")).json()["requests"]
    assert closed["completed"] == 1 and closed["statements_per_request"] == 1
    assert fresh == {
        "in_flight": 0,
        "inflight_mean": 0.0,
        "inflight_peak": 0,
        "completed": 0,
        "statements": 0,
        "statements_per_request": None,
    }


async def test_simulated_latency_is_inside_each_query(run_app: AppRunner) -> None:
    queries = 5
    async with run_app(sim_query_latency_ms=SIM_MS, **ONE_CONNECTION) as (app, client):
        await client.post("/telemetry/reset")
        for _ in range(2):
            await request(client, "GET", f"/queries?queries={queries}")
        for _ in range(3):
            await request(client, "GET", "/raw/users/3")
        snapshot = (await client.get("/telemetry")).json()
        executed = await prepared_executions(app)
    requests, sqlalchemy, raw = snapshot["requests"], snapshot["sqlalchemy"], snapshot["asyncpg"]
    assert (requests["completed"], requests["statements"]) == (5, 2 * queries + 3)
    # One connection per request, held through every query's own sleep.
    assert sqlalchemy["hold_time_ms"]["count"] == 2
    assert sqlalchemy["hold_time_ms"]["p50"] >= queries * SIM_MS
    assert raw["hold_time_ms"]["count"] == 3
    assert raw["hold_time_ms"]["p50"] >= SIM_MS
    # Postgres: the sleep ran inside the user reads (one prepared statement per path, so the
    # statement cache hit every time), and no statement slept on its own.
    assert sorted(executions for _, executions in executed) == [3, 2 * queries], executed
    assert all("from users" in statement.lower() for statement, _ in executed)


async def test_simulated_latency_folds_into_writes(run_app: AppRunner) -> None:
    marker = "measures-probe"
    async with run_app(sim_query_latency_ms=SIM_MS, **ONE_CONNECTION) as (app, client):
        await client.post("/telemetry/reset")
        created = (await request(client, "POST", "/orders")).json()
        snapshot = (await client.get("/telemetry")).json()
        executed = await prepared_executions(app)
        # Writes the routes do not send, on a request session (latency on): executemany
        # without RETURNING, an UPDATE's rowcount, an ORM flush that checks the rowcount.
        async with app.state.resources.sessionmaker() as session:
            rows = [{"user_id": user_id, "status": marker} for user_id in (1, 2, 3)]
            await session.execute(insert(Order), rows)
            renamed = await session.execute(
                update(Order).where(Order.status == marker).values(status=f"{marker}-2")
            )
            order = await session.get_one(Order, created["id"])
            order.status = "shipped"
            await session.flush()  # StaleDataError unless the UPDATE's rowcount is 1
            moved = await session.scalar(select(func.count()).where(Order.status == f"{marker}-2"))
            await session.rollback()
    assert [item["sku"] for item in created["items"]] == ["M-1", "M-1"]
    assert created["total_cents"] == 200
    assert snapshot["requests"]["statements"] == 3
    assert snapshot["sqlalchemy"]["hold_time_ms"]["max"] >= 3 * SIM_MS
    # Postgres ran each INSERT ... RETURNING once, with the sleep inside it.
    inserts = [(statement, n) for statement, n in executed if "INSERT INTO" in statement]
    assert [n for _, n in inserts] == [1, 1], executed
    assert all("RETURNING" in statement for statement, _ in inserts)
    assert (renamed.rowcount, moved) == (3, 3)


SLOW_ROWS = "SELECT g, g * 2 AS double FROM generate_series(1, 200) AS g"
FOLD_CASES: list[tuple[str, tuple[Any, ...]]] = [
    ("SELECT id, name, name AS name FROM users WHERE id <= $1 ORDER BY id DESC", (30,)),
    (SLOW_ROWS, ()),
    ("SELECT id FROM users WHERE id = $1", (10**9,)),  # no row
    ("SELECT id FROM users WHERE false", ()),  # proven empty by the planner
    ("(SELECT 1 AS x) UNION ALL (SELECT 2);", ()),
    ("SELECT 1 AS one -- a trailing comment", ()),
    ("WITH w AS (SELECT 5 AS z) SELECT z FROM w", ()),
    ("UPDATE users SET name = name WHERE id <= $1 RETURNING id, name", (5,)),
    ("INSERT INTO orders (user_id, status) VALUES ($1, 'x'), ($1, 'y') RETURNING status", (1,)),
]


async def test_fold_keeps_results_and_sleeps_once_per_statement(app_db: AppDatabase) -> None:
    latency_s = SIM_MS / 1000
    conn = await asyncpg.connect(app_db.dsn)
    try:
        for statement, args in FOLD_CASES:
            plain = await _run_rolled_back(conn, statement, args)
            folded = await _run_rolled_back(conn, fold_sim_latency(statement, latency_s), args)
            assert folded.columns == plain.columns, statement  # names and types
            assert folded.rows == plain.rows, statement  # values, in order
            assert folded.status == f"SELECT {len(plain.rows)}"
            # Once per statement: 200 rows or none, one latency, never one per row.
            assert latency_s <= folded.elapsed_s < 5 * latency_s, (statement, folded)
        # A write without RETURNING: no columns, and the tag carries the rows affected.
        write = "UPDATE users SET name = name WHERE id <= $1"
        folded = await _run_rolled_back(conn, fold_sim_latency(write, latency_s), (7,))
        assert (folded.columns, folded.status) == ([], "SELECT 7")
        for utility in ("BEGIN", "SET statement_timeout = 0", "CREATE TABLE t (a int)"):
            assert fold_sim_latency(utility, latency_s) is utility
        # N statements cost N latencies.
        prepared = await conn.prepare(fold_sim_latency(SLOW_ROWS, latency_s))
        started = time.perf_counter()
        for _ in range(5):
            await prepared.fetch()
        assert 5 * latency_s <= time.perf_counter() - started < 10 * latency_s
    finally:
        await conn.close()


@dataclass(frozen=True)
class _Outcome:
    columns: list[tuple[str, int]]
    rows: list[tuple[Any, ...]]
    status: str
    elapsed_s: float


async def _run_rolled_back(
    conn: asyncpg.Connection, statement: str, args: tuple[Any, ...]
) -> _Outcome:
    transaction = conn.transaction()
    await transaction.start()
    try:
        prepared = await conn.prepare(statement)
        started = time.perf_counter()
        rows = await prepared.fetch(*args)
        elapsed_s = time.perf_counter() - started
        return _Outcome(
            columns=[(attr.name, attr.type.oid) for attr in prepared.get_attributes()],
            rows=[tuple(row) for row in rows],
            status=prepared.get_statusmsg(),
            elapsed_s=elapsed_s,
        )
    finally:
        await transaction.rollback()


async def test_reset_restarts_the_window_with_requests_in_flight(run_app: AppRunner) -> None:
    slow_ms = 200
    async with run_app(sim_query_latency_ms=slow_ms) as (app, client):
        await client.post("/telemetry/reset")
        await request(client, "GET", "/users/1")
        slow = asyncio.create_task(request(client, "GET", "/queries?queries=2"))
        await asyncio.sleep(slow_ms / 1000 / 2)
        reset_sent = time.perf_counter()
        closed = (await client.post("/telemetry/reset")).json()
        reset_done = time.perf_counter()
        fresh = (await client.get("/telemetry")).json()
        await slow
        slow_done = time.perf_counter()
        after = (await client.get("/telemetry")).json()
    assert closed["requests"]["completed"] == 1 and closed["requests"]["in_flight"] == 1
    assert closed["requests"]["inflight_peak"] == 1
    # The slow request was in flight at the reset: it counts from there on...
    assert fresh["requests"]["in_flight"] == fresh["requests"]["inflight_peak"] == 1
    assert (fresh["requests"]["completed"], fresh["requests"]["statements"]) == (0, 0)
    assert fresh["window_s"] < 0.1
    # ...and completes in the new window with all its statements.
    requests = after["requests"]
    assert (requests["completed"], requests["statements"], requests["in_flight"]) == (1, 2, 0)
    assert requests["statements_per_request"] == 2
    area_s = requests["inflight_mean"] * after["window_s"]
    assert slow_done - reset_done - 0.02 <= area_s <= slow_done - reset_sent + 0.02
    assert 0 < requests["inflight_mean"] < 1


async def test_requests_in_prometheus_text(run_app: AppRunner) -> None:
    async with run_app() as (_, client):
        for _ in range(3):
            await request(client, "GET", "/queries?queries=2")
        await client.post("/telemetry/reset")
        await request(client, "GET", "/users/1")
        metrics = _parse_metrics((await client.get("/metrics")).text)
    # Counters are never reset; gauges are the window's.
    assert metrics["poolbench_requests_completed_total"] == 4
    assert metrics["poolbench_request_statements_total"] == 7
    assert metrics["poolbench_requests_in_flight_seconds_total"] > 0
    assert metrics["poolbench_requests_in_flight"] == 0
    assert metrics["poolbench_requests_peak_in_flight"] == 1
    assert 0 < metrics["poolbench_requests_mean_in_flight"] < 1


def _parse_metrics(body: str) -> dict[str, float]:
    values = {}
    for line in body.splitlines():
        if line and not line.startswith("#") and "{" not in line:
            name, _, value = line.partition(" ")
            values[name] = float(value)
    return values


def test_in_flight_integral_is_exact() -> None:
    telemetry = RequestTelemetry(now=0.0)
    telemetry.start(1.0)
    telemetry.start(2.0)
    telemetry.reset_window(2.5)  # two in flight: they count from 2.5 on
    telemetry.finish(3.0, statements=2)
    telemetry.finish(5.0, statements=1)
    snapshot = telemetry.snapshot(now=5.5, window_s=3.0)
    # Area since the reset: 2 x 0.5 + 1 x 2 = 3 request-seconds over 3 s.
    assert snapshot["inflight_mean"] == 1.0
    assert (snapshot["inflight_peak"], snapshot["completed"], snapshot["statements"]) == (2, 2, 3)
    assert snapshot["statements_per_request"] == 1.5
    assert telemetry.area(5.5) == 1 + 2 + 2  # since start: 1 x 1 + 2 x 1 + 1 x 2


CONCURRENCY = 6
LOAD_S = 2.5
LOAD_QUERIES = 3
# Long requests next to the fixed HTTP cost outside the app (client, parsing, loopback), which
# the app cannot see and which grows when the two cores are busy.
LOAD_SIM_MS = 50


async def test_littles_law_under_concurrent_load_on_uvicorn(
    app_db: AppDatabase, downstream: Downstream
) -> None:
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": app_db.sqlalchemy_url,
        "DOWNSTREAM_URL": downstream.url,
        "CREATE_SCHEMA": "false",
        "SIM_QUERY_LATENCY_MS": str(LOAD_SIM_MS),
        "DB_POOL_SIZE": str(CONCURRENCY),
        "DB_MAX_OVERFLOW": "0",
        "LOG_LEVEL": "WARNING",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "poolbench.sample_app.main:app"]
        + ["--host", "127.0.0.1", "--port", str(port), "--no-access-log"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    limits = httpx.Limits(max_connections=CONCURRENCY + 2)
    try:
        await asyncio.to_thread(wait_http_ok, f"http://127.0.0.1:{port}/health", process)
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}", limits=limits, timeout=10
        ) as client:
            path = f"/queries?queries={LOAD_QUERIES}"
            # Warm up: open every pool connection and HTTP connection before the window.
            await concurrently(*(request(client, "GET", path) for _ in range(CONCURRENCY)))
            await client.post("/telemetry/reset")
            reset_done = time.perf_counter()
            deadline = reset_done + LOAD_S

            async def worker() -> list[tuple[float, float]]:
                """Return (client latency, app time from Server-Timing) per request, in s."""
                timings = []
                while time.perf_counter() < deadline:
                    started = time.perf_counter()
                    response = await request(client, "GET", path)
                    latency_s = time.perf_counter() - started
                    timings.append((latency_s, server_timing(response)["app"] / 1000))
                return timings

            async def prober() -> None:
                while time.perf_counter() < deadline:
                    for probe in ("/telemetry", "/metrics", "/health"):
                        assert (await client.get(probe)).status_code == 200
                    await asyncio.sleep(0.2)

            *per_worker, _ = await concurrently(*(worker() for _ in range(CONCURRENCY)), prober())
            snapshot = (await client.get("/telemetry")).json()
    finally:
        stop_process(process)
    timings = [timing for worker_timings in per_worker for timing in worker_timings]
    requests = snapshot["requests"]
    assert requests["completed"] == len(timings)
    assert requests["in_flight"] == 0
    assert requests["inflight_peak"] == CONCURRENCY
    assert requests["statements_per_request"] == LOAD_QUERIES
    # Little's law over a window that starts and ends empty: L = throughput x mean latency.
    window_s = snapshot["window_s"]
    mean_latency_s = sum(latency for latency, _ in timings) / len(timings)
    little = requests["completed"] / window_s * mean_latency_s
    detail = f"{requests} window {window_s} s, mean latency {mean_latency_s * 1000:.1f} ms"
    assert requests["inflight_mean"] == pytest.approx(little, rel=0.15), detail
    # The integral itself: request-seconds = the sum of every request's time in the app (as
    # the app's own Server-Timing saw it, from a few middleware layers further in).
    in_app_s = sum(app_s for _, app_s in timings)
    assert requests["inflight_mean"] * window_s == pytest.approx(in_app_s, rel=0.05), detail
