"""Measure your own FastAPI or Starlette service as poolbench measures its sample app.

    from bench.instrumentation import instrument

    app = FastAPI()
    engine = create_async_engine(url, pool_size=10)
    probe = instrument(app, engine=engine, uncounted_paths=["/health"])

    @asynccontextmanager
    async def lifespan(app):  # an asyncpg pool is made later: wrap it then
        raw = await asyncpg.create_pool(dsn, init=probe.asyncpg_init())
        app.state.pg = probe.wrap_asyncpg_pool(raw)  # use app.state.pg.acquire()
        ...

This adds the checkout timer, lease (hold) times, requests in flight, statements per request,
`GET /telemetry` (+ `POST /telemetry/reset`, `GET /telemetry/totals`) and Prometheus
`GET /metrics`. Only starlette, sqlalchemy, asyncpg and prometheus_client are imported: this
runs inside services. `poolbench observe URL` turns the figures into pool sizes.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# Names are imported on first use: `poolbench observe` reads `readings` without loading
# SQLAlchemy, asyncpg and Starlette, which `instrument` needs.
_EXPORTS = {
    "AcquireTimeoutError": "bench.instrumentation.pgpool",
    "CountedConnection": "bench.instrumentation.pgpool",
    "InFlightMiddleware": "bench.instrumentation.middleware",
    "Instrumentation": "bench.instrumentation.service",
    "InstrumentedPool": "bench.instrumentation.pgpool",
    "PoolTelemetry": "bench.instrumentation.telemetry",
    "RequestActivity": "bench.instrumentation.context",
    "RequestPoolWait": "bench.instrumentation.context",
    "RequestTelemetry": "bench.instrumentation.telemetry",
    "Telemetry": "bench.instrumentation.telemetry",
    "WindowHistogram": "bench.instrumentation.window",
    "count_statement": "bench.instrumentation.context",
    "current_pool_wait": "bench.instrumentation.context",
    "current_request": "bench.instrumentation.context",
    "hold_connection": "bench.instrumentation.context",
    "instrument": "bench.instrumentation.service",
    "percentile": "bench.instrumentation.window",
    "release_connection": "bench.instrumentation.context",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


if TYPE_CHECKING:
    from bench.instrumentation.context import RequestActivity as RequestActivity
    from bench.instrumentation.context import RequestPoolWait as RequestPoolWait
    from bench.instrumentation.context import count_statement as count_statement
    from bench.instrumentation.context import current_pool_wait as current_pool_wait
    from bench.instrumentation.context import current_request as current_request
    from bench.instrumentation.context import hold_connection as hold_connection
    from bench.instrumentation.context import release_connection as release_connection
    from bench.instrumentation.middleware import InFlightMiddleware as InFlightMiddleware
    from bench.instrumentation.pgpool import AcquireTimeoutError as AcquireTimeoutError
    from bench.instrumentation.pgpool import CountedConnection as CountedConnection
    from bench.instrumentation.pgpool import InstrumentedPool as InstrumentedPool
    from bench.instrumentation.service import Instrumentation as Instrumentation
    from bench.instrumentation.service import instrument as instrument
    from bench.instrumentation.telemetry import PoolTelemetry as PoolTelemetry
    from bench.instrumentation.telemetry import RequestTelemetry as RequestTelemetry
    from bench.instrumentation.telemetry import Telemetry as Telemetry
    from bench.instrumentation.window import WindowHistogram as WindowHistogram
    from bench.instrumentation.window import percentile as percentile
