"""docker-compose.yml is not run here (no Docker): check it against the code it must match."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from poolbench.sample_app.config import Settings

from tests.conftest import ROOT

COMPOSE = ROOT / "docker-compose.yml"


def services() -> dict[str, dict[str, Any]]:
    return dict(yaml.safe_load(COMPOSE.read_text())["services"])


def test_every_app_setting_in_compose_is_a_real_setting() -> None:
    fields = {name.upper() for name in Settings.model_fields}
    for name, service in services().items():
        for key in service.get("environment", {}):
            if not key.startswith(("POOLBENCH_", "POSTGRES_", "APP_WORKERS", "DEFAULT_POOL")):
                assert key in fields, f"{name}: {key} is not a sample_app setting"


def test_published_ports_bind_to_loopback_only() -> None:
    published = [p for s in services().values() for p in s.get("ports", [])]
    assert published and all(str(p).startswith("127.0.0.1:") for p in published)


def test_behind_pgbouncer_the_app_turns_prepared_statements_off() -> None:
    app = services()["app"]["environment"]
    assert "@pgbouncer:6432/" in app["DATABASE_URL"]
    assert app["DB_PREPARED_STATEMENTS"] == "false"


def test_files_and_modules_it_names_exist() -> None:
    text = COMPOSE.read_text()
    for module in set(re.findall(r"sample_app\.(\w+)", text)):
        assert (ROOT / "sample_app" / f"{module}.py").is_file(), module
    for scenario in set(re.findall(r"scenarios/(\w+)\.py", text)):
        assert (ROOT / "scenarios" / f"{scenario}.py").is_file(), scenario
    for path in ("deploy/Dockerfile", "deploy/pgbouncer-entrypoint.sh"):
        assert (ROOT / path).is_file() and path in text
    assert "password" not in (ROOT / "deploy" / "Dockerfile").read_text().lower()


def test_no_password_is_written_into_the_repository() -> None:
    text = COMPOSE.read_text() + Path(ROOT / "deploy" / "pgbouncer-entrypoint.sh").read_text()
    # Every password is a reference to the environment, never a literal.
    for literal in re.findall(r"postgres:([^@\s]+)@", text):
        assert literal.startswith("${POOLBENCH_DB_PASSWORD"), literal
