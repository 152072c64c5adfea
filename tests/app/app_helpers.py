"""Helpers for the sample app tests: databases, processes, concurrency and assertions."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
from fastapi import FastAPI
from poolbench.sample_app.main import create_app

from poolbench.sweep.pg import Database, free_port

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
APP_DB = "poolbench_app_tests"
SEED_USERS = 50
SEED_ORDERS_PER_USER = 2
SEED_ITEMS_PER_ORDER = 2
START_TIMEOUT_S = 20.0
FAILING_PATH = "/test/unexpected-error"


def with_database(dsn: str, name: str) -> str:
    """Return the DSN pointing at another database of the same server."""
    return urlunsplit(urlsplit(dsn)._replace(path=f"/{name}"))


async def create_database(pg: Database, name: str) -> str:
    """(Re)create an empty database on the test server; return its libpq DSN."""
    conn = await asyncpg.connect(pg.dsn)
    try:
        await conn.execute(f'drop database if exists "{name}" with (force)')
        await conn.execute(f'create database "{name}"')
    finally:
        await conn.close()
    return with_database(pg.dsn, name)


@dataclass(frozen=True)
class AppDatabase:
    """The seeded database of the app tests, in both URL forms."""

    dsn: str

    @property
    def sqlalchemy_url(self) -> str:
        return self.dsn.replace("postgresql://", "postgresql+asyncpg://", 1)


class Downstream:
    """A running downstream stub process."""

    def __init__(self, latency_ms: float) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "poolbench.sample_app.downstream"]
            + ["--port", str(self.port), "--latency-ms", str(latency_ms)],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        wait_http_ok(f"{self.url}/stats", self.process)

    def stats(self) -> dict[str, int]:
        return dict(httpx.get(f"{self.url}/stats").json())

    def reset(self) -> None:
        httpx.post(f"{self.url}/stats/reset").raise_for_status()

    def stop(self) -> None:
        stop_process(self.process)


def wait_http_ok(
    url: str, process: subprocess.Popen[bytes], timeout_s: float = START_TIMEOUT_S
) -> None:
    """Poll `url` until it answers 200; fail with the process's stderr if it dies."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            err = process.stderr.read().decode() if process.stderr else ""
            raise AssertionError(f"process exited with {process.returncode}: {err}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=1.0).status_code == 200:
                return
        time.sleep(0.05)
    stop_process(process)
    raise AssertionError(f"{url} not ready after {timeout_s} s")


def stop_process(process: subprocess.Popen[bytes], timeout_s: float = 10.0) -> int:
    """Terminate, then kill; return the exit code."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=timeout_s)
    if process.stderr:
        process.stderr.close()
    return process.returncode


AppRunner = Callable[..., Any]


@contextlib.contextmanager
def started(argv: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """Run a process with its output in `log` (a pipe could fill and stall it); always stop it."""
    with open(log, "wb") as out:
        process = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            yield process
        finally:
            stop_process(process)


def create_app_with_failing_route() -> FastAPI:
    """The app from the environment plus FAILING_PATH, which raises (`uvicorn --factory`)."""
    app = create_app()

    @app.get(FAILING_PATH)
    async def fail() -> None:
        raise RuntimeError("boom: secret internals")

    return app


@asynccontextmanager
async def app_process(
    env: Mapping[str, str], *, target: str = "poolbench.sample_app.main:app", factory: bool = False
) -> AsyncIterator[str]:
    """Run the app in a real uvicorn process with these env vars; yield its base URL."""
    port = free_port()
    argv = [sys.executable, "-m", "uvicorn", target, "--port", str(port)]
    url = f"http://127.0.0.1:{port}"
    # The log goes to a file: a pipe nobody reads fills up after 64 KiB of tracebacks, and the
    # app's event loop then blocks on its next log line.
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(
            argv + (["--factory"] if factory else []),
            cwd=ROOT,
            env={**os.environ, **env},
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
        try:
            await asyncio.to_thread(wait_http_ok, f"{url}/health", process)
        except AssertionError as error:
            stop_process(process)
            log.seek(0)
            raise AssertionError(f"{error}\n{log.read().decode(errors='replace')}") from None
        try:
            yield url
        finally:
            stop_process(process)


def keep_alive_client(url: str) -> httpx.AsyncClient:
    """A client with a single connection, so consecutive requests reuse it while it stays open."""
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    return httpx.AsyncClient(base_url=url, limits=limits)


def client_port(response: httpx.Response) -> int:
    """Return the local port of the connection that carried the response."""
    host, port = response.extensions["network_stream"].get_extra_info("client_addr")
    return int(port)


async def fetch_val(dsn: str, query: str, *args: object) -> Any:
    """Run one query on a fresh connection and return the first value."""
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetchval(query, *args)
    finally:
        await conn.close()


async def concurrently(*coros: Any) -> list[Any]:
    """Run coroutines concurrently with a TaskGroup; return their results in order."""
    async with asyncio.TaskGroup() as group:
        tasks = [group.create_task(coro) for coro in coros]
    return [task.result() for task in tasks]


def assert_problem(response: httpx.Response, status: int) -> dict[str, Any]:
    """Assert an RFC 7807 response with the given status; return its body."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert {"type", "title", "status", "detail", "instance", "request_id"} <= body.keys()
    assert body["status"] == status
    assert body["request_id"] == response.headers["x-request-id"]
    return dict(body)


def server_timing(response: httpx.Response) -> dict[str, float]:
    """Parse `Server-Timing: name;dur=x, ...` into {name: ms}."""
    result = {}
    for part in response.headers["server-timing"].split(","):
        name, _, dur = part.strip().partition(";dur=")
        result[name] = float(dur)
    return result
