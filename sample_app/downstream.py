"""A slow downstream HTTP service for the fan-out workload.

`python -m poolbench.sample_app.downstream`.

`GET /work?latency_ms=L` waits L ms (default `--latency-ms`) and answers JSON. `GET /stats`
reports `in_flight`, `peak_in_flight`, `requests` and `cancelled` (callers that hung up before
the answer, which is what a caller's deadline looks like from here); `POST /stats/reset`
clears them. A pure ASGI app: it must watch for the client disconnecting while it waits,
which a plain request handler does not do.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import asdict, dataclass
from typing import Annotated
from urllib.parse import parse_qs

import typer
import uvicorn
from starlette.types import Receive, Scope, Send

DEFAULT_PORT = 8081
DEFAULT_LATENCY_MS = 20.0
MAX_LATENCY_MS = 600_000.0


@dataclass
class DownstreamStats:
    """Counters of the stub, as served by GET /stats."""

    in_flight: int = 0
    peak_in_flight: int = 0
    requests: int = 0
    completed: int = 0
    cancelled: int = 0


async def _wait_unless_disconnected(receive: Receive, seconds: float) -> bool:
    """Wait `seconds`; return False early if the client disconnects meanwhile."""
    try:
        async with asyncio.timeout(seconds):
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return False
    except TimeoutError:
        return True


class DownstreamApp:
    """The stub service; one instance per process."""

    def __init__(self, latency_ms: float = DEFAULT_LATENCY_MS) -> None:
        self.latency_ms = latency_ms
        self.stats = DownstreamStats()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        route = (scope["method"], scope["path"])
        if route == ("GET", "/work"):
            await self._work(scope, receive, send)
        elif route == ("GET", "/stats"):
            await _send_json(send, 200, asdict(self.stats))
        elif route == ("POST", "/stats/reset"):
            self.stats = DownstreamStats(
                in_flight=self.stats.in_flight, peak_in_flight=self.stats.in_flight
            )
            await _send_json(send, 200, asdict(self.stats))
        else:
            await _send_json(send, 404, {"detail": "not found"})

    async def _work(self, scope: Scope, receive: Receive, send: Send) -> None:
        query = parse_qs(scope.get("query_string", b"").decode())
        try:
            latency_ms = float(query.get("latency_ms", [self.latency_ms])[0])
        except ValueError:
            latency_ms = -1.0
        if not 0 <= latency_ms <= MAX_LATENCY_MS:
            await _send_json(send, 422, {"detail": "latency_ms must be 0..600000"})
            return
        stats = self.stats
        stats.requests += 1
        stats.in_flight += 1
        stats.peak_in_flight = max(stats.peak_in_flight, stats.in_flight)
        try:
            finished = await _wait_unless_disconnected(receive, latency_ms / 1000)
        finally:
            stats.in_flight -= 1
        if not finished:
            stats.cancelled += 1
            return
        stats.completed += 1
        await _send_json(send, 200, {"latency_ms": latency_ms})

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return


async def _send_json(send: Send, status: int, body: object) -> None:
    payload = json.dumps(body).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(payload))]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


def main(
    port: Annotated[int, typer.Option(help="TCP port to listen on.")] = DEFAULT_PORT,
    latency_ms: Annotated[
        float, typer.Option(min=0, max=MAX_LATENCY_MS, help="Default latency of GET /work.")
    ] = DEFAULT_LATENCY_MS,
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
) -> None:
    """Serve the downstream stub until interrupted."""
    uvicorn.run(
        DownstreamApp(latency_ms),
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        # Many sockets from a fan-out: keep them open between bursts like a real service.
        timeout_keep_alive=30,
    )


if __name__ == "__main__":
    typer.run(main)
