"""Shared fixtures: one real Postgres per test session (or BENCH_DATABASE_URL)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from poolbench.sweep.pg import Database, database

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def pg() -> Iterator[Database]:
    """A real PostgreSQL server for the whole session."""
    with database(max_connections=200) as db:
        yield db
