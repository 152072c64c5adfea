"""A throwaway PostgreSQL cluster on loopback, or an external server given by DSN."""

from __future__ import annotations

import atexit
import contextlib
import glob
import importlib.util
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from secrets import token_urlsafe

from poolbench.errors import PostgresStartError, PostgresUnavailable
from poolbench.sweep.dsn import DSN_ENV, Dsn
from poolbench.sweep.pgcluster import (
    CLUSTER_PREFIX,
    remove_stale_clusters,
    stop_postmaster,
    write_owner,
)
from poolbench.sweep.procgroup import file_tail, spawn_leader, unwind_on_sigterm

BINDIR_ENV = "POOLBENCH_PG_BINDIR"
DEFAULT_DATABASE = "poolbench"
DEFAULT_MAX_CONNECTIONS = 100
DEFAULT_START_TIMEOUT_S = 30.0
# A benchmark cluster is disposable: durability costs fsyncs on a shared VM disk that would
# otherwise dominate every write scenario and hide the pool effects we measure.
DEFAULT_SERVER_SETTINGS: Mapping[str, str] = {
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "shared_buffers": "128MB",
}
SUPERUSER = "postgres"
LOOPBACK = "127.0.0.1"  # where every throwaway server listens
LOG_NAME = "postgres.log"
PASSWORD_BYTES = 24  # token_urlsafe(24): 32 characters, 192 random bits
_UNPRIVILEGED_USERS = ("postgres", "nobody")


def find_bindir() -> Path | None:
    """Return a directory holding `initdb` and `postgres`, preferring system binaries.

    POOLBENCH_PG_BINDIR, when set, is the only place looked at.
    """
    candidates: list[str] = []
    if env := os.environ.get(BINDIR_ENV):
        return _usable_bindir([env])
    if pg_config := shutil.which("pg_config"):
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, timeout=10, check=True
            )
            candidates.append(out.stdout.strip())
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    if spec := importlib.util.find_spec("pgserver"):
        if spec.origin:
            candidates.append(str(Path(spec.origin).parent / "pginstall" / "bin"))
    return _usable_bindir(candidates)


def _usable_bindir(candidates: list[str]) -> Path | None:
    for candidate in candidates:
        path = Path(candidate)
        if (path / "initdb").is_file() and (path / "postgres").is_file():
            return path
    return None


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def unprivileged_user() -> str | None:
    """The OS user to run a server as when we are root (Postgres and PgBouncer refuse root)."""
    if os.geteuid() != 0:
        return None
    for name in _UNPRIVILEGED_USERS:
        with contextlib.suppress(KeyError):
            pwd.getpwnam(name)
            return name
    raise PostgresUnavailable("running as root and no 'postgres' or 'nobody' user to run Postgres")


@dataclass(frozen=True, kw_only=True)
class Database:
    """Where to connect: a libpq-style DSN plus facts the benchmark records."""

    dsn: str
    managed: bool
    max_connections: int | None = None
    pid: int | None = None

    @property
    def sqlalchemy_url(self) -> str:
        """Return the DSN in SQLAlchemy's asyncpg form (any form parse_dsn reads)."""
        return Dsn.parse(self.dsn).sqlalchemy_url


class PostgresServer:
    """A throwaway cluster in a temp dir; stopped on exit, on exception and on SIGTERM/SIGINT.

    Its superuser has a password generated per start, kept in memory only (the DSN and child
    environments): scram-sha-256 over TCP and the socket, whose directory only the cluster's
    OS user can enter.
    """

    def __init__(
        self,
        *,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        settings: Mapping[str, str] | None = None,
        bindir: Path | None = None,
        start_timeout_s: float = DEFAULT_START_TIMEOUT_S,
    ) -> None:
        if max_connections < 1:
            raise ValueError("max_connections must be >= 1")
        self.max_connections = max_connections
        self.settings = {**DEFAULT_SERVER_SETTINGS, **(settings or {})}
        self.bindir = bindir
        self.start_timeout_s = start_timeout_s
        self.port: int | None = None
        self.process: subprocess.Popen[bytes] | None = None
        self._tmp: Path | None = None
        self._password: str | None = None

    @property
    def dsn(self) -> str:
        """The superuser's URL, password included: keep it in memory, never write it out."""
        if self.port is None or self._password is None:
            raise RuntimeError("server not started")
        return Dsn(
            user=SUPERUSER,
            password=self._password,
            host=LOOPBACK,
            port=self.port,
            dbname=DEFAULT_DATABASE,
        ).url

    @property
    def database(self) -> Database:
        pid = self.process.pid if self.process else None
        return Database(dsn=self.dsn, managed=True, max_connections=self.max_connections, pid=pid)

    def start(self) -> PostgresServer:
        bindir = self.bindir or find_bindir()
        if bindir is None:
            where = f" in {os.environ[BINDIR_ENV]}" if os.environ.get(BINDIR_ENV) else ""
            raise PostgresUnavailable(
                f"no PostgreSQL server binaries found{where}: install postgresql (apt-get install "
                f"postgresql) or `pip install pgserver`, or set {DSN_ENV} to an existing server"
            )
        user = unprivileged_user()
        remove_stale_clusters()
        self._tmp = Path(tempfile.mkdtemp(prefix=CLUSTER_PREFIX))
        self._password = token_urlsafe(PASSWORD_BYTES)
        atexit.register(self.stop)
        try:
            write_owner(self._tmp)
            self._init_cluster(bindir, user)
            self._launch(bindir, user)
            self._wait_ready(bindir)
            self._run(
                [str(bindir / "createdb"), "-h", LOOPBACK, "-p", str(self.port)]
                + ["-U", SUPERUSER, DEFAULT_DATABASE],
                user,
                env={**os.environ, "PGPASSWORD": self._password},
            )
        except BaseException:
            self.stop()
            raise
        return self

    def _run(
        self,
        argv: list[str],
        user: str | None,
        *,
        env: Mapping[str, str] | None = None,
        stdin: int | None = None,
    ) -> None:
        result = subprocess.run(
            argv, user=user, env=env, stdin=stdin, capture_output=True, text=True, timeout=60
        )
        if result.returncode != 0:
            detail = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"]
            raise PostgresStartError(f"{Path(argv[0]).name} failed: {detail[0]}")

    def _init_cluster(self, bindir: Path, user: str | None) -> None:
        assert self._tmp is not None and self._password is not None
        for sub in ("data", "sock"):
            (self._tmp / sub).mkdir(mode=0o700)
            os.chmod(self._tmp / sub, 0o700)  # whatever the umask
        entry = pwd.getpwnam(user) if user else None
        if entry:
            for path in (self._tmp, self._tmp / "data", self._tmp / "sock"):
                os.chown(path, entry.pw_uid, entry.pw_gid)
        # initdb reads the password from a pipe: it never touches the disk. The cluster's
        # user may open /dev/stdin only if the pipe is its own.
        read_fd, write_fd = os.pipe()
        try:
            with os.fdopen(write_fd, "w") as pipe:
                pipe.write(self._password + "\n")
            if entry:
                os.fchown(read_fd, entry.pw_uid, entry.pw_gid)
            self._run(
                [str(bindir / "initdb"), "-D", str(self._tmp / "data"), "-U", SUPERUSER]
                + ["--pwfile=/dev/stdin", "--auth=scram-sha-256"]
                + ["--encoding=UTF8", "--no-locale", "--no-sync"],
                user,
                stdin=read_fd,
            )
        finally:
            os.close(read_fd)

    def _launch(self, bindir: Path, user: str | None) -> None:
        assert self._tmp is not None
        self.port = free_port()
        argv = [str(bindir / "postgres"), "-D", str(self._tmp / "data"), "-p", str(self.port)]
        argv += ["-k", str(self._tmp / "sock"), "-c", f"listen_addresses={LOOPBACK}"]
        argv += ["-c", f"max_connections={self.max_connections}"]
        for key, value in self.settings.items():
            argv += ["-c", f"{key}={value}"]
        self.process = spawn_leader(argv, log_path=self._tmp / LOG_NAME, user=user)
        unwind_on_sigterm()

    def _wait_ready(self, bindir: Path) -> None:
        assert self.process is not None and self._tmp is not None
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise PostgresStartError(f"postgres exited at start-up: {self.log_tail()}")
            ready = subprocess.run(
                [str(bindir / "pg_isready"), "-q", "-h", LOOPBACK, "-p", str(self.port)],
                timeout=10,
            )
            if ready.returncode == 0:
                return
            time.sleep(0.1)
        raise PostgresStartError(f"postgres not ready after {self.start_timeout_s:.0f} s")

    def log_tail(self, lines: int = 3) -> str:
        return file_tail(self._tmp / LOG_NAME if self._tmp else None, lines)

    def stop(self) -> None:
        """Stop the postmaster (fast shutdown, then harder) and delete the cluster. Idempotent."""
        process, self.process = self.process, None
        if process is not None:
            stop_postmaster(process)
        tmp, self._tmp = self._tmp, None
        self._password = None
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        atexit.unregister(self.stop)

    def __enter__(self) -> Database:
        return self.start().database

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def database(
    *,
    dsn: str | None = None,
    max_connections: int = DEFAULT_MAX_CONNECTIONS,
    settings: Mapping[str, str] | None = None,
) -> Iterator[Database]:
    """Yield a database: the DSN given (or from BENCH_DATABASE_URL), else a throwaway cluster."""
    dsn = dsn or os.environ.get(DSN_ENV)
    if dsn:
        yield Database(dsn=Dsn.parse(dsn).url, managed=False)
        return
    with PostgresServer(max_connections=max_connections, settings=settings) as db:
        yield db
