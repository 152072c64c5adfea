"""Fuzz every operation of the app's OpenAPI (schemathesis) against a real process and Postgres.

Valid and invalid inputs alike must get an answer the app meant to give: no 5xx (a pool
timeout's 503 with Retry-After is the one allowed), and every error as problem+json.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir
from poolbench.sample_app.config import Settings
from poolbench.sample_app.main import create_app
from poolbench.sample_app.seed import seed
from schemathesis import Case, HookContext

from poolbench.sweep.pg import Database
from tests.app.app_helpers import (
    SEED_ITEMS_PER_ORDER,
    SEED_ORDERS_PER_USER,
    SEED_USERS,
    AppDatabase,
    Downstream,
    app_process,
    create_database,
)

# Fixtures (app_db, downstream(s), run_app) live in tests/app/conftest.py.

# Hypothesis writes caches (unicode data, source constants) under ./.hypothesis as soon as
# strategies are built, at collection; `database=None` below covers only the example database.
_HYPOTHESIS_HOME = tempfile.mkdtemp(prefix="poolbench-hypothesis-")
atexit.register(shutil.rmtree, _HYPOTHESIS_HOME, ignore_errors=True)
set_hypothesis_home_dir(_HYPOTHESIS_HOME)

FUZZ_DB = "poolbench_app_fuzz"
# Enough for the generators to reach boundaries and invalid shapes on each operation while
# the whole run stays well under a minute on a busy 2-core host.
MAX_EXAMPLES = 25
# /cpu's work_ms is its runtime: keep generated values small, the validation is the same.
MAX_FUZZ_WORK_MS = 20.0
PROBLEM_FIELDS = {"type", "title", "status"}
# A hung request fails the test instead of blocking the run.
REQUEST_TIMEOUT_S = 30


@pytest.fixture(scope="module")
async def fuzz_app_url(
    pg: Database, downstreams: Callable[[float], Downstream]
) -> AsyncIterator[str]:
    """The app in a real uvicorn process, on a database of its own (the fuzz writes orders)."""
    db = AppDatabase(await create_database(pg, FUZZ_DB))
    await seed(
        db.sqlalchemy_url,
        users=SEED_USERS,
        orders_per_user=SEED_ORDERS_PER_USER,
        items_per_order=SEED_ITEMS_PER_ORDER,
        reset=True,
    )
    env = {
        "DATABASE_URL": db.sqlalchemy_url,
        "DOWNSTREAM_URL": downstreams(1).url,
        "CREATE_SCHEMA": "false",
    }
    async with app_process(env) as url:
        yield url


# Built from the app itself: its OpenAPI needs no database, so the operations are known at
# collection and each becomes a test; the requests go to the running process.
schema = schemathesis.openapi.from_dict(create_app(Settings(_env_file=None)).openapi())


@schema.hook
def flatmap_body(context: HookContext, body: Any) -> st.SearchStrategy[Any]:
    """Point some generated orders at a seeded user, so that their items reach Postgres."""
    # A random user id almost never exists, and a missing user is a 404 before any insert:
    # without this the generated skus would never be stored.
    operation = context.operation
    if operation is None or operation.path != "/orders" or not isinstance(body, dict):
        return st.just(body)
    if not isinstance(body.get("user_id"), int | float):  # JSON Schema integers may be 3.0
        return st.just(body)
    seeded = st.integers(1, SEED_USERS).map(lambda user_id: {**body, "user_id": user_id})
    return st.one_of(st.just(body), seeded)


def _cap_cpu_work(case: Case) -> None:
    query = case.query
    if case.path != "/cpu" or not query or "work_ms" not in query:
        return
    try:
        work_ms = float(query["work_ms"])
    except (TypeError, ValueError):
        return  # not a number: rejected before any work
    if work_ms > MAX_FUZZ_WORK_MS:  # False for NaN, which stays as generated
        query["work_ms"] = MAX_FUZZ_WORK_MS


@pytest.mark.slow
@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
def test_no_generated_request_gets_a_server_error(fuzz_app_url: str, case: Case) -> None:
    _cap_cpu_work(case)
    response = case.call(base_url=fuzz_app_url, timeout=REQUEST_TIMEOUT_S)
    status = response.status_code
    headers = {name.lower(): values for name, values in response.headers.items()}
    context = f"{case.method} {case.formatted_path} -> {status}: {response.text_lossy()[:300]}"
    if status == 503 and case.path == "/health":
        return  # readiness answers its own body; a failed check is not a request error
    if status >= 500:
        assert status == 503 and "retry-after" in headers, context
    if status >= 400:
        assert headers.get("content-type") == ["application/problem+json"], context
        body = response.json()
        assert isinstance(body, dict) and PROBLEM_FIELDS <= body.keys(), context
        assert body["status"] == status, context
