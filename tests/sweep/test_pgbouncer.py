"""PgBouncer in the loop: a real throwaway PgBouncer 1.18+ in front of a throwaway Postgres.

`make test` installs Debian's pgbouncer (scripts/install-pgbouncer.sh): these tests fail, never
skip, when it is missing.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote, urlsplit

import asyncpg
import psutil
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from poolbench.errors import UsageError
from poolbench.specfile import load_spec
from poolbench.sweep import pgbouncer
from poolbench.sweep.pg import Database, PostgresServer
from poolbench.sweep.pgbouncer import PgBouncerSampler, PgBouncerServer, require_pgbouncer
from poolbench.sweep.pgwire import SimpleQueryClient, WireError
from poolbench.sweep.runner import run_sweep
from tests.sweep.test_sweep import only_dir, read_rows
from tests.sweep.test_sweep import run_sweep as sweep

ROOT = Path(__file__).resolve().parents[2]
SPEC = """
name = "pgbouncer"
scenario = "single_query"
[grid]
pool_size = [4]
max_overflow = [0]
users = [24]
pg_max_size = [1]
app_workers = [2]
pooler = ["pgbouncer"]
pgbouncer_pool_size = [2]
[workload]
sim_latency_ms = 50
[timing]
repetitions = 1
warmup_s = 2
duration_s = 4
"""
# What the sample app passes to asyncpg with DB_PREPARED_STATEMENTS=false.
NO_PREPARED = {
    "statement_cache_size": 0,
    "prepared_statement_cache_size": 0,
    "prepared_statement_name_func": lambda: f"__asyncpg_{uuid.uuid4()}__",
}


@pytest.fixture(scope="module")
def cluster() -> Iterator[Database]:
    with PostgresServer(max_connections=30) as db:
        yield db


def bouncers() -> set[int]:
    return {p.pid for p in psutil.process_iter(["name"]) if p.info["name"] == "pgbouncer"}


def password(dsn: str) -> str:
    return unquote(urlsplit(dsn).password or "")


def test_pgbouncer_is_installed() -> None:
    assert require_pgbouncer().is_file()


def test_missing_pgbouncer_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pgbouncer, "find_pgbouncer", lambda: None)
    with pytest.raises(UsageError, match="make pgbouncer.*brew install pgbouncer"):
        require_pgbouncer()


def test_a_pgbouncer_sweep_needs_the_throwaway_cluster(tmp_path: Path) -> None:
    spec_path = tmp_path / "pgb.toml"
    spec_path.write_text(SPEC)
    with pytest.raises(UsageError, match="needs the throwaway Postgres"):
        run_sweep(
            load_spec(spec_path),
            sweep_dir=tmp_path / "out",
            spec_path=str(spec_path),
            dsn="postgresql://u:p@127.0.0.1:1/x",
            workers=1,
        )
    assert not (tmp_path / "out").exists()


def test_scram_pass_through_for_both_pools_and_the_admin_console(cluster: Database) -> None:
    with PgBouncerServer(cluster, pool_size=2) as bouncer:
        tmp = Path(bouncer.config().split("auth_file = ")[1].splitlines()[0]).parent
        assert oct(tmp.stat().st_mode & 0o777) == "0o700"
        files = {p.name: p.read_text() for p in tmp.iterdir() if p.is_file()}
        # The auth file holds the server's SCRAM verifier; the password is on no disk.
        assert files["userlist.txt"].startswith('"postgres" "SCRAM-SHA-256$4096:')
        assert not any(password(cluster.dsn) in body for body in files.values())
        assert "listen_addr = 127.0.0.1\n" in files["pgbouncer.ini"]
        assert "pool_mode = transaction\n" in files["pgbouncer.ini"]
        assert psutil.Process(bouncer.pid).username() != "root"

        async def load() -> tuple[int, int]:
            url = bouncer.dsn.replace("postgresql://", "postgresql+asyncpg://", 1)
            engine = create_async_engine(url, pool_size=8, connect_args=NO_PREPARED)
            pool = await asyncpg.create_pool(
                bouncer.dsn, min_size=1, max_size=8, statement_cache_size=0
            )
            assert pool is not None

            async def orm(i: int) -> int:
                async with engine.begin() as conn:
                    sql = text("SELECT CAST(:i AS int) FROM pg_sleep(0.02)")
                    return int((await conn.execute(sql, {"i": i})).scalar_one())

            async def raw(i: int) -> int:
                async with pool.acquire() as conn:
                    return int(await conn.fetchval("SELECT $1::int FROM pg_sleep(0.02)", i))

            try:
                # 48 queries from up to 16 clients on 2 server connections: most queue.
                async with asyncio.timeout(60):
                    results = await asyncio.gather(*(f(i) for i in range(24) for f in (orm, raw)))
            finally:
                await pool.close()
                await engine.dispose()
            return len(results), sum(results)

        sampler = PgBouncerSampler(bouncer, interval_s=0.02).begin()
        try:
            count, total = asyncio.run(load())
            sample = sampler.end()
        finally:
            sampler.close()
        assert (count, total) == (48, 2 * sum(range(24)))
        figures = sample.figures()
        assert sample.errors == []
        assert figures["pgb_clients_peak"] > figures["pgb_sv_active_peak"] > 0
        assert figures["pgb_sv_active_peak"] <= 2
        assert figures["pgb_cl_waiting_peak"] > 0 and figures["pgb_wait_mean_ms"] > 0
        # A wrong password is refused by PgBouncer itself.
        wrong = bouncer.dsn.replace(password(cluster.dsn), "wrong", 1)
        with pytest.raises(asyncpg.PostgresError, match="authentication failed"):
            asyncio.run(asyncpg.connect(wrong, timeout=5))
        with pytest.raises(WireError, match="authentication failed"):
            SimpleQueryClient(
                host="127.0.0.1",
                port=bouncer.port or 0,
                user="postgres",
                password="wrong",
                database="pgbouncer",
            )
        pid = bouncer.pid
    assert not tmp.exists() and not psutil.pid_exists(pid or 0)


OWNER_SCRIPT = """
import time
from poolbench.sweep.pg import PostgresServer
from poolbench.sweep.pgbouncer import PgBouncerServer
with PostgresServer() as db, PgBouncerServer(db) as bouncer:
    print(db.pid, bouncer.pid, flush=True)
    time.sleep(60)
"""


def test_pgbouncer_and_postgres_stop_when_their_owner_gets_sigterm() -> None:
    with subprocess.Popen(
        [sys.executable, "-c", OWNER_SCRIPT], cwd=ROOT, stdout=subprocess.PIPE, text=True
    ) as owner:
        assert owner.stdout is not None
        pids = [int(pid) for pid in owner.stdout.readline().split()]
        assert len(pids) == 2 and all(psutil.pid_exists(pid) for pid in pids)
        owner.send_signal(signal.SIGTERM)
        owner.wait(timeout=60)
    deadline = time.monotonic() + 10
    while any(psutil.pid_exists(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(psutil.pid_exists(pid) for pid in pids)


@pytest.mark.slow
def test_a_pgbouncer_sweep_queues_many_clients_on_few_server_connections(tmp_path: Path) -> None:
    spec = tmp_path / "pgb.toml"
    spec.write_text(SPEC)
    before = bouncers()
    result = sweep(str(spec), "--out", str(tmp_path / "out"), "--no-report", timeout=240)
    assert result.returncode == 0, result.stderr[-2000:]
    sweep_dir = only_dir(tmp_path / "out")
    (row,) = read_rows(sweep_dir)[1]
    # Single-valued axes add no run-id part.
    assert row["run_id"] == "p4-o0-s20-u24-q1-r1"
    assert row["pooler"] == "pgbouncer" and row["pgbouncer_pool_size"] == "2"
    assert float(row["error_rate"]) == 0 and int(row["requests"]) > 0
    # Two workers' pools (2 x (4 + 1) clients) on PgBouncer's 2 server connections.
    clients, servers = int(row["pgb_clients_peak"]), int(row["pgb_sv_active_peak"])
    assert int(row["app_max_connections"]) == 10 and clients > servers
    assert 0 < servers <= 2 and 0 < int(row["pg_peak_connections"]) <= 2
    assert int(row["pgb_cl_waiting_peak"]) > 0
    assert float(row["pgb_maxwait_ms"]) > 0 and float(row["pgb_wait_mean_ms"]) > 0
    assert row["bottleneck"] == "pool"
    record = json.loads((sweep_dir / "runs" / row["run_id"] / "run.json").read_text())
    assert record["sampler_errors"] == []
    assert record["point"]["pooler"] == "pgbouncer"
    assert not bouncers() - before, "a PgBouncer outlived the sweep"
