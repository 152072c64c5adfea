"""Bad settings fail at start-up, naming the variable, with no traceback."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from poolbench.sample_app.config import Settings
from poolbench.sample_app.main import settings_error_message
from pydantic import ValidationError

from tests.app.app_helpers import ROOT, AppRunner


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("db_pool_size", 0),
        ("db_max_overflow", -1),
        ("db_pool_timeout_s", 0),
        ("http_concurrency_limit", 0),
        ("sim_query_latency_ms", -5),
        ("log_level", "LOUD"),
    ],
)
def test_invalid_value_names_the_field(field: str, value: object) -> None:
    with pytest.raises(ValidationError) as caught:
        Settings(_env_file=None, **{field: value})
    message = settings_error_message(caught.value)
    assert field.upper() in message
    assert repr(value) in message


def test_cross_field_rule_is_explained() -> None:
    with pytest.raises(ValidationError) as caught:
        Settings(_env_file=None, pg_pool_min_size=5, pg_pool_max_size=2)
    assert "PG_POOL_MIN_SIZE must be <= PG_POOL_MAX_SIZE" in settings_error_message(caught.value)


def test_environment_is_read_and_validated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DB_POOL_SIZE", "7")
    monkeypatch.setenv("HTTP_CONCURRENCY_LIMIT", "3")
    settings = Settings(_env_file=None)
    assert (settings.db_pool_size, settings.http_concurrency_limit) == (7, 3)
    monkeypatch.setenv("DB_POOL_SIZE", "0")
    with pytest.raises(ValidationError, match="db_pool_size"):
        Settings(_env_file=None)


def test_server_with_bad_env_exits_with_a_readable_message() -> None:
    env = {**os.environ, "DB_POOL_SIZE": "0", "HTTP_TIMEOUT_S": "soon"}
    result = subprocess.run(
        [sys.executable, "-m", "uvicorn", "poolbench.sample_app.main:app", "--port", "1"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode != 0
    assert "invalid settings:" in result.stderr
    assert "DB_POOL_SIZE: Input should be greater than or equal to 1 (got '0')" in result.stderr
    assert "HTTP_TIMEOUT_S" in result.stderr
    assert "Traceback" not in result.stderr


async def test_without_prepared_statements_both_pools_still_serve(run_app: AppRunner) -> None:
    """DB_PREPARED_STATEMENTS=false (for PgBouncer's transaction pooling) keeps every path up."""
    async with run_app(db_prepared_statements=False) as (app, client):
        for path in ("/users/1", "/raw/users/1", "/users/1", "/raw/users/1"):
            response = await client.get(path)
            assert response.status_code == 200, (path, response.text)
        engine = app.state.resources.engine
        async with engine.connect() as conn:
            raw = await conn.get_raw_connection()
            asyncpg_conn = raw.driver_connection
            assert asyncpg_conn is not None
            assert asyncpg_conn._stmt_cache.get_max_size() == 0
