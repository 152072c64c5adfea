"""The Postgres manager starts a real server and never leaves a postmaster behind."""

from __future__ import annotations

import os
import pwd
import signal
import stat
import subprocess
import sys
import textwrap
import time

import psutil
import pytest

from bench.secrets import dsn_password, redact_dsn
from bench.sweep.pg import PostgresServer, database
from tests.conftest import ROOT


def _psql(dsn: str, sql: str) -> str:
    out = subprocess.run(
        ["psql", dsn, "-Atc", sql], capture_output=True, text=True, check=True, timeout=30
    )
    return out.stdout.strip()


def _psql_fails(dsn: str) -> str:
    """Connect without any password source; return psql's error."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["PGPASSFILE"] = os.devnull
    out = subprocess.run(
        ["psql", dsn, "-w", "-Atc", "select 1"], capture_output=True, text=True, env=env, timeout=30
    )
    assert out.returncode != 0, out.stdout
    return out.stderr


def test_server_applies_settings_and_stops() -> None:
    server = PostgresServer(max_connections=37, settings={"work_mem": "8MB"})
    with server as db:
        assert db.managed and db.pid is not None
        assert _psql(db.dsn, "show max_connections") == "37"
        assert _psql(db.dsn, "show work_mem") == "8MB"
        assert _psql(db.dsn, "select current_database()") == "poolbench"
        pid = db.pid
        data_dir = server._tmp
    assert not psutil.pid_exists(pid)
    assert data_dir is not None and not data_dir.exists()


def test_managed_cluster_needs_its_generated_password() -> None:
    server = PostgresServer()
    with server as db:
        password = dsn_password(db.dsn)
        assert password and len(password) >= 20
        assert _psql(db.dsn, "select current_user") == "postgres"
        no_password = db.dsn.replace(f":{password}@", "@")
        assert "password" in _psql_fails(no_password)
        assert "password authentication failed" in _psql_fails(
            db.dsn.replace(password, "wrong-" + password[:4])
        )
        assert server._tmp is not None
        sock = server._tmp / "sock"
        socket_dsn = f"postgresql://postgres@/poolbench?host={sock}&port={server.port}"
        assert "password" in _psql_fails(socket_dsn)
        assert _psql(f"{socket_dsn}&password={password}", "select 1") == "1"
        # No file of the cluster (config, logs, catalog) holds the password in clear.
        for path in server._tmp.rglob("*"):
            if path.is_file() and not path.is_socket():
                assert password.encode() not in path.read_bytes(), path


def test_socket_directory_is_private_to_the_cluster_user() -> None:
    server = PostgresServer()
    with server:
        assert server._tmp is not None
        info = (server._tmp / "sock").stat()
        assert stat.S_IMODE(info.st_mode) == 0o700
        expected_uid = pwd.getpwnam("postgres").pw_uid if os.geteuid() == 0 else os.geteuid()
        assert info.st_uid == expected_uid


def test_server_stops_when_the_block_raises() -> None:
    server = PostgresServer()
    with pytest.raises(RuntimeError, match="boom"), server as db:
        pid = db.pid
        raise RuntimeError("boom")
    assert pid is not None and not psutil.pid_exists(pid)
    assert server.process is None


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_server_stops_when_its_owner_is_signalled(sig: signal.Signals) -> None:
    script = textwrap.dedent(
        """
        import time
        from bench.sweep.pg import PostgresServer
        with PostgresServer() as db:
            print(db.pid, flush=True)
            time.sleep(60)
        """
    )
    with subprocess.Popen(
        [sys.executable, "-c", script], cwd=ROOT, stdout=subprocess.PIPE, text=True
    ) as owner:
        assert owner.stdout is not None
        postmaster = int(owner.stdout.readline())
        assert psutil.pid_exists(postmaster)
        owner.send_signal(sig)
        owner.wait(timeout=30)
    deadline = time.monotonic() + 10
    while psutil.pid_exists(postmaster) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not psutil.pid_exists(postmaster)


def test_external_dsn_skips_the_embedded_server(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BENCH_DATABASE_URL", "postgresql://u:secret@db.example:5432/app")
    with database() as db:
        assert not db.managed and db.pid is None
        assert db.sqlalchemy_url == "postgresql+asyncpg://u:secret@db.example:5432/app"


def test_redact_dsn_hides_password() -> None:
    assert redact_dsn("postgresql://u:secret@h:1/d") == "postgresql://u:***@h:1/d"
    assert redact_dsn("postgresql://u@h:1/d") == "postgresql://u@h:1/d"


def test_missing_binaries_is_one_clear_error(tmp_path: os.PathLike[str]) -> None:
    env = {**os.environ, "PATH": str(tmp_path), "POOLBENCH_PG_BINDIR": str(tmp_path)}
    env.pop("BENCH_DATABASE_URL", None)
    out = subprocess.run(
        [sys.executable, "-m", "bench.cli", "db", "up"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: no PostgreSQL server binaries")
    assert "BENCH_DATABASE_URL" in lines[0]


def test_fixture_server_is_usable(pg: object) -> None:
    from bench.sweep.pg import Database

    assert isinstance(pg, Database)
    assert _psql(pg.dsn, "select 1") == "1"
