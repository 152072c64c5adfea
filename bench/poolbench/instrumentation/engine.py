"""SQLAlchemy hooks: a checkout timer, lease times, connection churn and statements per request.

SQLAlchemy has no acquire-wait timer, so the engine's pool is given a subclass of its own class
whose `_do_get` (the checkout, including waiting and opening a connection) is timed, and whose
`_do_get` and `_do_return_conn` report the pool's idle connections and waiting checkouts (the
hand-off integral, `PoolOccupancy`). Both survive `engine.dispose()`: the pool is rebuilt from
its class, and events are registered on the engine.

A lease (hold time) runs from `_do_get` returning (the connection left the pool) to the
`checkin` event (just before it goes back): the time no other request can have it. SQLAlchemy
fires the `checkout` event only after `pool_pre_ping`'s round trip, so timing the lease from that
event would leave the ping out of the hold while the connection is busy with it; the gap between
`_do_get` returning and the `checkout` event is recorded as the ping (`ping_ms`) when one ran. The
reset on return (ROLLBACK) runs before `checkin`, inside the lease.
"""

from __future__ import annotations

import time
from contextvars import ContextVar
from typing import Any

from sqlalchemy import event, exc
from sqlalchemy.engine import Connection, Engine, ExecutionContext
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import ConnectionPoolEntry, Pool, PoolProxiedConnection

from poolbench.instrumentation.context import count_statement, hold_connection, release_connection
from poolbench.instrumentation.telemetry import PoolTelemetry

_CHECKOUT_STARTED = "poolbench_checkout_started"
_CHECKOUT_REQUEST = "poolbench_checkout_request"
_PINGS = "poolbench_pings"

_in_checkout: ContextVar[bool] = ContextVar("poolbench_in_checkout", default=False)


class _TimedCheckout(Pool):
    """Mixed in before the engine's own pool class: times every checkout."""

    telemetry: PoolTelemetry

    def _do_get(self) -> ConnectionPoolEntry:
        # QueuePool._do_get calls itself again on some races; time only the outer call.
        if _in_checkout.get():
            return super()._do_get()
        token = _in_checkout.set(True)
        self._report_idle(+1)
        started = time.perf_counter()
        try:
            entry = super()._do_get()
        except exc.TimeoutError:
            self.telemetry.record_acquire(time.perf_counter() - started, timed_out=True)
            raise
        finally:
            _in_checkout.reset(token)
            self._report_idle(-1)
        # Includes opening a connection when the pool grows: the request waited for that too.
        left = time.perf_counter()
        self.telemetry.record_acquire(left - started)
        # The lease starts here: pre-ping and SQLAlchemy's checkout work happen after this.
        entry.info[_CHECKOUT_STARTED] = left
        # A connection opened by this checkout is fresh and SQLAlchemy skips its ping.
        entry.info[_PINGS] = bool(self._pre_ping) and not getattr(entry, "fresh", False)
        self.telemetry.record_checkout()
        return entry

    def _do_return_conn(self, record: ConnectionPoolEntry) -> None:
        super()._do_return_conn(record)
        self._report_idle()

    def _report_idle(self, waiting_delta: int = 0) -> None:
        # Only pools with a queue of idle connections (QueuePool and its async variant) know it.
        checkedin = getattr(self, "checkedin", None)
        if callable(checkedin):
            self.telemetry.record_pool_state(idle=checkedin(), waiting_delta=waiting_delta)


def _time_checkouts(pool: Pool, telemetry: PoolTelemetry) -> None:
    if isinstance(pool, _TimedCheckout):
        raise ValueError("this engine is instrumented already")
    # A subclass per engine rather than a wrapper: `engine.dispose()` rebuilds the pool through
    # `self.__class__`, which keeps the binding. SQLAlchemy names a pool's logger after its
    # class's module: keep it under "sqlalchemy.pool" so pool log lines follow SQLAlchemy's
    # logging config.
    namespace = {"telemetry": telemetry, "__module__": "sqlalchemy.pool"}
    cls = type(f"Instrumented{type(pool).__name__}", (_TimedCheckout, type(pool)), namespace)
    pool.__class__ = cls


def _pool_events(target: Engine, telemetry: PoolTelemetry) -> None:
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
        left = record.info.get(_CHECKOUT_STARTED)
        if left is not None and record.info.pop(_PINGS, False):
            telemetry.record_ping(time.perf_counter() - left)
        # Pool events run in SQLAlchemy's greenlet, which shares the awaiting task's context,
        # so current_request here is the request that checks the connection out.
        record.info[_CHECKOUT_REQUEST] = hold_connection()

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

    # One per statement handed to the driver, including each batch of an insertmanyvalues
    # INSERT; transaction control (BEGIN, COMMIT, ROLLBACK) and pool_pre_ping's ping go through
    # the driver directly, so they are not the handler's statements and are not counted.
    @event.listens_for(target, "before_cursor_execute")
    def _count(
        conn: Connection,
        cursor: Any,
        statement: str,
        parameters: Any,
        context: ExecutionContext | None,
        executemany: bool,
    ) -> None:
        count_statement()


def instrument_engine(engine: AsyncEngine | Engine, telemetry: PoolTelemetry) -> None:
    """Measure an engine's pool into `telemetry`: checkout wait, leases, churn, statements."""
    target = engine.sync_engine if isinstance(engine, AsyncEngine) else engine
    pool = target.pool
    _time_checkouts(pool, telemetry)
    size = getattr(pool, "size", None)
    telemetry.attach(
        pool_size=int(size()) if callable(size) else 0,
        # QueuePool keeps it private; other pool classes have no overflow.
        max_overflow=max(0, int(getattr(pool, "_max_overflow", 0))),
    )
    telemetry.driver = target.dialect.driver
    _pool_events(target, telemetry)
