"""The app as the sweep runs it: a real uvicorn process, the seed CLI, concurrent start-ups."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time

import httpx
from poolbench.sample_app.db import create_schema
from sqlalchemy.ext.asyncio import create_async_engine

from poolbench.sweep.pg import Database, free_port
from tests.app.app_helpers import (
    ROOT,
    Downstream,
    create_database,
    fetch_val,
    stop_process,
    wait_http_ok,
)

# Fixtures (app_db, downstream(s), run_app) live in tests/app_fixtures.py.

CONNECTIONS = "select count(*) from pg_stat_activity where datname = $1"


async def test_uvicorn_serves_and_closes_connections_on_sigterm(
    pg: Database, downstream: Downstream
) -> None:
    name = "poolbench_app_process"
    dsn = await create_database(pg, name)
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": dsn.replace("postgresql://", "postgresql+asyncpg://", 1),
        "DOWNSTREAM_URL": downstream.url,
        "DB_POOL_SIZE": "2",
        "PG_POOL_MIN_SIZE": "2",
        "PG_POOL_MAX_SIZE": "3",
        "CREATE_SCHEMA": "true",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "poolbench.sample_app.main:app", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        await asyncio.to_thread(wait_http_ok, f"http://127.0.0.1:{port}/health", process)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            assert (await client.get("/health")).json()["status"] == "ok"
            assert (await client.get("/users/1")).status_code == 404  # empty schema made
        assert await fetch_val(pg.dsn, CONNECTIONS, name) >= 3
        process.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(process.wait, 15)
        stderr = process.stderr.read().decode() if process.stderr else ""
    finally:
        stop_process(process)
    # Recent uvicorn re-raises the signal after a graceful shutdown, so -SIGTERM is normal.
    assert code in (0, -signal.SIGTERM), stderr
    assert "Application shutdown complete" in stderr
    deadline = time.monotonic() + 5
    while (left := await fetch_val(pg.dsn, CONNECTIONS, name)) and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert left == 0


async def test_seed_cli_is_deterministic_and_repeatable(pg: Database) -> None:
    dsn = await create_database(pg, "poolbench_app_seed")
    url = dsn.replace("postgresql://", "postgresql+asyncpg://", 1)
    argv = [sys.executable, "-m", "poolbench.sample_app.seed", "--database-url", url]
    argv += ["--users", "1200", "--orders-per-user", "2", "--items-per-order", "3"]
    argv += ["--chunk-rows", "1000"]
    for extra in ([], [], ["--reset"]):
        result = await asyncio.to_thread(
            subprocess.run, argv + extra, cwd=ROOT, capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 0, result.stderr
        assert "seeded 1200 users, 2400 orders, 7200 items" in result.stdout
    assert await fetch_val(dsn, "select count(*) from users") == 1200
    assert await fetch_val(dsn, "select min(id) || '-' || max(id) from users") == "1-1200"
    assert await fetch_val(dsn, "select count(*) from orders") == 2400
    assert await fetch_val(dsn, "select count(*) from items") == 7200
    assert await fetch_val(dsn, "select user_id from orders where id = 2400") == 1200
    # The sequences moved past the seeded ids, so the app's inserts do not collide.
    assert await fetch_val(dsn, "select nextval(pg_get_serial_sequence('orders', 'id'))") == 2401


async def test_concurrent_start_ups_create_the_schema_once(pg: Database) -> None:
    dsn = await create_database(pg, "poolbench_app_schema")
    engines = [
        create_async_engine(dsn.replace("postgresql://", "postgresql+asyncpg://", 1))
        for _ in range(4)
    ]
    try:
        async with asyncio.TaskGroup() as group:
            for engine in engines:
                group.create_task(create_schema(engine))
    finally:
        for engine in engines:
            await engine.dispose()
    tables = await fetch_val(
        dsn,
        "select count(*) from pg_tables where schemaname = 'public' "
        "and tablename in ('users', 'orders', 'items')",
    )
    assert tables == 3


def test_importing_the_app_connects_to_nothing() -> None:
    # An address nobody listens on: an import-time connection attempt would fail or hang.
    env = {**os.environ, "DATABASE_URL": f"postgresql+asyncpg://nobody@127.0.0.1:{free_port()}/x"}
    code = "import poolbench.sample_app.main as m; print(type(m.app).__name__)"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "FastAPI"
