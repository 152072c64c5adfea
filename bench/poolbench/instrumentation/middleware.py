"""Requests in flight and statements per request, as pure ASGI middleware.

Pure ASGI rather than Starlette's BaseHTTPMiddleware: that runs the rest of the app in another
task, so the context variable set here would not be the one the handler's pool hooks see.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from starlette.types import ASGIApp, Receive, Scope, Send

from poolbench.instrumentation.context import RequestActivity, current_request
from poolbench.instrumentation.telemetry import RequestTelemetry


class InFlightMiddleware:
    """Count HTTP requests in flight and the SQL statements each sends (RequestTelemetry).

    Each counted request gets a RequestActivity in `current_request`, which the pool hooks use to
    attribute statements and held connections. Outermost, so a request counts from the moment
    the app gets it until its response is sent. The paths in `uncounted` (telemetry, metrics,
    health) pass straight through: probing the measurement must not change it.
    """

    def __init__(
        self, app: ASGIApp, *, telemetry: RequestTelemetry, uncounted: Iterable[str]
    ) -> None:
        self.app = app
        self.telemetry = telemetry
        self.uncounted = frozenset(uncounted)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.uncounted:
            await self.app(scope, receive, send)
            return
        activity = RequestActivity()
        self.telemetry.start(time.perf_counter())
        token = current_request.set(activity)
        try:
            await self.app(scope, receive, send)
        finally:
            current_request.reset(token)
            # Also on errors and cancellation: the request has left the app either way.
            self.telemetry.finish(time.perf_counter(), activity.count)
