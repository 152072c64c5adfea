"""The telemetry endpoints: Prometheus text, the JSON window and its reset, the totals."""

from __future__ import annotations

from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from poolbench.instrumentation.telemetry import Telemetry

TELEMETRY_PATH = "/telemetry"
METRICS_PATH = "/metrics"
RESET_SUFFIX = "/reset"
TOTALS_SUFFIX = "/totals"


def telemetry_endpoints(
    telemetry: Telemetry, *, telemetry_path: str | None, metrics_path: str | None
) -> list[tuple[str, str, Any]]:
    """Return (method, path, endpoint) of every endpoint to mount; a None path mounts none."""

    async def metrics(request: Request) -> Response:
        """Return every metric of this app in Prometheus text format."""
        return Response(generate_latest(telemetry.registry), media_type=CONTENT_TYPE_LATEST)

    async def snapshot(request: Request) -> JSONResponse:
        """Return pool and request figures since the last reset, then the totals."""
        return JSONResponse(telemetry.snapshot())

    async def reset(request: Request) -> JSONResponse:
        """Start a new window; return the figures of the window just closed."""
        closed = telemetry.snapshot()
        telemetry.reset_window()
        return JSONResponse(closed)

    async def totals(request: Request) -> JSONResponse:
        """Return the cumulative counters (never reset; cheap to poll)."""
        return JSONResponse(telemetry.totals())

    endpoints: list[tuple[str, str, Any]] = []
    if metrics_path is not None:
        endpoints.append(("GET", metrics_path, metrics))
    if telemetry_path is not None:
        endpoints += [
            ("GET", telemetry_path, snapshot),
            ("POST", telemetry_path + RESET_SUFFIX, reset),
            ("GET", telemetry_path + TOTALS_SUFFIX, totals),
        ]
    return endpoints
