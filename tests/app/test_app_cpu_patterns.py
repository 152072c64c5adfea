"""What a request costs the CPU: no threadpool hop, no middleware or listener doing nothing.

benchmarks/app_cpu.py measures the cost; these keep the patterns that made it (issue 12) from
coming back unnoticed.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator

from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from poolbench.sample_app.config import Settings
from poolbench.sample_app.db import build_engine
from poolbench.sample_app.main import create_app
from poolbench.sample_app.middleware import AccessLogMiddleware
from poolbench.sample_app.routes import ROUTERS

from poolbench.instrumentation import instrument


def _calls(dependant: Dependant) -> Iterator[object]:
    if dependant.call is not None:
        yield dependant.call
    for sub in dependant.dependencies:
        yield from _calls(sub)


def _runs_on_the_loop(call: object) -> bool:
    return inspect.iscoroutinefunction(call) or inspect.isasyncgenfunction(call)


def test_no_endpoint_or_dependency_runs_in_the_threadpool() -> None:
    # FastAPI runs a plain `def` endpoint or dependency in the threadpool: a thread hop on every
    # request, which cost more CPU than the query on the raw path.
    routes = [route for router in ROUTERS for route in router.routes if isinstance(route, APIRoute)]
    assert len(routes) >= len(ROUTERS)
    sync = {
        f"{route.path}: {getattr(call, '__qualname__', call)}"
        for route in routes
        for call in _calls(route.dependant)
        if not _runs_on_the_loop(call)
    }
    assert not sync


def _middleware_classes(settings: Settings) -> list[type]:
    return [entry.cls for entry in create_app(settings).user_middleware]  # type: ignore[misc]


def test_access_log_middleware_only_when_enabled() -> None:
    assert AccessLogMiddleware not in _middleware_classes(Settings(access_log=False))
    assert AccessLogMiddleware in _middleware_classes(Settings(access_log=True))


def test_sim_latency_listener_only_with_sim_latency() -> None:
    def listeners(latency_ms: float) -> int:
        settings = Settings(sim_query_latency_ms=latency_ms)
        engine = build_engine(settings, instrument(create_app(settings)))
        return len(engine.sync_engine.dispatch.before_cursor_execute)

    assert listeners(5.0) == listeners(0.0) + 1
