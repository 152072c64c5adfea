"""Every endpoint of the sample app, in process, against a real Postgres and downstream."""

from __future__ import annotations

import json
import re
import time

import pytest
from fastapi import FastAPI
from poolbench.sample_app.deps import SessionDep
from poolbench.sample_app.models import Order
from sqlalchemy import insert

from tests.app.app_helpers import (
    SEED_ITEMS_PER_ORDER,
    SEED_ORDERS_PER_USER,
    AppDatabase,
    AppRunner,
    Downstream,
    assert_problem,
    concurrently,
    fetch_val,
    server_timing,
)

# Fixtures (app_db, downstream(s), run_app) live in tests/app_fixtures.py.


async def test_get_user_echoes_request_id_and_times_the_pool(run_app: AppRunner) -> None:
    async with run_app() as (_, client):
        response = await client.get("/users/1", headers={"X-Request-ID": "req-42"})
        generated = await client.get("/users/2")
    assert response.status_code == 200
    assert response.json() == {"id": 1, "name": "user 1", "email": "user1@example.com"}
    assert response.headers["x-request-id"] == "req-42"
    assert re.fullmatch(r"[0-9a-f]{32}", generated.headers["x-request-id"])
    timing = server_timing(response)
    assert timing.keys() == {"app", "pool"}
    assert 0 <= timing["pool"] <= timing["app"]


async def test_unsafe_request_id_is_replaced(run_app: AppRunner) -> None:
    async with run_app() as (_, client):
        response = await client.get("/users/1", headers={"X-Request-ID": "a b\x7f" * 50})
    assert re.fullmatch(r"[0-9a-f]{32}", response.headers["x-request-id"])


async def test_missing_user_is_a_404_problem(run_app: AppRunner) -> None:
    async with run_app() as (_, client):
        sqlalchemy_path = await client.get("/users/999999")
        asyncpg_path = await client.get("/raw/users/999999")
        unknown_route = await client.get("/no/such/route")
    body = assert_problem(sqlalchemy_path, 404)
    assert body["detail"] == "user 999999 not found"
    assert body["instance"] == "/users/999999"
    assert_problem(asyncpg_path, 404)
    assert_problem(unknown_route, 404)


ITEM = {"sku": "SKU-1", "quantity": 1, "price_cents": 100}


def _order_with_sku(escaped: str) -> str:
    """Return the JSON text of an order of user 1 whose one sku is `escaped`, as written."""
    order = json.dumps({"user_id": 1, "items": [{**ITEM, "sku": "<sku>"}]})
    return order.replace("<sku>", escaped)


@pytest.mark.parametrize(
    ("method", "path", "body", "loc"),
    [
        ("GET", "/users/abc", None, ["path", "user_id"]),
        ("GET", "/users/0", None, ["path", "user_id"]),
        ("GET", "/queries?queries=501", None, ["query", "queries"]),
        ("GET", "/fanout?calls=0", None, ["query", "calls"]),
        ("GET", "/cpu?work_ms=-1", None, ["query", "work_ms"]),
        ("POST", "/orders", {"user_id": 1, "items": []}, ["body", "items"]),
        ("POST", "/orders", {"user_id": 1}, ["body", "items"]),
        # Past Postgres bigint, the type of every id column.
        ("POST", "/orders", {"user_id": 2**63, "items": [ITEM]}, ["body", "user_id"]),
        ("GET", f"/users/{2**63}", None, ["path", "user_id"]),
        ("GET", f"/raw/users/{2**63}", None, ["path", "user_id"]),
        # Text Postgres cannot store: NUL, and a lone surrogate, which has no UTF-8 form (so
        # the problem that echoes it must escape it). Sent as JSON text: httpx cannot encode it.
        ("POST", "/orders", _order_with_sku(r"A\u0000B"), ["body", "items", 0, "sku"]),
        ("POST", "/orders", _order_with_sku(r"\ud800"), ["body", "items", 0, "sku"]),
        ("POST", "/orders", _order_with_sku("S" * 33), ["body", "items", 0, "sku"]),
        # Echoed back in the problem, where NaN has no JSON form; an unknown field is refused.
        ("POST", "/orders", '{"user_id": NaN, "items": []}', ["body", "user_id"]),
        ("POST", "/orders", {"user_id": 1, "items": [ITEM], "coupon": 5}, ["body", "coupon"]),
    ],
)
async def test_invalid_input_is_a_422_problem_with_errors(
    run_app: AppRunner, method: str, path: str, body: object, loc: list[str]
) -> None:
    async with run_app() as (_, client):
        if isinstance(body, str):
            headers = {"Content-Type": "application/json"}
            response = await client.request(method, path, content=body, headers=headers)
        else:
            response = await client.request(method, path, json=body)
    problem = assert_problem(response, 422)
    assert problem["errors"], problem
    assert problem["errors"][0]["loc"] == loc


async def test_user_orders_are_loaded_with_items(run_app: AppRunner) -> None:
    async with run_app() as (_, client):
        response = await client.get("/users/3/orders")
    assert response.status_code == 200
    body = response.json()
    assert body["id"] == 3
    assert len(body["orders"]) >= SEED_ORDERS_PER_USER
    seeded = [order for order in body["orders"] if order["id"] <= 1000]
    assert all(len(order["items"]) == SEED_ITEMS_PER_ORDER for order in seeded)
    for order in body["orders"]:
        expected = sum(item["quantity"] * item["price_cents"] for item in order["items"])
        assert order["total_cents"] == expected


async def test_queries_reads_n_rows_in_one_session(run_app: AppRunner) -> None:
    async with run_app() as (app, client):
        app.state.telemetry.reset_window()
        response = await client.get("/queries", params={"queries": 20})
        snapshot = app.state.telemetry.snapshot()
    assert response.status_code == 200
    assert len(response.json()) == 20
    # Twenty statements, one checkout: the session holds its connection for the whole request.
    assert snapshot["sqlalchemy"]["acquire_wait_ms"]["count"] == 1


async def test_post_order_persists(run_app: AppRunner, app_db: AppDatabase) -> None:
    items = [
        {"sku": "SKU-A", "quantity": 2, "price_cents": 150},
        {"sku": "SKU-B", "quantity": 1, "price_cents": 999},
    ]
    async with run_app() as (_, client):
        response = await client.post("/orders", json={"user_id": 5, "items": items})
        missing_user = await client.post("/orders", json={"user_id": 999999, "items": items})
    assert response.status_code == 201, response.text
    order = response.json()
    assert order["user_id"] == 5
    assert order["total_cents"] == 2 * 150 + 999
    assert [item["sku"] for item in order["items"]] == ["SKU-A", "SKU-B"]
    stored = await fetch_val(
        app_db.dsn, "select sum(quantity * price_cents) from items where order_id = $1", order["id"]
    )
    assert stored == order["total_cents"]
    assert_problem(missing_user, 404)


async def test_session_rolls_back_when_the_endpoint_fails(
    run_app: AppRunner, app_db: AppDatabase
) -> None:
    marker = "rollback-probe"

    def add_failing_route(app: FastAPI) -> None:
        @app.post("/test/failing-write")
        async def failing_write(session: SessionDep) -> None:
            await session.execute(insert(Order).values(user_id=1, status=marker))
            raise RuntimeError("boom after a write: secret internals")

    async with run_app(prepare=add_failing_route, raise_app_exceptions=False) as (app, client):
        response = await client.post("/test/failing-write", headers={"X-Request-ID": "fail-1"})
        checked_out = app.state.telemetry.sqlalchemy.checked_out
    body = assert_problem(response, 500)
    assert "secret" not in response.text and "RuntimeError" not in response.text
    assert body["request_id"] == "fail-1"
    assert checked_out == 0
    assert await fetch_val(app_db.dsn, "select count(*) from orders where status = $1", marker) == 0


async def test_raw_user_through_asyncpg(run_app: AppRunner) -> None:
    async with run_app() as (app, client):
        response = await client.get("/raw/users/7")
        snapshot = app.state.telemetry.snapshot()
    assert response.status_code == 200
    assert response.json() == {"id": 7, "name": "user 7", "email": "user7@example.com"}
    assert snapshot["asyncpg"]["hold_time_ms"]["count"] >= 1
    assert snapshot["asyncpg"]["checked_out"] == 0


async def test_cpu_work_runs_off_the_event_loop(run_app: AppRunner) -> None:
    async with run_app() as (_, client):
        started = time.perf_counter()

        async def timed_read() -> float:
            await client.get("/users/1")
            return time.perf_counter() - started

        cpu, read_done_s = await concurrently(client.get("/cpu?work_ms=400"), timed_read())
    assert cpu.status_code == 200
    assert cpu.json()["elapsed_ms"] >= 400
    assert cpu.json()["rounds"] > 0
    # The read finished while the blocking work was still running in its thread.
    assert read_done_s < 0.35


async def test_health_ok_with_pool_status(run_app: AppRunner) -> None:
    async with run_app(db_pool_size=3) as (_, client):
        response = await client.get("/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["checks"] == {"sqlalchemy": "ok", "asyncpg": "ok", "downstream": "ok"}
    assert body["pools"]["sqlalchemy"] == {"size": 3, "checked_out": 0, "overflow_in_use": 0}


async def test_health_503_names_the_failed_check(run_app: AppRunner) -> None:
    from poolbench.sweep.pg import free_port

    async with run_app(downstream_url=f"http://127.0.0.1:{free_port()}") as (_, client):
        response = await client.get("/health")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "fail"
    assert body["checks"]["downstream"].startswith("error")
    assert body["checks"]["sqlalchemy"] == body["checks"]["asyncpg"] == "ok"


async def test_metrics_in_prometheus_text(run_app: AppRunner) -> None:
    async with run_app() as (_, client):
        await client.get("/users/1")
        await client.get("/raw/users/1")
        response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    for name in (
        "poolbench_pool_acquire_wait_seconds_bucket",
        "poolbench_pool_hold_seconds_bucket",
        "poolbench_pool_checkout_timeouts_total",
        "poolbench_pool_connections_opened_total",
        "poolbench_pool_connections_closed_total",
        "poolbench_pool_checked_out",
        "poolbench_pool_overflow_in_use",
        "poolbench_pool_peak_checked_out",
        "poolbench_http_in_flight",
        "poolbench_http_calls_total",
        "poolbench_http_timeouts_total",
    ):
        assert name in text, name
    assert 'poolbench_pool_hold_seconds_count{pool="sqlalchemy"}' in text
    assert 'poolbench_pool_hold_seconds_count{pool="asyncpg"}' in text


async def test_cors_preflight_allows_configured_origin(run_app: AppRunner) -> None:
    headers = {"Origin": "http://localhost", "Access-Control-Request-Method": "GET"}
    async with run_app() as (_, client):
        allowed = await client.options("/users/1", headers=headers)
        denied = await client.options(
            "/users/1", headers={**headers, "Origin": "http://evil.example"}
        )
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == "http://localhost"
    assert "access-control-allow-origin" not in denied.headers


async def test_downstream_stub_reports_stats(downstream: Downstream) -> None:
    import httpx

    async with httpx.AsyncClient(base_url=downstream.url) as client:
        work = await client.get("/work", params={"latency_ms": 5})
        bad = await client.get("/work", params={"latency_ms": "x"})
    assert work.json() == {"latency_ms": 5.0}
    assert bad.status_code == 422
    stats = downstream.stats()
    assert stats["requests"] == 1 and stats["completed"] == 1 and stats["in_flight"] == 0
