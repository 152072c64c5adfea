"""`instrument()` and what it returns; `poolbench.instrumentation` exports them lazily."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.applications import Starlette

from poolbench.instrumentation.engine import instrument_engine
from poolbench.instrumentation.middleware import InFlightMiddleware
from poolbench.instrumentation.routes import METRICS_PATH, TELEMETRY_PATH, telemetry_endpoints
from poolbench.instrumentation.telemetry import Telemetry

if TYPE_CHECKING:  # asyncpg is imported only by a service that wraps an asyncpg pool
    import asyncpg

    from poolbench.instrumentation.pgpool import ConnectionInit, InstrumentedPool


@dataclass(frozen=True)
class Instrumentation:
    """What `instrument` returns: the app's Telemetry and ways to add pools made later."""

    telemetry: Telemetry
    asyncpg_pool: InstrumentedPool | None = None

    def add_engine(self, engine: AsyncEngine | Engine) -> None:
        """Measure a SQLAlchemy engine's pool (one engine per app)."""
        instrument_engine(engine, self.telemetry.sqlalchemy)

    def wrap_asyncpg_pool(
        self,
        pool: asyncpg.Pool,
        *,
        acquire_timeout_s: float | None = None,
        rewrite: Callable[[str], str] | None = None,
    ) -> InstrumentedPool:
        """Wrap an asyncpg pool: lease connections through the result's `acquire()`."""
        from poolbench.instrumentation.pgpool import InstrumentedPool

        return InstrumentedPool(
            pool, self.telemetry.asyncpg, acquire_timeout_s=acquire_timeout_s, rewrite=rewrite
        )

    def asyncpg_init(self, init: ConnectionInit | None = None) -> ConnectionInit:
        """`init=` for asyncpg.create_pool (calling yours after) to count connections."""
        from poolbench.instrumentation.pgpool import counting_init

        return counting_init(self.telemetry.asyncpg, init)


def instrument(
    app: Starlette,
    *,
    engine: AsyncEngine | Engine | None = None,
    asyncpg_pool: asyncpg.Pool | None = None,
    acquire_timeout_s: float | None = None,
    uncounted_paths: Iterable[str] = (),
    telemetry_path: str | None = TELEMETRY_PATH,
    metrics_path: str | None = METRICS_PATH,
) -> Instrumentation:
    """Add pool and request telemetry, `/telemetry` and `/metrics` to a FastAPI/Starlette app.

    Call before the app starts serving. The in-flight middleware becomes the outermost one.
    Requests to the telemetry endpoints and to `uncounted_paths` (health checks) are not counted.
    """
    telemetry = Telemetry()
    endpoints = telemetry_endpoints(
        telemetry, telemetry_path=telemetry_path, metrics_path=metrics_path
    )
    uncounted = {path for _, path, _ in endpoints} | set(uncounted_paths)
    app.add_middleware(InFlightMiddleware, telemetry=telemetry.requests, uncounted=uncounted)
    for method, path, endpoint in endpoints:
        add_api_route = getattr(app, "add_api_route", None)
        if add_api_route is not None:  # FastAPI: documented in its OpenAPI schema
            add_api_route(path, endpoint, methods=[method], tags=["telemetry"])
        else:
            app.add_route(path, endpoint, methods=[method])
    probe = Instrumentation(telemetry)
    if engine is not None:
        probe.add_engine(engine)
    if asyncpg_pool is not None:
        wrapped = probe.wrap_asyncpg_pool(asyncpg_pool, acquire_timeout_s=acquire_timeout_s)
        probe = Instrumentation(telemetry, wrapped)
    app.state.poolbench = probe
    return probe
