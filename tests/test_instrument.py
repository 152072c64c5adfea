"""`poolbench.instrumentation` on apps written here, not the sample app: the same telemetry.

Real Postgres (the session's `pg` server), real HTTP through httpx's ASGI transport with the
app's lifespan run. The statements sleep in Postgres (`pg_sleep`), so hold times and waits are
real time spent holding a real connection.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import httpx
import pytest
from fastapi import FastAPI, Request
from poolbench.sample_app.config import Settings
from poolbench.sample_app.main import create_app
from sqlalchemy import text
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from poolbench import instrument
from poolbench.instrumentation.prometheus import parse_metrics
from poolbench.instrumentation.readings import reading_from_totals
from poolbench.sweep.pg import Database

SLEEP_S = 0.02
POOL_SIZE, MAX_OVERFLOW, PG_MAX = 2, 1, 2


def minimal_app(pg: Database) -> FastAPI:
    """A FastAPI service of its own: one engine, one asyncpg pool, two routes and a health check."""
    engine = create_async_engine(
        pg.sqlalchemy_url, pool_size=POOL_SIZE, max_overflow=MAX_OVERFLOW, pool_timeout=5
    )
    sessions = async_sessionmaker(engine, expire_on_commit=False)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        raw = await asyncpg.create_pool(
            pg.dsn, min_size=1, max_size=PG_MAX, init=app.state.poolbench.asyncpg_init()
        )
        app.state.pg = app.state.poolbench.wrap_asyncpg_pool(raw, acquire_timeout_s=5)
        try:
            yield
        finally:
            await app.state.pg.close()
            await engine.dispose()

    app = FastAPI(lifespan=lifespan)

    @app.get("/sleep")
    async def sleep(queries: int = 1) -> dict[str, int]:
        async with sessions() as session:
            for _ in range(queries):
                await session.execute(text("select pg_sleep(:s)"), {"s": SLEEP_S})
        return {"queries": queries}

    @app.get("/raw")
    async def raw(request: Request) -> dict[str, int]:
        async with request.app.state.pg.acquire() as conn:
            value = await conn.fetchval("select 1 from pg_sleep($1)", SLEEP_S)
        return {"value": value}

    @app.get("/health")
    async def health() -> dict[str, str]:
        async with engine.connect() as conn:
            await conn.execute(text("select 1"))
        return {"status": "ok"}

    instrument(app, engine=engine, uncounted_paths=["/health"])
    return app


@asynccontextmanager
async def serve(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    """Run the lifespan and yield a client talking HTTP to the app."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app)
        async with httpx.AsyncClient(transport=transport, base_url="http://svc") as client:
            yield client


def key_tree(value: Any) -> Any:
    """The nested keys of a JSON document (values dropped)."""
    if isinstance(value, dict):
        return {key: key_tree(item) for key, item in value.items()}
    return None


async def test_minimal_app_serves_the_sample_apps_telemetry_fields(pg: Database) -> None:
    sample = create_app(Settings(_env_file=None, database_url=pg.sqlalchemy_url))
    async with serve(sample) as client:
        expected = (await client.get("/telemetry")).json()
    async with serve(minimal_app(pg)) as client:
        body = (await client.get("/telemetry")).json()
        totals = (await client.get("/telemetry/totals")).json()
        reset = await client.post("/telemetry/reset")
        metrics = await client.get("/metrics")
    # Everything the sample app serves but its own downstream section, down to the last key.
    expected.pop("http")
    assert key_tree(body) == key_tree(expected)
    assert body["totals"].keys() == totals.keys() == {"pid", "uptime_s", "requests", "pools"}
    assert sorted(totals["pools"]) == ["asyncpg", "sqlalchemy"]
    assert reset.status_code == 200 and metrics.status_code == 200
    assert metrics.headers["content-type"].startswith("text/plain")
    assert (body["sqlalchemy"]["pool_size"], body["sqlalchemy"]["max_overflow"]) == (2, 1)
    assert (body["asyncpg"]["pool_size"], body["asyncpg"]["max_overflow"]) == (PG_MAX, 0)


async def test_minimal_app_measures_requests_statements_leases_and_waits(pg: Database) -> None:
    app = minimal_app(pg)
    async with serve(app) as client:
        # Open the pools' connections first: connect time is not a wait for a busy connection.
        await asyncio.gather(*(client.get("/sleep") for _ in range(3)))
        before = (await client.get("/telemetry/totals")).json()
        await client.post("/telemetry/reset")
        for _ in range(3):
            assert (await client.get("/sleep", params={"queries": 2})).status_code == 200
        for _ in range(2):
            assert (await client.get("/raw")).status_code == 200
        for probe in ("/health", "/metrics", "/telemetry", "/telemetry/totals"):
            assert (await client.get(probe)).status_code == 200
        # Six requests at once through 2 + 1 connections: three of them wait a whole lease.
        burst = await asyncio.gather(*(client.get("/sleep") for _ in range(6)))
        assert all(r.status_code == 200 for r in burst)
        body = (await client.get("/telemetry")).json()
        metrics = (await client.get("/metrics")).text
    requests, pool, direct = body["requests"], body["sqlalchemy"], body["asyncpg"]
    # Probes are not requests; every statement is attributed to the request that sent it.
    assert (requests["completed"], requests["statements"]) == (3 + 2 + 6, 3 * 2 + 2 + 6)
    assert requests["statements_per_request"] == pytest.approx(14 / 11, abs=1e-4)
    assert requests["in_flight"] == 0 and requests["inflight_peak"] == 6
    assert 0 < requests["inflight_mean"] < 6
    # One lease per session (and one for the health check), each at least its statements' sleep.
    assert pool["hold_time_ms"]["count"] == 3 + 1 + 6
    assert pool["hold_time_ms"]["p50"] >= SLEEP_S * 1000
    assert pool["hold_time_ms"]["max"] >= 2 * SLEEP_S * 1000
    assert pool["peak_checked_out"] == POOL_SIZE + MAX_OVERFLOW and pool["checked_out"] == 0
    assert pool["acquire_wait_ms"]["max"] >= 0.8 * SLEEP_S * 1000
    assert pool["timeouts"] == 0
    assert direct["hold_time_ms"]["count"] == 2 and direct["hold_time_ms"]["p50"] >= SLEEP_S * 1000
    assert direct["connections_opened"] == 0  # opened before the window, at start-up
    # The totals keep counting across the reset: the difference is exactly the window.
    after = body["totals"]
    assert after["requests"]["completed"] - before["requests"]["completed"] == 11
    assert after["requests"]["statements"] - before["requests"]["statements"] == 14
    leases = after["pools"]["sqlalchemy"]["leases"] - before["pools"]["sqlalchemy"]["leases"]
    assert leases == pool["hold_time_ms"]["count"]
    hold_s = after["pools"]["sqlalchemy"]["hold_s"] - before["pools"]["sqlalchemy"]["hold_s"]
    assert hold_s * 1000 == pytest.approx(pool["hold_time_ms"]["sum"], abs=0.01)
    assert after["pools"]["asyncpg"]["connections_opened"] >= 1
    # Prometheus says the same, read back by the parser observe uses.
    reading, missing = parse_metrics(metrics)
    assert missing == []
    assert reading.completed == after["requests"]["completed"]
    assert reading.pools["sqlalchemy"].leases == after["pools"]["sqlalchemy"]["leases"]
    assert reading.pools["sqlalchemy"].hold_sq_s2 == pytest.approx(
        after["pools"]["sqlalchemy"]["hold_sq_s2"]
    )
    assert reading_from_totals(after).pools["asyncpg"].leases == reading.pools["asyncpg"].leases


async def test_a_plain_starlette_app_with_only_an_engine(pg: Database) -> None:
    engine = create_async_engine(pg.sqlalchemy_url, pool_size=1, max_overflow=0)

    async def one(request: Request) -> PlainTextResponse:
        async with engine.connect() as conn:
            await conn.execute(text("select 1"))
            await conn.execute(text("select 2"))
        return PlainTextResponse("ok")

    app = Starlette(routes=[Route("/one", one)])
    instrument(app, engine=engine)
    try:
        async with serve(app) as client:
            for _ in range(2):
                assert (await client.get("/one")).text == "ok"
            body = (await client.get("/telemetry")).json()
            metrics = (await client.get("/metrics")).text
    finally:
        await engine.dispose()
    assert body["requests"]["completed"] == 2 and body["requests"]["statements_per_request"] == 2
    assert body["sqlalchemy"]["hold_time_ms"]["count"] == 2
    # The asyncpg pool was never given: it is absent from the totals and from Prometheus, so an
    # observer tells "not instrumented" from "not used".
    assert list(body["totals"]["pools"]) == ["sqlalchemy"]
    reading, missing = parse_metrics(metrics)
    assert list(reading.pools) == ["sqlalchemy"] and missing == []


def test_an_engine_is_instrumented_once() -> None:
    engine = create_async_engine("postgresql+asyncpg://u@127.0.0.1:1/x")
    instrument(FastAPI(), engine=engine)
    with pytest.raises(ValueError, match="instrumented already"):
        instrument(FastAPI(), engine=engine)
