"""Request dependencies as `Annotated` aliases, handing out what the lifespan created.

Every dependency is `async def`, even those that never await: FastAPI runs a plain `def`
dependency in the threadpool, a thread hop per dependency per request that cost more CPU than
the query it served (issue 12). Those that need the lifespan's resources read them through
`app_resources` rather than depending on `get_resources`, so a request solves one dependency
per parameter, not a chain.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated

import httpx
from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from poolbench.instrumentation import InstrumentedPool, Telemetry

from .config import Settings
from .telemetry import HttpTelemetry


@dataclass
class UserIds:
    """Highest seeded user id, read at start-up (random reads draw ids in 1..high)."""

    high: int = 0


@dataclass(frozen=True, kw_only=True)
class Resources:
    """Process-wide clients and pools, made once by the lifespan and stored on app.state."""

    engine: AsyncEngine
    sessionmaker: async_sessionmaker[AsyncSession]
    pg_pool: InstrumentedPool
    http_client: httpx.AsyncClient
    http_semaphore: asyncio.Semaphore
    user_ids: UserIds


def app_resources(request: Request) -> Resources:
    """Return the lifespan's resources (an error if the lifespan has not run)."""
    resources = getattr(request.app.state, "resources", None)
    if not isinstance(resources, Resources):
        raise RuntimeError("app resources missing: the lifespan has not run")
    return resources


async def get_resources(request: Request) -> Resources:
    """Return the lifespan's resources (an error if the lifespan has not run)."""
    return app_resources(request)


async def get_settings(request: Request) -> Settings:
    """Return the settings this app was built with."""
    settings: Settings = request.app.state.settings
    return settings


async def get_telemetry(request: Request) -> Telemetry:
    """Return this app's telemetry."""
    telemetry: Telemetry = request.app.state.telemetry
    return telemetry


async def get_http_telemetry(request: Request) -> HttpTelemetry:
    """Return this app's downstream-call telemetry (the `http` section of /telemetry)."""
    http: HttpTelemetry = request.app.state.http_telemetry
    return http


ResourcesDep = Annotated[Resources, Depends(get_resources)]


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    """Yield one session per request: commit on success, roll back on error, always close."""
    async with app_resources(request).sessionmaker() as session:
        try:
            yield session
            await session.commit()
        except Exception:
            await session.rollback()
            raise
        # Cancellation (client gone, deadline) skips both branches on purpose: closing the
        # session in `async with` rolls back and returns the connection, shielded.


async def get_http_client(request: Request) -> httpx.AsyncClient:
    """Return the shared downstream client."""
    return app_resources(request).http_client


async def get_http_semaphore(request: Request) -> asyncio.Semaphore:
    """Return the semaphore bounding downstream calls in flight (HTTP_CONCURRENCY_LIMIT)."""
    return app_resources(request).http_semaphore


async def get_pg_pool(request: Request) -> InstrumentedPool:
    """Return the direct asyncpg pool."""
    return app_resources(request).pg_pool


# scope="function": commit and release the connection when the endpoint returns, before the
# response is sent, so a failed commit still becomes an error response and the lease does not
# include sending the body to a slow client.
SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]
SettingsDep = Annotated[Settings, Depends(get_settings)]
TelemetryDep = Annotated[Telemetry, Depends(get_telemetry)]
HttpTelemetryDep = Annotated[HttpTelemetry, Depends(get_http_telemetry)]
HttpClientDep = Annotated[httpx.AsyncClient, Depends(get_http_client)]
HttpSemaphoreDep = Annotated[asyncio.Semaphore, Depends(get_http_semaphore)]
PgPoolDep = Annotated[InstrumentedPool, Depends(get_pg_pool)]
