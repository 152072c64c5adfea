"""Fixtures of the sample app tests, loaded with `pytest_plugins = ["tests.app_fixtures"]`."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from poolbench.sample_app.config import Settings
from poolbench.sample_app.main import create_app
from poolbench.sample_app.seed import seed

from poolbench.sweep.pg import Database
from tests.app.app_helpers import (
    APP_DB,
    SEED_ITEMS_PER_ORDER,
    SEED_ORDERS_PER_USER,
    SEED_USERS,
    AppDatabase,
    AppRunner,
    Downstream,
    create_database,
)


@pytest.fixture(scope="session")
async def app_db(pg: Database) -> AppDatabase:
    """A database of its own (other suites may reset theirs), seeded once."""
    db = AppDatabase(await create_database(pg, APP_DB))
    await seed(
        db.sqlalchemy_url,
        users=SEED_USERS,
        orders_per_user=SEED_ORDERS_PER_USER,
        items_per_order=SEED_ITEMS_PER_ORDER,
        reset=True,
    )
    return db


@pytest.fixture(scope="session")
def downstreams() -> Iterator[Callable[[float], Downstream]]:
    """Start stubs on demand, one per latency, reused for the session and always stopped."""
    running: dict[float, Downstream] = {}

    def get(latency_ms: float) -> Downstream:
        if latency_ms not in running:
            running[latency_ms] = Downstream(latency_ms)
        stub = running[latency_ms]
        stub.reset()
        return stub

    try:
        yield get
    finally:
        for stub in running.values():
            stub.stop()


@pytest.fixture
def downstream(downstreams: Callable[[float], Downstream]) -> Downstream:
    """A fast downstream (20 ms), stats reset."""
    return downstreams(20)


@pytest.fixture
def run_app(app_db: AppDatabase, downstream: Downstream) -> AppRunner:
    """Return `run_app(**settings)`: an async context yielding (app, client), lifespan run."""

    @asynccontextmanager
    async def runner(
        *,
        prepare: Callable[[FastAPI], None] | None = None,
        raise_app_exceptions: bool = True,
        **overrides: Any,
    ) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
        values: dict[str, Any] = {
            "database_url": app_db.sqlalchemy_url,
            "downstream_url": downstream.url,
            "create_schema": False,
            **overrides,
        }
        app = create_app(Settings(_env_file=None, **values))
        if prepare:
            prepare(app)
        transport = httpx.ASGITransport(app, raise_app_exceptions=raise_app_exceptions)
        async with app.router.lifespan_context(app):
            async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
                yield app, client

    return runner
