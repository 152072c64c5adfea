"""The Postgres manager starts a real server and never leaves a postmaster behind."""

from __future__ import annotations

import asyncio
import json
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import psutil
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from poolbench.errors import UsageError
from poolbench.secrets import dsn_password, redact_dsn
from poolbench.sweep.dsn import check_database, parse_dsn
from poolbench.sweep.pg import Database, PostgresServer, database, free_port
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
        from poolbench.sweep.pg import PostgresServer
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
        owner.wait(timeout=60)  # a fast shutdown; 30 s was too tight on a loaded host
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
        [sys.executable, "-m", "poolbench.cli", "db", "up"],
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
    assert isinstance(pg, Database)
    assert _psql(pg.dsn, "select 1") == "1"


@pytest.mark.parametrize(
    ("given", "canonical"),
    [
        ("postgresql://u:pw@h:5432/d", "postgresql://u:pw@h:5432/d"),
        ("postgres://u:p%40ss%2Fw@h/d", "postgresql://u:p%40ss%2Fw@h/d"),
        ("postgresql+asyncpg://u:pw@h:1/d", "postgresql://u:pw@h:1/d"),
        ("postgresql://u@h:5432/d?password=p%26w", "postgresql://u:p%26w@h:5432/d"),
        ("postgresql://u@h/d?dbname=other&port=6&user=v", "postgresql://v@h:6/other"),
        ("postgresql://u@[::1]:5432/d", "postgresql://u@[::1]:5432/d"),
        (
            "host=127.0.0.1 port=5432 user=u password='a b\\'c' dbname=d",
            "postgresql://u:a%20b%27c@127.0.0.1:5432/d",
        ),
        ("  user=u  password = pw host=h dbname=d ", "postgresql://u:pw@h/d"),
        ("hostaddr=::1 user=u dbname=d", "postgresql://u@[::1]/d"),
        ("host=/run/pg port=5433 user=u dbname=d", "postgresql://u@/d?host=/run/pg&port=5433"),
    ],
)
def test_parse_dsn_gives_one_canonical_url(given: str, canonical: str) -> None:
    assert parse_dsn(given) == canonical
    assert Database(dsn=given, managed=False).sqlalchemy_url == canonical.replace(
        "postgresql://", "postgresql+asyncpg://", 1
    )


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ("", "empty DSN"),
        ("mysql://u:hunter2pw@h/d", "unsupported DSN scheme 'mysql'"),
        ("db.example.com", "not a postgresql:// URL or key=value"),
        ("u:hunter2pw@db.example.com://x", "not a postgresql:// URL or key=value"),
        ("host=h password='hunter2pw", "unterminated quoted value"),
        ("host=h hunter2pw", "expected keyword=value"),
        ("host=h sslmode=require password=hunter2pw", "unsupported DSN parameter 'sslmode'"),
        ("host=h hunter2pw=x", "unknown DSN parameter"),
        ("postgresql://u:hunter2pw@h:port/d", "invalid port"),
        ("postgresql://u:hunter2pw@h1,h2/d", "one host"),
        ("postgresql://u:hunter#2pw@h/d", "percent-encode"),
        ("postgresql://u@h/d?password=hunter2pw&options=-c%20x", "'options'"),
    ],
)
def test_parse_dsn_rejects_in_one_line_without_the_password(given: str, message: str) -> None:
    with pytest.raises(UsageError) as caught:
        parse_dsn(given)
    text = str(caught.value)
    assert message in text and "\n" not in text
    assert "hunter" not in text and "2pw" not in text


@pytest.fixture(scope="module")
def cluster() -> Iterator[PostgresServer]:
    """A managed cluster of this module's own, so its password is known."""
    server = PostgresServer(max_connections=20).start()
    yield server
    server.stop()


def _dsn_forms(server: PostgresServer) -> list[str]:
    password = dsn_password(server.dsn)
    assert server._tmp is not None
    return [
        server.dsn,
        f"postgres://postgres@127.0.0.1:{server.port}/poolbench?password={password}",
        f"host=127.0.0.1 port={server.port} user=postgres password='{password}' dbname=poolbench",
        f"host={server._tmp / 'sock'} port={server.port} user=postgres password={password}"
        " dbname=poolbench",
    ]


async def _both_clients_connect(dsn: str) -> None:
    url = parse_dsn(dsn)
    conn = await asyncpg.connect(url, timeout=10)
    try:
        assert await conn.fetchval("select current_database()") == "poolbench"
    finally:
        await conn.close()
    engine = create_async_engine(Database(dsn=dsn, managed=False).sqlalchemy_url)
    try:
        async with engine.connect() as sa_conn:
            assert (await sa_conn.execute(text("select current_user"))).scalar() == "postgres"
    finally:
        await engine.dispose()


def test_canonical_dsn_works_with_asyncpg_and_sqlalchemy(cluster: PostgresServer) -> None:
    for dsn in _dsn_forms(cluster):
        asyncio.run(_both_clients_connect(dsn))
        check_database(dsn)


def _check_fails(dsn: str, timeout_s: float = 10.0) -> str:
    with pytest.raises(UsageError) as caught:
        check_database(dsn, timeout_s=timeout_s)
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_check_database_names_a_wrong_password(cluster: PostgresServer) -> None:
    password = dsn_password(cluster.dsn)
    assert password
    wrong = "Wr0ng-" + password[::-1]
    for dsn in _dsn_forms(cluster)[:3]:
        message = _check_fails(dsn.replace(password, wrong))
        assert "password authentication failed" in message, message
        assert f"127.0.0.1:{cluster.port}/poolbench" in message and "postgres" in message
        assert wrong not in message and password not in message


def test_check_database_names_a_missing_database(cluster: PostgresServer) -> None:
    message = _check_fails(cluster.dsn.replace("/poolbench", "/no_such_db"))
    assert "database 'no_such_db' does not exist" in message, message
    assert f"127.0.0.1:{cluster.port}/no_such_db" in message
    assert str(dsn_password(cluster.dsn)) not in message


def test_check_database_names_a_refused_port() -> None:
    port = free_port()
    message = _check_fails(f"postgresql://u:hunter2pw@127.0.0.1:{port}/d")
    assert "connection refused" in message and f"127.0.0.1:{port}/d" in message, message
    assert "hunter2pw" not in message


def test_check_database_times_out_on_a_silent_server() -> None:
    with socket.socket() as silent:  # accepts the TCP handshake, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(4)
        port = silent.getsockname()[1]
        began = time.monotonic()
        message = _check_fails(f"host=127.0.0.1 port={port} user=u password=pw dbname=d", 1.0)
    assert time.monotonic() - began < 5
    assert "no answer within 1 s" in message and f"127.0.0.1:{port}/d" in message, message


OWNER_SCRIPT = textwrap.dedent(
    """
    import time
    from poolbench.sweep.pg import PostgresServer
    server = PostgresServer()
    with server as db:
        print(server._tmp, db.pid, db.dsn, flush=True)
        time.sleep(120)
    """
)


def _start_owner() -> tuple[subprocess.Popen[str], Path, int, str]:
    """A child process owning a cluster: (the child, cluster dir, postmaster pid, DSN)."""
    owner = subprocess.Popen(
        [sys.executable, "-c", OWNER_SCRIPT], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    assert owner.stdout is not None
    cluster_dir, postmaster, dsn = owner.stdout.readline().split()
    return owner, Path(cluster_dir), int(postmaster), dsn


def _wait_gone(pid: int, timeout_s: float = 10) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.1)
    return False


def test_stale_cluster_of_a_killed_owner_is_removed_at_the_next_start() -> None:
    owner, cluster_dir, postmaster, dsn = _start_owner()
    # A session open on it: the postmaster's parent-death SIGTERM (a smart shutdown) waits
    # for it, so the postmaster outlives its owner as after a real SIGKILLed sweep.
    session = subprocess.Popen(
        ["psql", dsn, "-c", "select pg_sleep(120)"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        probe = "select count(*) from pg_stat_activity where query like 'select pg_sleep%'"
        deadline = time.monotonic() + 20
        while _psql(dsn, probe) != "1" and time.monotonic() < deadline:
            time.sleep(0.1)
        owner.kill()
        owner.wait(timeout=10)
        time.sleep(1)
        assert psutil.pid_exists(postmaster) and cluster_dir.exists()  # left behind
        with PostgresServer() as db:
            assert not cluster_dir.exists()
            assert _wait_gone(postmaster)
            assert _psql(db.dsn, "select 1") == "1"
        session.wait(timeout=10)
    finally:
        for proc in (owner, session):
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
        if owner.stdout is not None:
            owner.stdout.close()


def test_clusters_of_live_or_unknown_owners_are_left_alone() -> None:
    owner, cluster_dir, postmaster, _ = _start_owner()
    # No owner file: a cluster of an older poolbench, or one being created this instant.
    unknown = Path(tempfile.mkdtemp(prefix="poolbench-pg-"))
    # An owner file whose pid is alive but started at another time: the pid was reused.
    reused = Path(tempfile.mkdtemp(prefix="poolbench-pg-"))
    try:
        (reused / "owner.json").write_text(json.dumps({"pid": os.getpid(), "started": 1.0}))
        with PostgresServer():
            assert cluster_dir.exists() and psutil.pid_exists(postmaster)
            assert (cluster_dir / "data" / "postmaster.pid").exists()
            assert unknown.exists()
            assert not reused.exists()
    finally:
        owner.terminate()
        owner.wait(timeout=30)
        if owner.stdout is not None:
            owner.stdout.close()
        shutil.rmtree(unknown, ignore_errors=True)
        shutil.rmtree(reused, ignore_errors=True)
    assert _wait_gone(postmaster) and not cluster_dir.exists()
