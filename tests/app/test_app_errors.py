"""Errors no handler expects, in a real uvicorn process: problem responses on a kept-alive
connection, and a database that goes away under the running app."""

from __future__ import annotations

import asyncio

import asyncpg
import httpx
import pytest
import sqlalchemy.exc
from poolbench.sample_app.db import is_connection_error

from poolbench.sweep.pg import PostgresServer, find_bindir
from tests.app.app_helpers import (
    FAILING_PATH,
    AppDatabase,
    Downstream,
    app_process,
    assert_problem,
    client_port,
    keep_alive_client,
)

# Fixtures (app_db, downstream(s), run_app) live in tests/app/conftest.py.

SMALL_POOLS = {"DB_POOL_SIZE": "2", "PG_POOL_MIN_SIZE": "1", "PG_POOL_MAX_SIZE": "2"}
ORDER = {"user_id": 1, "items": [{"sku": "SKU-1", "quantity": 1, "price_cents": 100}]}


async def test_unexpected_error_is_a_500_problem_on_a_connection_kept_open(
    app_db: AppDatabase, downstream: Downstream
) -> None:
    env = {
        "DATABASE_URL": app_db.sqlalchemy_url,
        "DOWNSTREAM_URL": downstream.url,
        "CREATE_SCHEMA": "false",
        **SMALL_POOLS,
    }
    target = "tests.app.app_helpers:create_app_with_failing_route"
    async with app_process(env, target=target, factory=True) as url:
        async with keep_alive_client(url) as client:
            failed = await client.get(FAILING_PATH, headers={"X-Request-ID": "boom-1"})
            failed_port = client_port(failed)
            after = await client.get("/users/1")
            after_port = client_port(after)
    body = assert_problem(failed, 500)
    assert body["type"] == "urn:poolbench:problem:internal"
    assert body["request_id"] == "boom-1"
    assert "secret" not in failed.text and "RuntimeError" not in failed.text
    # The response went through the middleware like any other.
    assert "server-timing" in failed.headers
    assert failed.headers.get("connection", "").lower() != "close"
    assert after.status_code == 200, after.text
    # The same connection: the server did not drop it after the error.
    assert after_port == failed_port


@pytest.mark.skipif(find_bindir() is None, reason="needs PostgreSQL server binaries to stop one")
async def test_database_down_is_a_503_problem_with_retry_after(downstream: Downstream) -> None:
    server = PostgresServer(max_connections=20)
    try:
        db = (await asyncio.to_thread(server.start)).database
        env = {
            "DATABASE_URL": db.sqlalchemy_url,
            "DOWNSTREAM_URL": downstream.url,
            "CREATE_SCHEMA": "true",
            # Without the ping, the pooled connection's first use after the stop fails on the
            # closed connection itself (SQLAlchemy invalidates it), not on a new connect.
            "DB_POOL_PRE_PING": "false",
            **SMALL_POOLS,
        }
        async with app_process(env) as url, keep_alive_client(url) as client:
            ports: set[int] = set()

            async def send(method: str, path: str, body: object = None) -> httpx.Response:
                response = await client.request(method, path, json=body)
                ports.add(client_port(response))
                return response

            healthy = [await send("GET", "/users/1"), await send("GET", "/raw/users/1")]
            await asyncio.to_thread(server.stop)
            down: list[httpx.Response] = []
            for _ in range(2):
                down.append(await send("GET", "/users/1"))
                down.append(await send("GET", "/raw/users/1"))
                down.append(await send("POST", "/orders", ORDER))
    finally:
        server.stop()
    assert [r.status_code for r in healthy] == [404, 404]  # empty schema, database up
    for response in down:
        body = assert_problem(response, 503)
        assert body["type"] == "urn:poolbench:problem:database-unavailable"
        assert int(response.headers["retry-after"]) >= 1
        assert "127.0.0.1" not in response.text and "Error" not in body["detail"]
    # Every answer came on the one connection the client opened.
    assert len(ports) == 1


def _with_cause(error: Exception, cause: Exception, *, implicit: bool = False) -> Exception:
    if implicit:
        error.__context__ = cause
    else:
        error.__cause__ = cause
    return error


CLOSED = asyncpg.InterfaceError("connection is closed")
REFUSED = ConnectionRefusedError(111, "Connect call failed ('127.0.0.1', 5432)")


@pytest.mark.parametrize(
    ("error", "unavailable"),
    [
        (REFUSED, True),
        (asyncpg.CannotConnectNowError("the database system is shutting down"), True),
        (sqlalchemy.exc.InterfaceError("select", None, CLOSED, connection_invalidated=True), True),
        (
            _with_cause(
                sqlalchemy.exc.DBAPIError("select", None, Exception("adapted")),
                asyncpg.ConnectionDoesNotExistError("connection was closed"),
            ),
            True,
        ),
        (asyncpg.InterfaceError("another operation is in progress"), False),
        (asyncpg.QueryCanceledError("canceling statement due to statement timeout"), False),
        (
            sqlalchemy.exc.IntegrityError("insert", None, asyncpg.UniqueViolationError("dup")),
            False,
        ),
        (_with_cause(RuntimeError("handler bug"), REFUSED, implicit=True), False),
    ],
    ids=[
        "refused",
        "cannot-connect-now",
        "sqlalchemy-invalidated",
        "sqlalchemy-caused-by-lost-connection",
        "asyncpg-misuse",
        "statement-cancelled",
        "unique-violation",
        "unrelated-error-during-handling",
    ],
)
def test_connection_errors_are_told_from_query_errors(error: Exception, unavailable: bool) -> None:
    assert is_connection_error(error) is unavailable
