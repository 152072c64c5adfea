"""Engine, sessions and the direct asyncpg pool, with the telemetry hooks of both pools.

Everything here is created once per process by the app's lifespan; nothing in a request path
creates an engine or a pool.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from contextvars import ContextVar
from typing import Any

import asyncpg
from asyncpg.pool import PoolConnectionProxy
from sqlalchemy import event, exc, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.pool import AsyncAdaptedQueuePool, ConnectionPoolEntry, PoolProxiedConnection

from sample_app.config import Settings
from sample_app.models import Base
from sample_app.telemetry import PoolTelemetry

# Any constant works; every process creating the schema takes the same transaction-level lock,
# so concurrent start-ups serialise instead of racing on CREATE TABLE.
SCHEMA_LOCK_KEY = 0x706F_6F6C  # "pool"
SIM_LATENCY_OPTION = "poolbench_sim_latency_s"
PG_POOL_CLOSE_TIMEOUT_S = 10.0
_CHECKOUT_STARTED = "poolbench_checkout_started"

_in_checkout: ContextVar[bool] = ContextVar("poolbench_in_checkout", default=False)


class PgPoolTimeoutError(Exception):
    """No connection from the asyncpg pool within PG_POOL_ACQUIRE_TIMEOUT_S."""


class _InstrumentedQueuePool(AsyncAdaptedQueuePool):
    """AsyncAdaptedQueuePool that times every checkout; SQLAlchemy has no acquire-wait timer."""

    telemetry: PoolTelemetry

    def _do_get(self) -> ConnectionPoolEntry:
        # QueuePool._do_get calls itself again on some races; time only the outer call.
        if _in_checkout.get():
            return super()._do_get()
        token = _in_checkout.set(True)
        started = time.perf_counter()
        try:
            entry = super()._do_get()
        except exc.TimeoutError:
            self.telemetry.record_acquire(time.perf_counter() - started, timed_out=True)
            raise
        finally:
            _in_checkout.reset(token)
        # Includes opening a connection when the pool grows: the request waited for that too.
        self.telemetry.record_acquire(time.perf_counter() - started)
        return entry


def _pool_class(telemetry: PoolTelemetry) -> type[_InstrumentedQueuePool]:
    # A subclass per engine rather than an attribute set afterwards: `engine.dispose()` rebuilds
    # the pool through `self.__class__`, which keeps the binding.
    # SQLAlchemy names a pool's logger after its class's module: keep it under "sqlalchemy.pool"
    # so pool log lines follow SQLAlchemy's logging config, not the app's INFO level.
    namespace = {"telemetry": telemetry, "__module__": "sqlalchemy.pool"}
    return type("InstrumentedQueuePool", (_InstrumentedQueuePool,), namespace)


def _instrument_pool_events(engine: AsyncEngine, telemetry: PoolTelemetry) -> None:
    """Count connections and time leases with pool events (they survive engine.dispose())."""
    target = engine.sync_engine

    @event.listens_for(target, "connect")
    def _connect(dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
        telemetry.record_opened()

    @event.listens_for(target, "close")
    def _close(dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
        telemetry.record_closed()

    @event.listens_for(target, "close_detached")
    def _close_detached(dbapi_connection: Any) -> None:
        telemetry.record_closed()

    @event.listens_for(target, "checkout")
    def _checkout(
        dbapi_connection: Any, record: ConnectionPoolEntry, proxy: PoolProxiedConnection
    ) -> None:
        record.info[_CHECKOUT_STARTED] = time.perf_counter()
        telemetry.record_checkout()

    @event.listens_for(target, "checkin")
    def _checkin(dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
        # Popping pairs each checkin with the checkout that set the key, even after invalidation.
        started = record.info.pop(_CHECKOUT_STARTED, None)
        if started is not None:
            # Fires before the connection goes back to the queue, so the count never overlaps
            # with the next checkout of the same connection.
            telemetry.record_checkin()
            telemetry.record_hold(time.perf_counter() - started)


def _install_sim_latency(engine: AsyncEngine) -> None:
    """Run `pg_sleep` before every statement on connections carrying the latency option."""

    @event.listens_for(engine.sync_engine, "before_execute")
    def _sleep_first(
        conn: Connection,
        clauseelement: Any,
        multiparams: Any,
        params: Any,
        execution_options: Mapping[str, Any],
    ) -> None:
        seconds = execution_options.get(SIM_LATENCY_OPTION, 0)
        if seconds > 0:
            # Same connection, same transaction: the lease lasts at least the simulated time.
            # A float literal, not a parameter: one constant statement for the statement cache.
            conn.exec_driver_sql(
                f"select pg_sleep({float(seconds):.6f})",
                execution_options={SIM_LATENCY_OPTION: 0},
            )


def build_engine(settings: Settings, telemetry: PoolTelemetry) -> AsyncEngine:
    """Create the instrumented SQLAlchemy async engine from the pool settings."""
    engine = create_async_engine(
        settings.database_url,
        poolclass=_pool_class(telemetry),
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        pool_timeout=settings.db_pool_timeout_s,
        pool_recycle=settings.db_pool_recycle_s,
        pool_pre_ping=settings.db_pool_pre_ping,
        echo=settings.db_echo,
    )
    _instrument_pool_events(engine, telemetry)
    _install_sim_latency(engine)
    return engine


def create_sessionmaker(
    engine: AsyncEngine, settings: Settings
) -> async_sessionmaker[AsyncSession]:
    """Return the request-path session factory (simulated latency applies to its sessions)."""
    bind = engine
    if settings.sim_query_latency_ms > 0:
        # Only request sessions sleep; start-up, health checks and the seed do not.
        bind = engine.execution_options(
            **{SIM_LATENCY_OPTION: settings.sim_query_latency_ms / 1000}
        )
    # expire_on_commit=False: objects stay readable after commit without a hidden reload.
    return async_sessionmaker(bind, expire_on_commit=False)


async def create_schema(engine: AsyncEngine) -> None:
    """Create missing tables; safe when several app processes start at once."""
    async with engine.begin() as conn:
        await conn.execute(text("select pg_advisory_xact_lock(:key)"), {"key": SCHEMA_LOCK_KEY})
        await conn.run_sync(Base.metadata.create_all)


async def max_user_id(engine: AsyncEngine) -> int:
    """Return the highest user id (0 when there are no users or no table yet)."""
    async with engine.connect() as conn:
        exists = await conn.scalar(text("select to_regclass('users') is not null"))
        if not exists:
            return 0
        return int(await conn.scalar(text("select coalesce(max(id), 0) from users")) or 0)


class PgPool:
    """The direct asyncpg pool, with acquire wait, lease time and timeouts recorded."""

    def __init__(
        self, pool: asyncpg.Pool, telemetry: PoolTelemetry, *, acquire_timeout_s: float
    ) -> None:
        self._pool = pool
        self.telemetry = telemetry
        self.acquire_timeout_s = acquire_timeout_s

    @asynccontextmanager
    async def acquire(
        self, timeout_s: float | None = None
    ) -> AsyncIterator[PoolConnectionProxy[asyncpg.Record]]:
        """Lease a connection; raise PgPoolTimeoutError when none frees up in time."""
        timeout = self.acquire_timeout_s if timeout_s is None else timeout_s
        started = time.perf_counter()
        try:
            conn = await self._pool.acquire(timeout=timeout)
        except TimeoutError:
            self.telemetry.record_acquire(time.perf_counter() - started, timed_out=True)
            raise PgPoolTimeoutError(f"no asyncpg connection within {timeout:g} s") from None
        acquired = time.perf_counter()
        self.telemetry.record_acquire(acquired - started)
        self.telemetry.record_checkout()
        try:
            yield conn
        finally:
            # Uncount first: release() requeues the connection and a waiter may take it before
            # this task resumes, which would show more checked out than max_size.
            self.telemetry.record_checkin()
            try:
                # asyncpg shields the release itself, so a cancelled request still returns it.
                await self._pool.release(conn)
            finally:
                # The lease includes release's reset, as SQLAlchemy's includes its rollback.
                self.telemetry.record_hold(time.perf_counter() - acquired)

    async def close(self) -> None:
        """Close gracefully; terminate connections a stuck request still holds."""
        try:
            async with asyncio.timeout(PG_POOL_CLOSE_TIMEOUT_S):
                await self._pool.close()
        except TimeoutError:
            self._pool.terminate()


async def create_pg_pool(settings: Settings, telemetry: PoolTelemetry) -> PgPool:
    """Create the direct asyncpg pool from the PG_POOL_* settings."""

    def _closed(conn: object) -> None:
        telemetry.record_closed()

    async def _init(conn: asyncpg.Connection) -> None:
        telemetry.record_opened()
        conn.add_termination_listener(_closed)

    pool = await asyncpg.create_pool(
        settings.asyncpg_dsn,
        min_size=settings.pg_pool_min_size,
        max_size=settings.pg_pool_max_size,
        max_inactive_connection_lifetime=settings.pg_pool_max_inactive_s,
        init=_init,
    )
    return PgPool(pool, telemetry, acquire_timeout_s=settings.pg_pool_acquire_timeout_s)
