"""A throwaway PgBouncer in transaction mode in front of the throwaway Postgres, and its sampler.

Started and stopped like `PostgresServer`: a 0700 temp dir, a free loopback port, a private
unix socket directory, the kernel's SIGTERM if the runner dies, and `stop()` from the runner's
cleanup. No password reaches the disk: the auth file holds the server's SCRAM verifier
(`pg_authid.rolpassword`), and PgBouncer (>= 1.14) logs in to Postgres with the keys of the
client's own SCRAM exchange (pass-through), so clients and the admin console use the cluster's
password, which stays in memory.
"""

from __future__ import annotations

import asyncio
import atexit
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg

from poolbench.defaults import DEFAULT_PGBOUNCER_POOL_SIZE
from poolbench.errors import RunError, UsageError
from poolbench.results import PGBOUNCER_COLUMNS
from poolbench.sweep.dsn import Dsn
from poolbench.sweep.pg import LOOPBACK, Database, free_port, unprivileged_user
from poolbench.sweep.pgwire import SimpleQueryClient, WireError
from poolbench.sweep.procgroup import file_tail, spawn_leader, stop_group, unwind_on_sigterm

DEFAULT_MAX_CLIENT_CONN = 500
DEFAULT_START_TIMEOUT_S = 15.0
DEFAULT_STOP_TIMEOUT_S = 10.0
STOP_SIGNAL = signal.SIGTERM  # immediate shutdown; SIGINT would wait for every client to leave
LOG_NAME = "pgbouncer.log"
DEFAULT_SAMPLE_INTERVAL_S = 0.15
ADMIN_DATABASE = "pgbouncer"
DIR_PREFIX = "poolbench-pgb-"
SYSTEM_BINARY = "/usr/sbin/pgbouncer"  # Debian's package puts it outside a user's PATH
INSTALL_HINT = (
    "install it with `make pgbouncer` (Debian/Ubuntu: apt-get install pgbouncer; macOS: brew "
    "install pgbouncer; Fedora/RHEL: dnf install pgbouncer) so that `pgbouncer` is on PATH"
)
# Startup parameters asyncpg and other drivers send that PgBouncer would otherwise refuse.
IGNORED_STARTUP_PARAMETERS = ("extra_float_digits", "options")


def find_pgbouncer() -> Path | None:
    """The pgbouncer binary: on PATH, else Debian's /usr/sbin/pgbouncer."""
    found = shutil.which("pgbouncer")
    if found is None and os.access(SYSTEM_BINARY, os.X_OK):
        found = SYSTEM_BINARY
    return Path(found) if found else None


def require_pgbouncer() -> Path:
    """The binary, or a UsageError saying how to install it."""
    binary = find_pgbouncer()
    if binary is None:
        raise UsageError(f"pooler = pgbouncer needs PgBouncer, which is not found: {INSTALL_HINT}")
    return binary


async def _scram_verifier(dsn: str, user: str) -> str:
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        secret = await conn.fetchval("SELECT rolpassword FROM pg_authid WHERE rolname = $1", user)
    finally:
        await conn.close(timeout=5)
    if not isinstance(secret, str) or not secret.startswith("SCRAM-SHA-256$"):
        raise RunError(f"PgBouncer: the role {user!r} has no SCRAM-SHA-256 password in Postgres")
    return secret


def _upstream(dsn: str) -> tuple[Dsn, str]:
    """The Postgres to pool and its password (PgBouncer's clients log in with it)."""
    upstream = Dsn.parse(dsn)
    if not upstream.password or not upstream.tcp:
        raise RunError("PgBouncer needs a TCP Postgres with a password (the throwaway cluster)")
    return upstream, upstream.password


class PgBouncerServer:
    """PgBouncer in transaction mode on 127.0.0.1, pooling one database for its superuser."""

    def __init__(
        self,
        upstream: Database,
        *,
        pool_size: int = DEFAULT_PGBOUNCER_POOL_SIZE,
        max_client_conn: int = DEFAULT_MAX_CLIENT_CONN,
        start_timeout_s: float = DEFAULT_START_TIMEOUT_S,
    ) -> None:
        if pool_size < 1:
            raise ValueError("pool_size must be >= 1")
        self.upstream, self._password = _upstream(upstream.dsn)
        self._upstream_dsn = upstream.dsn
        self.pool_size = pool_size
        self.max_client_conn = max_client_conn
        self.start_timeout_s = start_timeout_s
        self.port: int | None = None
        self.process: subprocess.Popen[bytes] | None = None
        self._tmp: Path | None = None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    @property
    def dsn(self) -> str:
        """Where the app connects: PgBouncer's port, the cluster's user, password and database."""
        if self.port is None:
            raise RuntimeError("pgbouncer not started")
        return self.upstream.at(LOOPBACK, self.port).url

    @property
    def database(self) -> Database:
        return Database(dsn=self.dsn, managed=True, pid=self.pid)

    def admin(self) -> SimpleQueryClient:
        """A new connection to the admin console (the `pgbouncer` database)."""
        if self.port is None:
            raise RuntimeError("pgbouncer not started")
        return SimpleQueryClient(
            host=LOOPBACK,
            port=self.port,
            user=self.upstream.user,
            password=self._password,
            database=ADMIN_DATABASE,
        )

    def config(self) -> str:
        """pgbouncer.ini (paths filled in at start)."""
        assert self._tmp is not None and self.port is not None
        up = self.upstream
        return "\n".join(
            [
                "[databases]",
                f"{up.dbname} = host={up.host} port={up.port} dbname={up.dbname}",
                "[pgbouncer]",
                f"listen_addr = {LOOPBACK}",
                f"listen_port = {self.port}",
                f"unix_socket_dir = {self._tmp / 'sock'}",
                "unix_socket_mode = 0700",
                "auth_type = scram-sha-256",
                f"auth_file = {self._tmp / 'userlist.txt'}",
                f"admin_users = {up.user}",
                "pool_mode = transaction",
                f"default_pool_size = {self.pool_size}",
                "min_pool_size = 0",
                "reserve_pool_size = 0",
                f"max_client_conn = {self.max_client_conn}",
                # Transaction pooling: nothing of a session survives a transaction to reset.
                "server_reset_query =",
                f"ignore_startup_parameters = {','.join(IGNORED_STARTUP_PARAMETERS)}",
                "log_connections = 0",
                "log_disconnections = 0",
                "",
            ]
        )

    def start(self) -> PgBouncerServer:
        binary = require_pgbouncer()
        user = unprivileged_user()  # PgBouncer refuses to run as root
        verifier = asyncio.run(_scram_verifier(self._upstream_dsn, self.upstream.user))
        self._tmp = Path(tempfile.mkdtemp(prefix=DIR_PREFIX))
        atexit.register(self.stop)
        try:
            os.chmod(self._tmp, 0o700)
            (self._tmp / "sock").mkdir(mode=0o700)
            self.port = free_port()
            files = {
                "userlist.txt": f'"{self.upstream.user}" "{verifier}"\n',
                "pgbouncer.ini": self.config(),
            }
            for name, text in files.items():
                path = self._tmp / name
                path.touch(mode=0o600)
                path.write_text(text)
            if user:
                entry = pwd.getpwnam(user)
                for path in (self._tmp, self._tmp / "sock", *(self._tmp / n for n in files)):
                    os.chown(path, entry.pw_uid, entry.pw_gid)
            self._launch(binary, user)
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _launch(self, binary: Path, user: str | None) -> None:
        assert self._tmp is not None
        argv = [str(binary), str(self._tmp / "pgbouncer.ini")]
        self.process = spawn_leader(argv, log_path=self._tmp / LOG_NAME, user=user)
        unwind_on_sigterm()

    def _wait_ready(self) -> None:
        assert self.process is not None
        deadline = time.monotonic() + self.start_timeout_s
        last = "no answer"
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RunError(f"pgbouncer exited at start-up: {self.log_tail()}")
            try:
                with self.admin() as console:
                    console.query("SHOW VERSION")
                return
            except (OSError, WireError) as exc:
                last = f"{type(exc).__name__}: {exc}"
            time.sleep(0.1)
        raise RunError(f"pgbouncer not ready after {self.start_timeout_s:.0f} s ({last})")

    def log_tail(self, lines: int = 3) -> str:
        return file_tail(self._tmp / LOG_NAME if self._tmp else None, lines)

    def stop(self) -> None:
        """SIGTERM (immediate shutdown), then SIGKILL; delete the directory. Idempotent."""
        process, self.process = self.process, None
        if process is not None:
            stop_group(process, STOP_SIGNAL, DEFAULT_STOP_TIMEOUT_S)
        tmp, self._tmp = self._tmp, None
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        atexit.unregister(self.stop)

    def __enter__(self) -> PgBouncerServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --- the window's figures -----------------------------------------------------------------


def _int(row: dict[str, str | None], key: str) -> int:
    try:
        return int(row.get(key) or 0)
    except ValueError:
        return 0


@dataclass(kw_only=True)
class PgBouncerSample:
    """Peaks of SHOW POOLS over the window and SHOW STATS at its edges, for one database."""

    cl_waiting_peak: int = 0
    clients_peak: int = 0  # cl_active + cl_waiting: clients logged in
    sv_active_peak: int = 0
    maxwait_ms: float = 0.0
    stats_first: dict[str, int] = field(default_factory=dict)
    stats_last: dict[str, int] = field(default_factory=dict)
    samples: int = 0
    errors: list[str] = field(default_factory=list)

    def figures(self) -> dict[str, Any]:
        """The runs.csv `pgb_*` columns (blank when nothing was sampled)."""
        if not self.samples:
            return dict.fromkeys(PGBOUNCER_COLUMNS)
        xacts = self.stats_last.get("total_xact_count", 0) - self.stats_first.get(
            "total_xact_count", 0
        )
        wait_us = self.stats_last.get("total_wait_time", 0) - self.stats_first.get(
            "total_wait_time", 0
        )
        return {
            "pgb_cl_waiting_peak": self.cl_waiting_peak,
            "pgb_maxwait_ms": self.maxwait_ms,
            "pgb_sv_active_peak": self.sv_active_peak,
            "pgb_clients_peak": self.clients_peak,
            "pgb_wait_mean_ms": wait_us / xacts / 1000 if xacts > 0 else None,
        }


class PgBouncerSampler:
    """Reads SHOW POOLS every ~150 ms while the window is open, SHOW STATS at its edges."""

    def __init__(
        self, server: PgBouncerServer, interval_s: float = DEFAULT_SAMPLE_INTERVAL_S
    ) -> None:
        self.dbname = server.upstream.dbname
        self.sample = PgBouncerSample()
        self._console = server.admin()
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _pools(self) -> None:
        try:
            rows = self._console.query("SHOW POOLS")
        except (OSError, WireError) as exc:
            self.sample.errors.append(f"SHOW POOLS: {exc}")
            return
        sample = self.sample
        for row in rows:
            if row.get("database") != self.dbname:
                continue
            waiting = _int(row, "cl_waiting")
            sample.cl_waiting_peak = max(sample.cl_waiting_peak, waiting)
            sample.clients_peak = max(sample.clients_peak, _int(row, "cl_active") + waiting)
            sample.sv_active_peak = max(sample.sv_active_peak, _int(row, "sv_active"))
            maxwait_ms = _int(row, "maxwait") * 1000 + _int(row, "maxwait_us") / 1000
            sample.maxwait_ms = max(sample.maxwait_ms, maxwait_ms)
        sample.samples += 1

    def _stats(self) -> dict[str, int]:
        try:
            rows = self._console.query("SHOW STATS")
        except (OSError, WireError) as exc:
            self.sample.errors.append(f"SHOW STATS: {exc}")
            return {}
        row = next((r for r in rows if r.get("database") == self.dbname), {})
        return {key: _int(row, key) for key in ("total_xact_count", "total_wait_time")}

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            self._pools()

    def begin(self) -> PgBouncerSampler:
        """Open the window: SHOW STATS, then SHOW POOLS in the background."""
        self.sample.stats_first = self._stats()
        self._pools()
        self._thread.start()
        return self

    def end(self) -> PgBouncerSample:
        """Close the window: a last SHOW POOLS and SHOW STATS."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        self._pools()
        self.sample.stats_last = self._stats()
        return self.sample

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        self._console.close()
