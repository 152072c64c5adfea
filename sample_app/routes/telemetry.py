"""Telemetry endpoints: Prometheus text, the JSON window snapshot and its reset."""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from sample_app.deps import TelemetryDep
from sample_app.schemas import TelemetrySnapshot

router = APIRouter(tags=["telemetry"])


@router.get("/metrics", response_class=Response)
async def metrics(telemetry: TelemetryDep) -> Response:
    """Return every metric of this app in Prometheus text format."""
    return Response(generate_latest(telemetry.registry), media_type=CONTENT_TYPE_LATEST)


@router.get("/telemetry")
async def telemetry_snapshot(telemetry: TelemetryDep) -> TelemetrySnapshot:
    """Return pool and downstream figures since the last reset (docs/DESIGN.md)."""
    return telemetry.snapshot()


@router.post("/telemetry/reset")
async def reset_telemetry(telemetry: TelemetryDep) -> TelemetrySnapshot:
    """Start a new window; return the figures of the window just closed."""
    closed = telemetry.snapshot()
    telemetry.reset_window()
    return closed
