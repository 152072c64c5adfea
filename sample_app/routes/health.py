"""Readiness: both database pools and the downstream, each under a short deadline."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from fastapi import APIRouter, Response, status
from sqlalchemy import text

from poolbench.instrumentation import PoolTelemetry

from ..deps import ResourcesDep, TelemetryDep
from ..schemas import HealthOut, PoolStatus

router = APIRouter(tags=["health"])

CHECK_TIMEOUT_S = 2.0


async def _check(probe: Callable[[], Awaitable[object]]) -> str:
    """Run one probe; return "ok" or the error class (no details leak to callers)."""
    try:
        async with asyncio.timeout(CHECK_TIMEOUT_S):
            await probe()
    except TimeoutError:
        return "timeout"
    except Exception as exc:  # a health check reports every failure instead of raising
        return f"error: {type(exc).__name__}"
    return "ok"


def _pool_status(pool: PoolTelemetry) -> PoolStatus:
    return PoolStatus(
        size=pool.pool_size, checked_out=pool.checked_out, overflow_in_use=pool.overflow_in_use
    )


@router.get("/health", responses={503: {"model": HealthOut}})
async def health(resources: ResourcesDep, telemetry: TelemetryDep, response: Response) -> HealthOut:
    """Check `select 1` on each pool and the downstream's /stats; 503 names what failed."""

    async def sqlalchemy_probe() -> None:
        async with resources.engine.connect() as conn:
            await conn.execute(text("select 1"))

    async def asyncpg_probe() -> None:
        async with resources.pg_pool.acquire(timeout_s=CHECK_TIMEOUT_S, rewrite=False) as conn:
            await conn.fetchval("select 1")

    async def downstream_probe() -> None:
        (await resources.http_client.get("/stats")).raise_for_status()

    probes = {
        "sqlalchemy": sqlalchemy_probe,
        "asyncpg": asyncpg_probe,
        "downstream": downstream_probe,
    }
    async with asyncio.TaskGroup() as group:
        tasks = {name: group.create_task(_check(probe)) for name, probe in probes.items()}
    checks = {name: task.result() for name, task in tasks.items()}
    healthy = all(result == "ok" for result in checks.values())
    if not healthy:
        response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    return HealthOut(
        status="ok" if healthy else "fail",
        checks=checks,
        pools={
            "sqlalchemy": _pool_status(telemetry.sqlalchemy),
            "asyncpg": _pool_status(telemetry.asyncpg),
        },
    )
