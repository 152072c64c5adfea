"""Fan-out to a downstream service: bounded concurrency, one deadline for the whole request.

`hold_session=true` demonstrates an anti-pattern on purpose: the handler reads from the database
and keeps its session (and so its pool connection) while it fans out. Every call queued on the
semaphore then also keeps an idle connection out of the pool; the telemetry counts those waits
(`waiting_holding_connection`). The fix is to finish with the session before fanning out.
"""

from __future__ import annotations

import asyncio
import time
from typing import Annotated

import httpx
from fastapi import APIRouter, Query
from sqlalchemy import text

from ..deps import (
    HttpClientDep,
    HttpSemaphoreDep,
    HttpTelemetryDep,
    ResourcesDep,
    SettingsDep,
)
from ..problems import DownstreamError, DownstreamTimeoutError
from ..schemas import FanoutOut
from ..telemetry import HttpTelemetry

router = APIRouter(tags=["fanout"])

MAX_CALLS = 100
WORK_PATH = "/work"


async def _call_downstream(
    client: httpx.AsyncClient, semaphore: asyncio.Semaphore, telemetry: HttpTelemetry
) -> None:
    # The semaphore is app-wide: it bounds calls in flight across all requests, not per request.
    # locked() is exactly "acquire() will queue" (asyncio's semaphore is fair: a newcomer waits
    # while others wait, even with a slot free).
    with telemetry.track_semaphore_wait(queued=semaphore.locked()):
        await semaphore.acquire()
    try:
        with telemetry.track_call():
            response = await client.get(WORK_PATH)
            response.raise_for_status()
    finally:
        semaphore.release()


async def _fan_out(
    calls: int,
    client: httpx.AsyncClient,
    semaphore: asyncio.Semaphore,
    telemetry: HttpTelemetry,
) -> None:
    async with asyncio.TaskGroup() as group:
        for _ in range(calls):
            group.create_task(_call_downstream(client, semaphore, telemetry))


@router.get("/fanout")
async def fanout(
    client: HttpClientDep,
    semaphore: HttpSemaphoreDep,
    telemetry: HttpTelemetryDep,
    settings: SettingsDep,
    resources: ResourcesDep,
    calls: Annotated[int, Query(ge=1, le=MAX_CALLS)] = 5,
    hold_session: Annotated[
        bool,
        Query(description="Anti-pattern demo: hold a DB session (a connection) while fanning out."),
    ] = False,
) -> FanoutOut:
    """Call the downstream `calls` times concurrently; 504 past HTTP_TIMEOUT_S, 502 on errors."""
    started = time.perf_counter()
    try:
        # asyncio.timeout outside the TaskGroup: on the deadline the group cancels every call
        # (closing their connections, which the downstream sees) before we answer 504.
        async with asyncio.timeout(settings.http_timeout_s):
            if hold_session:
                # The anti-pattern (see the module docstring): the connection checked out by the
                # read stays checked out, idle, until the last downstream call is done.
                async with resources.sessionmaker() as session:
                    await session.execute(text("select 1"))
                    await _fan_out(calls, client, semaphore, telemetry)
            else:
                await _fan_out(calls, client, semaphore, telemetry)
    except TimeoutError:
        telemetry.record_timeout()
        raise DownstreamTimeoutError(
            f"downstream calls did not finish within {settings.http_timeout_s:g} s"
        ) from None
    except ExceptionGroup as group_error:
        # A call failed, so the group cancelled its siblings; map what failed to a status.
        timeouts, rest = group_error.split(httpx.TimeoutException)
        if timeouts is not None and rest is None:
            telemetry.record_timeout()
            raise DownstreamTimeoutError("downstream call timed out") from group_error
        failed, unexpected = group_error.split(httpx.HTTPError)
        if unexpected is not None:
            raise
        assert failed is not None
        first = failed.exceptions[0]
        raise DownstreamError(f"downstream call failed: {type(first).__name__}") from group_error
    return FanoutOut(calls=calls, elapsed_ms=round((time.perf_counter() - started) * 1000, 2))
