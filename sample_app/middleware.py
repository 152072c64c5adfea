"""Request id, Server-Timing, access-log and error middleware, as pure ASGI classes.

Pure ASGI rather than Starlette's BaseHTTPMiddleware: BaseHTTPMiddleware runs the rest of the
app in a separate task and streams the response through a memory channel, so context variables
set by the endpoint do not come back, cancellation and client disconnects are handled in
surprising ways, and every request pays for the extra task. Here each class wraps `send` and
stays in the request's own task.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from contextvars import ContextVar

from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from poolbench.instrumentation import RequestPoolWait, current_pool_wait

from .problems import REQUEST_ID_HEADER, unhandled_error_response

# Accept a caller's id only if it is short and plain, so it is safe to log and echo.
_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")

request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)
access_logger = logging.getLogger("sample_app.access")


_REQUEST_ID_KEY = REQUEST_ID_HEADER.lower().encode("latin-1")


def _request_id_given(scope: Scope) -> str | None:
    """The request's X-Request-ID, read off the raw header list (no Headers object per request)."""
    for key, value in scope["headers"]:
        if key == _REQUEST_ID_KEY:
            return str(value.decode("latin-1"))
    return None


class RequestIDMiddleware:
    """Take X-Request-ID from the request (or make one), expose it and echo it back."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = _request_id_given(scope)
        request_id = given if given and _VALID_REQUEST_ID.match(given) else uuid.uuid4().hex
        # Also in scope state: handlers outside this middleware (the 500 one) can read it there.
        scope.setdefault("state", {})["request_id"] = request_id

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message)[REQUEST_ID_HEADER] = request_id
            await send(message)

        token = request_id_var.set(request_id)
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            request_id_var.reset(token)


class TimingMiddleware:
    """Add `Server-Timing: app;dur=.., pool;dur=..` (pool = this request's total acquire wait)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        pool_wait = RequestPoolWait()

        async def send_with_timing(message: Message) -> None:
            if message["type"] == "http.response.start":
                app_ms = (time.perf_counter() - started) * 1000
                MutableHeaders(scope=message).append(
                    "Server-Timing",
                    f"app;dur={app_ms:.2f}, pool;dur={pool_wait.seconds * 1000:.2f}",
                )
            await send(message)

        token = current_pool_wait.set(pool_wait)
        try:
            await self.app(scope, receive, send_with_timing)
        finally:
            current_pool_wait.reset(token)


class AccessLogMiddleware:
    """Log one JSON line per request (installed only when ACCESS_LOG is on: it costs)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            pool_wait = current_pool_wait.get()
            record = {
                "event": "request",
                "request_id": request_id_var.get(),
                "method": scope["method"],
                "path": scope["path"],
                "status": status,
                "duration_ms": round((time.perf_counter() - started) * 1000, 2),
                "pool_wait_ms": round(pool_wait.seconds * 1000, 2) if pool_wait else None,
            }
            access_logger.info(json.dumps(record))


class UnhandledErrorMiddleware:
    """Answer an exception no handler took with a problem response, instead of raising it on.

    Starlette's ServerErrorMiddleware answers too, but outside every other middleware (no
    Server-Timing, CORS or access-log status) and it re-raises afterwards; uvicorn then closes
    the kept-alive connection without `Connection: close`, so the client's next request on it
    fails. Innermost, so the answer passes through the other middleware like any response.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        response_started = False

        async def send_tracking_start(message: Message) -> None:
            nonlocal response_started
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        try:
            await self.app(scope, receive, send_tracking_start)
        except Exception as exc:
            if response_started:
                # Part of a response is out: only closing the connection can end it.
                raise
            response = unhandled_error_response(Request(scope), exc)
            await response(scope, receive, send)
