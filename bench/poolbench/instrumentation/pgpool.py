"""The asyncpg pool, measured: acquire wait, lease time, timeouts, connections, statements.

asyncpg has no hooks around a lease, so the pool is wrapped: `acquire()` times the wait and the
lease and hands out a connection whose query methods count each call as one statement of the
current request. Counting here rather than with asyncpg's query logger: the logger also sees the
pool's reset query on release and misses prepared statements.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from poolbench.errors import PoolbenchError
from poolbench.instrumentation.context import count_statement, hold_connection, release_connection
from poolbench.instrumentation.telemetry import PoolTelemetry

POOL_CLOSE_TIMEOUT_S = 10.0
ConnectionInit = Callable[[asyncpg.Connection], Coroutine[Any, Any, None]]


class AcquireTimeoutError(PoolbenchError, TimeoutError):
    """No connection from the asyncpg pool within the acquire timeout."""


class CountedConnection:
    """A leased asyncpg connection: every query call is one statement, one round trip.

    `rewrite`, when given, turns each statement into the one sent (the sample app folds its
    simulated latency into the statement this way).
    """

    __slots__ = ("_conn", "_rewrite")

    def __init__(
        self, conn: PoolConnectionProxy[asyncpg.Record], rewrite: Callable[[str], str] | None
    ) -> None:
        self._conn = conn
        self._rewrite = rewrite

    @property
    def raw(self) -> PoolConnectionProxy[asyncpg.Record]:
        """The asyncpg connection itself (statements sent through it are not counted)."""
        return self._conn

    def _statement(self, query: str) -> str:
        count_statement()
        return query if self._rewrite is None else self._rewrite(query)

    async def fetch(self, query: str, *args: object) -> list[asyncpg.Record]:
        """Run the query; return every row."""
        return await self._conn.fetch(self._statement(query), *args)

    async def fetchrow(self, query: str, *args: object) -> asyncpg.Record | None:
        """Run the query; return the first row or None."""
        return await self._conn.fetchrow(self._statement(query), *args)

    async def fetchval(self, query: str, *args: object) -> Any:
        """Run the query; return the first column of the first row, or None."""
        return await self._conn.fetchval(self._statement(query), *args)

    async def execute(self, query: str, *args: object) -> str:
        """Run the statement; return its status."""
        return await self._conn.execute(self._statement(query), *args)

    async def executemany(self, query: str, args: Sequence[Sequence[object]]) -> None:
        """Run the statement once per argument tuple (one statement: one call)."""
        await self._conn.executemany(self._statement(query), args)


class InstrumentedPool:
    """An asyncpg pool with acquire wait, lease time and timeouts recorded."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        telemetry: PoolTelemetry,
        *,
        acquire_timeout_s: float | None = None,
        rewrite: Callable[[str], str] | None = None,
    ) -> None:
        self.pool = pool
        self.telemetry = telemetry
        self.acquire_timeout_s = acquire_timeout_s
        self.rewrite = rewrite
        telemetry.attach(pool_size=pool.get_max_size(), max_overflow=0)
        telemetry.driver = "asyncpg"

    @asynccontextmanager
    async def acquire(
        self, timeout_s: float | None = None, *, rewrite: bool = True
    ) -> AsyncIterator[CountedConnection]:
        """Lease a connection; raise AcquireTimeoutError when none frees up in time.

        `rewrite=False` sends statements unchanged (for probes such as health checks).
        """
        timeout = self.acquire_timeout_s if timeout_s is None else timeout_s
        started = time.perf_counter()
        try:
            # Not acquire(timeout=): asyncpg runs a timed acquire as a task of its own
            # (wait_for), one more task per lease. A cancelled acquire requeues its connection.
            async with asyncio.timeout(timeout):
                conn = await self.pool.acquire()
        except TimeoutError:
            self.telemetry.record_acquire(time.perf_counter() - started, timed_out=True)
            raise AcquireTimeoutError(f"no asyncpg connection within {timeout:g} s") from None
        acquired = time.perf_counter()
        self.telemetry.record_acquire(acquired - started)
        self.telemetry.record_checkout()
        holder = hold_connection()
        try:
            yield CountedConnection(conn, self.rewrite if rewrite else None)
        finally:
            release_connection(holder)
            # Uncount first: release() requeues the connection and a waiter may take it before
            # this task resumes, which would show more checked out than max_size.
            self.telemetry.record_checkin()
            try:
                # asyncpg shields the release itself, so a cancelled request still returns it.
                await self.pool.release(conn)
            finally:
                # The lease includes release's reset, as SQLAlchemy's includes its rollback.
                self.telemetry.record_hold(time.perf_counter() - acquired)

    async def close(self) -> None:
        """Close gracefully; terminate connections a stuck request still holds."""
        try:
            async with asyncio.timeout(POOL_CLOSE_TIMEOUT_S):
                await self.pool.close()
        except TimeoutError:
            self.pool.terminate()


def counting_init(telemetry: PoolTelemetry, init: ConnectionInit | None = None) -> ConnectionInit:
    """An `init=` for asyncpg.create_pool that counts connections opened and closed."""

    def _closed(conn: object) -> None:
        telemetry.record_closed()

    async def _init(conn: asyncpg.Connection) -> None:
        telemetry.record_opened()
        conn.add_termination_listener(_closed)
        if init is not None:
            await init(conn)

    return _init
