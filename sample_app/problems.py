"""Errors as RFC 7807 problem details (`application/problem+json`).

Every error the app answers has the same shape: type, title, status, detail, instance and the
request id, plus `errors` for validation failures. Pool exhaustion and an unreachable database
answer 503 with Retry-After instead of hanging or failing with a bare 500; unexpected errors
answer a 500 that says nothing about the internals (the traceback goes to the log).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import Any

import sqlalchemy.exc
from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from .db import PgPoolTimeoutError, is_connection_error

PROBLEM_JSON = "application/problem+json"
REQUEST_ID_HEADER = "X-Request-ID"
TYPE_PREFIX = "urn:poolbench:problem:"
DEFAULT_RETRY_AFTER_S = 1
DEFAULT_DB_UNAVAILABLE_RETRY_AFTER_S = 5

logger = logging.getLogger(__name__)


class NotFoundError(Exception):
    """A row the request names does not exist."""

    def __init__(self, resource: str, id_: int) -> None:
        super().__init__(f"{resource} {id_} not found")
        self.resource = resource
        self.id = id_


class DownstreamTimeoutError(Exception):
    """The downstream calls of a request did not finish within HTTP_TIMEOUT_S."""


class DownstreamError(Exception):
    """A downstream call failed (connection error or error status)."""


def request_id_of(request: Request) -> str | None:
    """Return the id the request-id middleware gave this request."""
    # From scope state, not the context variable: the 500 handler runs outside the middleware
    # that set the variable, after it was reset; the scope dict is shared by both.
    return request.scope.get("state", {}).get("request_id")


def problem_response(
    request: Request,
    status: int,
    detail: str,
    *,
    kind: str | None = None,
    title: str | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    """Build a problem+json response; `kind` names the problem type, else `about:blank`."""
    request_id = request_id_of(request)
    body = {
        "type": f"{TYPE_PREFIX}{kind}" if kind else "about:blank",
        "title": title or HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
        "instance": request.url.path,
        "request_id": request_id,
        **extra,
    }
    all_headers = dict(headers or {})
    if request_id:
        all_headers.setdefault(REQUEST_ID_HEADER, request_id)
    return JSONResponse(
        jsonable_encoder(body), status_code=status, headers=all_headers, media_type=PROBLEM_JSON
    )


def _echoable(value: Any) -> Any:
    """Return `value` with what JSON text cannot carry spelled out as text.

    A validation error echoes the input it rejected, which may be exactly what was wrong with
    it: a lone surrogate has no UTF-8 form and NaN or an infinity no JSON form, so rendering
    the 422 would itself fail as a 500.
    """
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {_echoable(key): _echoable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_echoable(item) for item in value]
    return value


# Pool exhaustion is usually a burst: a short, fixed back-off lets clients retry soon without
# stampeding; the header is what makes a load generator or proxy back off at all.
RETRY_AFTER = {"Retry-After": str(DEFAULT_RETRY_AFTER_S)}
# A database restart or failover takes seconds; retrying every second would only add connect
# attempts (each a refused socket or a new backend) to a server that is coming back.
DB_UNAVAILABLE_RETRY_AFTER = {"Retry-After": str(DEFAULT_DB_UNAVAILABLE_RETRY_AFTER_S)}


def unhandled_error_response(request: Request, exc: Exception) -> JSONResponse:
    """Answer an error no handler took: 503 if the database is unreachable, else a bare 500."""
    request_id = request_id_of(request)
    if is_connection_error(exc):
        # One line without the traceback: during an outage every request fails the same way.
        first_line = next(iter(str(exc).splitlines()), "")
        logger.warning(
            "database unavailable, request_id=%s: %s: %s",
            request_id,
            type(exc).__name__,
            first_line,
        )
        return problem_response(
            request,
            503,
            "the database is unavailable; retry later",
            kind="database-unavailable",
            title="Database unavailable",
            headers=DB_UNAVAILABLE_RETRY_AFTER,
        )
    logger.error("unhandled error, request_id=%s", request_id, exc_info=exc)
    return problem_response(request, 500, "an unexpected error occurred", kind="internal")


_ERROR_KEYS = ("type", "loc", "msg", "input")


def install_problem_handlers(app: FastAPI) -> None:
    """Register a problem+json handler for every error the app can answer."""

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        return problem_response(
            request, exc.status_code, str(exc.detail), headers=dict(exc.headers or {})
        )

    async def validation_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        errors = [
            {key: _echoable(jsonable_encoder(err[key])) for key in _ERROR_KEYS if key in err}
            for err in exc.errors()
        ]
        return problem_response(
            request, 422, "the request is not valid", kind="validation", errors=errors
        )

    async def not_found(request: Request, exc: Exception) -> JSONResponse:
        return problem_response(request, 404, str(exc), kind="not-found")

    def pool_timeout(pool: str) -> Callable[[Request, Exception], Awaitable[JSONResponse]]:
        async def handler(request: Request, exc: Exception) -> JSONResponse:
            # Counted in telemetry; a log line per failure would add load when it is saturated.
            logger.debug("%s pool checkout timed out: %s", pool, exc)
            return problem_response(
                request,
                503,
                "no database connection became free in time; retry later",
                kind="pool-timeout",
                title="Database pool exhausted",
                headers=RETRY_AFTER,
                pool=pool,
            )

        return handler

    db_pool_timeout = pool_timeout("sqlalchemy")
    pg_pool_timeout = pool_timeout("asyncpg")

    async def downstream_timeout(request: Request, exc: Exception) -> JSONResponse:
        return problem_response(request, 504, str(exc), kind="downstream-timeout")

    async def downstream_error(request: Request, exc: Exception) -> JSONResponse:
        return problem_response(request, 502, str(exc), kind="downstream-error")

    async def last_resort(request: Request, exc: Exception) -> JSONResponse:
        # Only errors raised in a middleware get here; UnhandledErrorMiddleware answers the
        # rest. Starlette re-raises after this response and uvicorn then closes the connection,
        # so the response says so: a client must not send its next request on it.
        response = unhandled_error_response(request, exc)
        response.headers["Connection"] = "close"
        return response

    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(NotFoundError, not_found)
    app.add_exception_handler(sqlalchemy.exc.TimeoutError, db_pool_timeout)
    app.add_exception_handler(PgPoolTimeoutError, pg_pool_timeout)
    app.add_exception_handler(DownstreamTimeoutError, downstream_timeout)
    app.add_exception_handler(DownstreamError, downstream_error)
    # `Exception` is served by Starlette's outermost ServerErrorMiddleware, outside our
    # middleware: that is why problem_response adds the request id header itself.
    app.add_exception_handler(Exception, last_resort)
