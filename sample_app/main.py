"""App factory and lifespan: `uvicorn poolbench.sample_app.main:app`.

Importing this module builds the app but connects to nothing; engines, pools and the HTTP
client are created by the lifespan and closed when it ends.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import httpx
from fastapi import FastAPI
from pydantic import ValidationError
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware

from poolbench.instrumentation import Instrumentation, instrument

from .config import Settings, get_settings
from .db import (
    build_engine,
    create_pg_pool,
    create_schema,
    create_sessionmaker,
    max_user_id,
)
from .deps import Resources, UserIds
from .middleware import (
    AccessLogMiddleware,
    RequestIDMiddleware,
    TimingMiddleware,
    UnhandledErrorMiddleware,
)
from .problems import REQUEST_ID_HEADER, install_problem_handlers
from .routes import ROUTERS, UNCOUNTED_PATHS
from .telemetry import HttpTelemetry

logger = logging.getLogger("sample_app")


def configure_logging(settings: Settings) -> None:
    """Set the app's log level; give it a handler only when nobody configured logging."""
    logger.setLevel(settings.log_level)
    if not logger.handlers and not logging.getLogger().handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
        logger.addHandler(handler)
    # Our access line (ACCESS_LOG=true) replaces uvicorn's; two lines per request would double
    # the logging cost that benchmarks switch it off for.
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)


def _http_client(settings: Settings) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=str(settings.downstream_url),
        limits=httpx.Limits(
            max_connections=settings.http_max_connections,
            max_keepalive_connections=settings.http_max_keepalive,
        ),
        timeout=httpx.Timeout(settings.http_timeout_s),
    )


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Create every pool and client once; close them all on shutdown, even after a failure."""
    settings: Settings = app.state.settings
    probe: Instrumentation = app.state.poolbench
    configure_logging(settings)
    async with AsyncExitStack() as stack:
        engine = build_engine(settings, probe)
        stack.push_async_callback(engine.dispose)
        if settings.create_schema:
            await create_schema(engine)
        pg_pool = await create_pg_pool(settings, probe)
        stack.push_async_callback(pg_pool.close)
        http_client = await stack.enter_async_context(_http_client(settings))
        app.state.resources = Resources(
            engine=engine,
            sessionmaker=create_sessionmaker(engine, settings),
            pg_pool=pg_pool,
            http_client=http_client,
            http_semaphore=asyncio.Semaphore(settings.http_concurrency_limit),
            user_ids=UserIds(high=await max_user_id(engine)),
        )
        logger.info(
            "started: db pool %d+%d, asyncpg pool %d..%d, http limit %d, sim latency %g ms",
            settings.db_pool_size,
            settings.db_max_overflow,
            settings.pg_pool_min_size,
            settings.pg_pool_max_size,
            settings.http_concurrency_limit,
            settings.sim_query_latency_ms,
        )
        try:
            yield
        finally:
            del app.state.resources
            logger.info("stopping: closing pools and clients")


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app for these settings (default: from the environment); connect nothing yet."""
    settings = settings or get_settings()
    app = FastAPI(
        title="poolbench sample app",
        lifespan=lifespan,
        # Outermost first (instrument() adds in-flight counting outside all of these). CORS
        # answers preflights before anything else runs; the request id wraps timing and logging
        # so both can use it; an unhandled error becomes a response innermost, so every other
        # layer sees a response.
        middleware=[
            Middleware(
                CORSMiddleware,
                allow_origins=settings.cors_origins,
                allow_methods=["GET", "POST"],
                allow_headers=["Content-Type", REQUEST_ID_HEADER],
                expose_headers=[REQUEST_ID_HEADER, "Server-Timing", "Retry-After"],
            ),
            Middleware(RequestIDMiddleware),
            Middleware(TimingMiddleware),
            *([Middleware(AccessLogMiddleware)] if settings.access_log else []),
            Middleware(UnhandledErrorMiddleware),
        ],
    )
    app.state.settings = settings
    install_problem_handlers(app)
    for router in ROUTERS:
        app.include_router(router)
    # The same helper any service uses: pools, requests, /telemetry and /metrics. The engine and
    # the asyncpg pool are added by the lifespan, which makes them.
    probe = instrument(app, uncounted_paths=UNCOUNTED_PATHS)
    http = HttpTelemetry(limit=settings.http_concurrency_limit, registry=probe.telemetry.registry)
    probe.telemetry.add_section("http", http)
    app.state.telemetry = probe.telemetry
    app.state.http_telemetry = http
    return app


def settings_error_message(error: ValidationError) -> str:
    """Render a settings error as one line per bad variable, named as in the environment."""
    lines = ["invalid settings:"]
    for item in error.errors():
        name = "_".join(str(part) for part in item["loc"]).upper() or "settings"
        given = f" (got {item['input']!r})" if item["loc"] else ""
        lines.append(f"  {name}: {item['msg']}{given}")
    return "\n".join(lines)


def _app_from_environment() -> FastAPI:
    try:
        settings = get_settings()
    except ValidationError as error:
        # SystemExit with a message: the server process prints it and exits 1, no traceback.
        raise SystemExit(settings_error_message(error)) from None
    return create_app(settings)


app = _app_from_environment()
