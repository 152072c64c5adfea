"""One router per workload."""

from __future__ import annotations

from fastapi import APIRouter

from sample_app.routes import cpu, fanout, health, orders, queries, raw, telemetry, users

ROUTERS: tuple[APIRouter, ...] = (
    users.router,
    queries.router,
    orders.router,
    raw.router,
    fanout.router,
    cpu.router,
    health.router,
    telemetry.router,
)
