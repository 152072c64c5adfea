"""One router per workload."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.routing import APIRoute

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

# Probes of the measurement, not load: the in-flight middleware does not count these paths.
UNCOUNTED_PATHS: frozenset[str] = frozenset(
    route.path
    for router in (health.router, telemetry.router)
    for route in router.routes
    if isinstance(route, APIRoute)
)
