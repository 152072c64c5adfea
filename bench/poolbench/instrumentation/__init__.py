"""Measure your own FastAPI or Starlette service as poolbench measures its sample app.

    from poolbench.instrumentation import instrument

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
    "AcquireTimeoutError": "poolbench.instrumentation.pgpool",
    "CountedConnection": "poolbench.instrumentation.pgpool",
    "InFlightMiddleware": "poolbench.instrumentation.middleware",
    "Instrumentation": "poolbench.instrumentation.service",
    "InstrumentedPool": "poolbench.instrumentation.pgpool",
    "PoolTelemetry": "poolbench.instrumentation.telemetry",
    "RequestActivity": "poolbench.instrumentation.context",
    "RequestPoolWait": "poolbench.instrumentation.context",
    "RequestTelemetry": "poolbench.instrumentation.telemetry",
    "Telemetry": "poolbench.instrumentation.telemetry",
    "WindowHistogram": "poolbench.instrumentation.window",
    "count_statement": "poolbench.instrumentation.context",
    "current_pool_wait": "poolbench.instrumentation.context",
    "current_request": "poolbench.instrumentation.context",
    "hold_connection": "poolbench.instrumentation.context",
    "instrument": "poolbench.instrumentation.service",
    "percentile": "poolbench.instrumentation.window",
    "release_connection": "poolbench.instrumentation.context",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


if TYPE_CHECKING:
    from poolbench.instrumentation.context import RequestActivity as RequestActivity
    from poolbench.instrumentation.context import RequestPoolWait as RequestPoolWait
    from poolbench.instrumentation.context import count_statement as count_statement
    from poolbench.instrumentation.context import current_pool_wait as current_pool_wait
    from poolbench.instrumentation.context import current_request as current_request
    from poolbench.instrumentation.context import hold_connection as hold_connection
    from poolbench.instrumentation.context import release_connection as release_connection
    from poolbench.instrumentation.middleware import InFlightMiddleware as InFlightMiddleware
    from poolbench.instrumentation.pgpool import AcquireTimeoutError as AcquireTimeoutError
    from poolbench.instrumentation.pgpool import CountedConnection as CountedConnection
    from poolbench.instrumentation.pgpool import InstrumentedPool as InstrumentedPool
    from poolbench.instrumentation.service import Instrumentation as Instrumentation
    from poolbench.instrumentation.service import instrument as instrument
    from poolbench.instrumentation.telemetry import PoolTelemetry as PoolTelemetry
    from poolbench.instrumentation.telemetry import RequestTelemetry as RequestTelemetry
    from poolbench.instrumentation.telemetry import Telemetry as Telemetry
    from poolbench.instrumentation.window import WindowHistogram as WindowHistogram
    from poolbench.instrumentation.window import percentile as percentile
