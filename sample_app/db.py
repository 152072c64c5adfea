"""Engine, sessions and the direct asyncpg pool, with the telemetry hooks of both pools.

Everything here is created once per process by the app's lifespan; nothing in a request path
creates an engine or a pool. Both paths count every statement they send for the current
request and fold the simulated latency into the statement itself (`fold_sim_latency`).
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from contextvars import ContextVar
from functools import lru_cache
from typing import Any

import asyncpg
from asyncpg.pool import PoolConnectionProxy
from sqlalchemy import event, exc, text
from sqlalchemy.engine import Connection, ExecutionContext
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.pool import AsyncAdaptedQueuePool, ConnectionPoolEntry, PoolProxiedConnection

from sample_app.config import Settings
from sample_app.models import Base
from sample_app.telemetry import (
    PoolTelemetry,
    count_statement,
    hold_connection,
    release_connection,
)

# Any constant works; every process creating the schema takes the same transaction-level lock,
# so concurrent start-ups serialise instead of racing on CREATE TABLE.
SCHEMA_LOCK_KEY = 0x706F_6F6C  # "pool"
SIM_LATENCY_OPTION = "poolbench_sim_latency_s"
PG_POOL_CLOSE_TIMEOUT_S = 10.0
_CHECKOUT_STARTED = "poolbench_checkout_started"
_CHECKOUT_REQUEST = "poolbench_checkout_request"

_in_checkout: ContextVar[bool] = ContextVar("poolbench_in_checkout", default=False)


class PgPoolTimeoutError(Exception):
    """No connection from the asyncpg pool within PG_POOL_ACQUIRE_TIMEOUT_S."""


# What requests see while Postgres is down or going away, through either pool (seen against a
# stopped server): a refused connect is a bare OSError from asyncpg.connect; a leased connection
# the server closed is ConnectionDoesNotExistError (SQLSTATE class 08) with AdminShutdownError as
# its cause; a server starting up or shutting down refuses new sessions with 57P03. Not every
# 57xxx: 57014 is a cancelled statement, a query error.
_CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.CannotConnectNowError,
)


def is_connection_error(error: BaseException) -> bool:
    """Tell whether `error` means the database is unreachable or dropped the connection."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, exc.DBAPIError) and current.connection_invalidated:
            return True
        if isinstance(current, _CONNECTION_ERRORS):
            return True
        # asyncpg's own "closed" error is a plain InterfaceError, which also covers misuse (two
        # operations at once); SQLAlchemy's asyncpg dialect tells them apart by this message.
        if isinstance(current, asyncpg.InterfaceError) and "connection is closed" in str(current):
            return True
        # Only explicit causes: SQLAlchemy and its asyncpg adapter raise `from` the driver's
        # error; an implicit context may be an unrelated error raised while handling another.
        current = current.__cause__
    return False


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
        # Pool events run in SQLAlchemy's greenlet, which shares the awaiting task's context,
        # so current_request here is the request that checks the connection out.
        record.info[_CHECKOUT_REQUEST] = hold_connection()
        telemetry.record_checkout()

    @event.listens_for(target, "checkin")
    def _checkin(dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
        # Popping pairs each checkin with the checkout that set the key, even after invalidation.
        started = record.info.pop(_CHECKOUT_STARTED, None)
        release_connection(record.info.pop(_CHECKOUT_REQUEST, None))
        if started is not None:
            # Fires before the connection goes back to the queue, so the count never overlaps
            # with the next checkout of the same connection.
            telemetry.record_checkin()
            telemetry.record_hold(time.perf_counter() - started)


# Statements whose first keyword is one of these return rows, or may with RETURNING.
_READS = frozenset({"select", "with", "values", "table"})
_WRITES = frozenset({"insert", "update", "delete"})
_FIRST_KEYWORD = re.compile(r"[\s(]*([A-Za-z]+)")
_RETURNING = re.compile(r"\bRETURNING\b", re.IGNORECASE)
# The newline after the statement ends a trailing `--` comment before the closing parenthesis.
_SIM_ROWS = (
    "WITH _poolbench_sim AS MATERIALIZED (SELECT pg_sleep({seconds:.6f})), "
    "_poolbench_q AS MATERIALIZED ({statement}\n) "
    "SELECT * FROM _poolbench_q WHERE EXISTS (SELECT FROM _poolbench_sim)"
)
_SIM_NO_ROWS = (
    "WITH _poolbench_sim AS MATERIALIZED (SELECT pg_sleep({seconds:.6f})), "
    "_poolbench_q AS MATERIALIZED ({statement}\nRETURNING NULL) "
    "SELECT FROM _poolbench_q WHERE EXISTS (SELECT FROM _poolbench_sim)"
)


@lru_cache(maxsize=4096)
def fold_sim_latency(statement: str, seconds: float) -> str:
    """Return `statement` rewritten to sleep `seconds` once, inside itself: one round trip.

    The statement becomes a CTE next to `pg_sleep` in another, and the outer query reads it
    back gated by `WHERE EXISTS (SELECT FROM <sleep CTE>)`. A MATERIALIZED CTE is computed at
    most once per execution; the uncorrelated EXISTS is a one-time filter evaluated before the
    first row. So the sleep runs exactly once per statement, never per row, also when no row
    comes back (the statement's CTE is MATERIALIZED too, so a statement the planner proves
    empty cannot drop the gate). `SELECT *` returns the rows in their order with their column
    names and types. A write without RETURNING gets `RETURNING NULL` and an empty select list:
    no columns, and the command tag `SELECT n` carries the rows affected (the driver's
    rowcount). Other statements (utility, DDL) are returned unchanged. The latency is a
    constant literal, so the text is the same on every call and prepared-statement caches keep
    hitting; this function's cache keeps the rewrite off the hot path.
    """
    match = _FIRST_KEYWORD.match(statement)
    keyword = match.group(1).lower() if match else ""
    body = statement.rstrip().removesuffix(";")
    if keyword in _READS or (keyword in _WRITES and _RETURNING.search(statement)):
        return _SIM_ROWS.format(seconds=seconds, statement=body)
    if keyword in _WRITES:
        return _SIM_NO_ROWS.format(seconds=seconds, statement=body)
    return statement


def _count_statements(engine: AsyncEngine) -> None:
    """Attribute every statement sent to the request that sent it (see count_statement).

    `before_cursor_execute` fires once per statement handed to the driver, including each
    batch of an insertmanyvalues INSERT; transaction control (BEGIN, COMMIT, ROLLBACK) and
    pool_pre_ping's ping go through the driver directly, so they are not the handler's
    statements and are not counted.
    """

    @event.listens_for(engine.sync_engine, "before_cursor_execute")
    def _count(
        conn: Connection,
        cursor: Any,
        statement: str,
        parameters: Any,
        context: ExecutionContext | None,
        executemany: bool,
    ) -> None:
        count_statement()


def _install_sim_latency(engine: AsyncEngine) -> None:
    """Fold `pg_sleep` into every statement on connections carrying the latency option."""

    @event.listens_for(engine.sync_engine, "before_cursor_execute", retval=True)
    def _fold(
        conn: Connection,
        cursor: Any,
        statement: str,
        parameters: Any,
        context: ExecutionContext | None,
        executemany: bool,
    ) -> tuple[str, Any]:
        # No context only for the dialect's own special-case statements (sequences, defaults).
        options = conn.get_execution_options() if context is None else context.execution_options
        seconds = options.get(SIM_LATENCY_OPTION, 0)
        if seconds > 0:
            # Same statement, same connection: the lease lasts at least the simulated time.
            statement = fold_sim_latency(statement, float(seconds))
        return statement, parameters


def unique_statement_name() -> str:
    """A prepared statement name no other transaction on a pooled server connection has used."""
    return f"__asyncpg_{uuid.uuid4()}__"


def _connect_args(settings: Settings) -> dict[str, Any]:
    """asyncpg connect arguments: none, or what transaction pooling (PgBouncer) needs."""
    if settings.db_prepared_statements:
        return {}
    return {
        "statement_cache_size": 0,
        "prepared_statement_cache_size": 0,
        "prepared_statement_name_func": unique_statement_name,
    }


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
        connect_args=_connect_args(settings),
    )
    _instrument_pool_events(engine, telemetry)
    _count_statements(engine)
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


class PgConnection:
    """A leased asyncpg connection as handlers see it: one call is one statement, one round trip.

    Every call counts as a statement of the current request and, on a request lease, carries
    the simulated latency folded into the statement (`fold_sim_latency`). Counting here rather
    than with asyncpg's query logger: the logger also sees the pool's reset query on release
    and misses prepared statements.
    """

    __slots__ = ("_conn", "_sim_latency_s")

    def __init__(self, conn: PoolConnectionProxy[asyncpg.Record], sim_latency_s: float) -> None:
        self._conn = conn
        self._sim_latency_s = sim_latency_s

    def _statement(self, query: str) -> str:
        count_statement()
        if self._sim_latency_s > 0:
            return fold_sim_latency(query, self._sim_latency_s)
        return query

    async def fetch(self, query: str, *args: object) -> list[asyncpg.Record]:
        """Run the query; return every row."""
        return await self._conn.fetch(self._statement(query), *args)

    async def fetchrow(self, query: str, *args: object) -> asyncpg.Record | None:
        """Run the query; return the first row or None."""
        return await self._conn.fetchrow(self._statement(query), *args)

    async def fetchval(self, query: str, *args: object) -> Any:
        """Run the query; return the first column of the first row, or None."""
        return await self._conn.fetchval(self._statement(query), *args)


class PgPool:
    """The direct asyncpg pool, with acquire wait, lease time and timeouts recorded."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        telemetry: PoolTelemetry,
        *,
        acquire_timeout_s: float,
        sim_latency_s: float = 0.0,
    ) -> None:
        self._pool = pool
        self.telemetry = telemetry
        self.acquire_timeout_s = acquire_timeout_s
        self.sim_latency_s = sim_latency_s

    @asynccontextmanager
    async def acquire(
        self, timeout_s: float | None = None, *, simulate_latency: bool = True
    ) -> AsyncIterator[PgConnection]:
        """Lease a connection; raise PgPoolTimeoutError when none frees up in time.

        `simulate_latency=False` for probes (health checks): only request queries sleep.
        """
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
        holder = hold_connection()
        try:
            yield PgConnection(conn, self.sim_latency_s if simulate_latency else 0.0)
        finally:
            release_connection(holder)
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
        statement_cache_size=0 if not settings.db_prepared_statements else 100,
    )
    return PgPool(
        pool,
        telemetry,
        acquire_timeout_s=settings.pg_pool_acquire_timeout_s,
        sim_latency_s=settings.sim_query_latency_ms / 1000,
    )
