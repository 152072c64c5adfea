"""One router per workload."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.routing import APIRoute

from ..routes import cpu, fanout, health, orders, queries, raw, users

ROUTERS: tuple[APIRouter, ...] = (
    users.router,
    queries.router,
    orders.router,
    raw.router,
    fanout.router,
    cpu.router,
    health.router,
)

# Probes, not load: the in-flight middleware does not count these paths (nor the telemetry
# endpoints, which poolbench.instrumentation adds and leaves uncounted itself).
UNCOUNTED_PATHS: frozenset[str] = frozenset(
    route.path for route in health.router.routes if isinstance(route, APIRoute)
)
