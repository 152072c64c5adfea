"""Engine, sessions and the direct asyncpg pool, measured by `poolbench.instrumentation`.

Everything here is created once per process by the app's lifespan; nothing in a request path
creates an engine or a pool. The pools' telemetry (checkout timer, leases, statements per request)
is the instrumentation helper's; what is the sample app's own is the simulated latency folded
into each statement (`fold_sim_latency`) on both paths.
"""

from __future__ import annotations

import re
import uuid
from functools import lru_cache, partial
from typing import Any

import asyncpg
from sqlalchemy import event, exc, text
from sqlalchemy.engine import Connection, ExecutionContext
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from poolbench.instrumentation import AcquireTimeoutError, Instrumentation, InstrumentedPool

from .config import Settings
from .models import Base

# Any constant works; every process creating the schema takes the same transaction-level lock,
# so concurrent start-ups serialise instead of racing on CREATE TABLE.
SCHEMA_LOCK_KEY = 0x706F_6F6C  # "pool"
SIM_LATENCY_OPTION = "poolbench_sim_latency_s"

# No connection from the asyncpg pool within PG_POOL_ACQUIRE_TIMEOUT_S.
PgPoolTimeoutError = AcquireTimeoutError


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


def build_engine(settings: Settings, probe: Instrumentation) -> AsyncEngine:
    """Create the SQLAlchemy async engine from the pool settings, measured by `probe`."""
    engine = create_async_engine(
        settings.database_url,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        pool_timeout=settings.db_pool_timeout_s,
        pool_recycle=settings.db_pool_recycle_s,
        pool_pre_ping=settings.db_pool_pre_ping,
        echo=settings.db_echo,
        connect_args=_connect_args(settings),
    )
    probe.add_engine(engine)
    if settings.sim_query_latency_ms > 0:
        # Only then do request sessions carry the option (create_sessionmaker): without
        # latency the listener would be one more call per statement that changes nothing.
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


async def create_pg_pool(settings: Settings, probe: Instrumentation) -> InstrumentedPool:
    """Create the direct asyncpg pool from the PG_POOL_* settings, measured by `probe`.

    Request leases carry the simulated latency folded into each statement; `acquire(
    rewrite=False)` (health checks) sends statements unchanged.
    """
    pool = await asyncpg.create_pool(
        settings.asyncpg_dsn,
        min_size=settings.pg_pool_min_size,
        max_size=settings.pg_pool_max_size,
        max_inactive_connection_lifetime=settings.pg_pool_max_inactive_s,
        init=probe.asyncpg_init(),
        statement_cache_size=0 if not settings.db_prepared_statements else 100,
    )
    seconds = settings.sim_query_latency_ms / 1000
    return probe.wrap_asyncpg_pool(
        pool,
        acquire_timeout_s=settings.pg_pool_acquire_timeout_s,
        rewrite=partial(fold_sim_latency, seconds=seconds) if seconds > 0 else None,
    )
