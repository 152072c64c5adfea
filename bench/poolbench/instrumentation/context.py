"""Per-request state the pool hooks reach through context variables.

The in-flight middleware gives every counted request a RequestActivity in `current_request`; the
SQLAlchemy hooks and the asyncpg wrapper attribute statements and held connections to it. Both
are mutable objects, not plain numbers, so additions made in another context still reach the
request: SQLAlchemy's async bridge runs pool code in a greenlet that shares the task's context,
and tasks a handler starts get a copy of the context that points at the same object.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass


@dataclass
class RequestPoolWait:
    """Pool acquire wait of one request, summed over its pools (e.g. for Server-Timing)."""

    seconds: float = 0.0


# Set per request by whoever reports the request's pool wait (the sample app's timing
# middleware); PoolTelemetry.record_acquire adds to it when one is set.
current_pool_wait: ContextVar[RequestPoolWait | None] = ContextVar(
    "current_pool_wait", default=None
)


class RequestActivity:
    """What one request is doing: statements sent so far, DB connections held now.

    `calls_waiting` and `held_while_waiting` are for app code that makes a request wait on
    something else (an outbound semaphore) and wants to know what the request held meanwhile.
    """

    __slots__ = ("count", "connections_held", "calls_waiting", "held_while_waiting")

    def __init__(self) -> None:
        self.count = 0  # SQL statements sent
        self.connections_held = 0  # DB connections checked out now, every pool
        self.calls_waiting = 0
        self.held_while_waiting = 0


# None outside a counted request (start-up, health checks, telemetry endpoints, scripts), so
# those statements are never attributed to a request.
current_request: ContextVar[RequestActivity | None] = ContextVar("current_request", default=None)


def count_statement() -> None:
    """Attribute one SQL statement sent to the database to the current request, if any."""
    if (request := current_request.get()) is not None:
        request.count += 1


def hold_connection() -> RequestActivity | None:
    """Count a DB connection as held by the current request; return it for the release."""
    if (request := current_request.get()) is not None:
        request.connections_held += 1
    return request


def release_connection(request: RequestActivity | None) -> None:
    """Uncount a connection counted by `hold_connection` (pass what it returned).

    The checkout hands the request over rather than the checkin looking it up again, so a
    connection returned from another context (a session closed elsewhere) uncounts its own request.
    """
    if request is not None:
        request.connections_held -= 1
