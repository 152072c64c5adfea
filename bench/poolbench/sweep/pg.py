"""A throwaway PostgreSQL cluster on loopback, or an external server given by DSN."""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import ctypes
import getpass
import glob
import importlib.util
import json
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from secrets import token_urlsafe
from urllib.parse import quote, unquote

import asyncpg
import psutil

from poolbench.errors import PostgresStartError, PostgresUnavailable, UsageError
from poolbench.secrets import parse_conninfo

DSN_ENV = "BENCH_DATABASE_URL"
BINDIR_ENV = "POOLBENCH_PG_BINDIR"
DEFAULT_DATABASE = "poolbench"
DEFAULT_MAX_CONNECTIONS = 100
DEFAULT_START_TIMEOUT_S = 30.0
DEFAULT_STOP_TIMEOUT_S = 15.0
DEFAULT_CHECK_TIMEOUT_S = 10.0
# A benchmark cluster is disposable: durability costs fsyncs on a shared VM disk that would
# otherwise dominate every write scenario and hide the pool effects we measure.
DEFAULT_SERVER_SETTINGS: Mapping[str, str] = {
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "shared_buffers": "128MB",
}
SUPERUSER = "postgres"
PASSWORD_BYTES = 24  # token_urlsafe(24): 32 characters, 192 random bits
CLUSTER_PREFIX = "poolbench-pg-"
OWNER_FILE = "owner.json"  # {"pid": ..., "started": ...} of the process that made the cluster
# psutil derives a start time from the boot time, which the kernel may report a second apart.
_START_TIME_TOLERANCE_S = 2.0
_UNPRIVILEGED_USERS = ("postgres", "nobody")
_PR_SET_PDEATHSIG = 1
_URL_SCHEMES = ("postgresql", "postgres", "postgresql+asyncpg")
_SCHEME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
# What both asyncpg.connect(url) and SQLAlchemy's asyncpg dialect (which hands URL query
# parameters to asyncpg.connect as keywords) read the same way. sslmode, options and the like
# are spelt differently by the two, so the sample app could not honour them.
_DSN_KEYS = ("host", "hostaddr", "port", "user", "password", "dbname")
_DSN_ALIASES = {"database": "dbname"}  # asyncpg's spelling in a URL query
# libpq's other keywords, named in the error; an unknown key may be a mistyped password.
_LIBPQ_KEYWORDS = frozenset(
    "passfile channel_binding connect_timeout client_encoding options application_name "
    "fallback_application_name keepalives keepalives_idle keepalives_interval "
    "keepalives_count tcp_user_timeout replication gssencmode sslmode requiressl "
    "sslcompression sslcert sslkey sslpassword sslcertmode sslrootcert sslcrl sslcrldir sslsni "
    "requirepeer require_auth ssl_min_protocol_version ssl_max_protocol_version krbsrvname "
    "gsslib gssdelegation service target_session_attrs load_balance_hosts".split()
)
_DSN_HINT = "give a postgresql:// URL or key=value pairs such as 'host=... dbname=...'"


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
        sock.bind(("127.0.0.1", 0))
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


def die_with_parent() -> None:
    """Ask the kernel to SIGTERM this (child) process when its parent dies; a preexec_fn."""
    # Belt and braces: if the benchmark process is SIGKILLed, no `finally` runs.
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def file_tail(path: Path | None, lines: int = 3) -> str:
    """The last lines of a server's log on one line, for error messages."""
    if path is None or not path.exists():
        return "no log"
    text = path.read_text(errors="replace").strip().splitlines()
    return " | ".join(text[-lines:]) or "empty log"


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
        return parse_dsn(self.dsn).replace("postgresql://", "postgresql+asyncpg://", 1)


@dataclass(frozen=True, kw_only=True)
class _Dsn:
    """The parts of a DSN that poolbench passes on; `url` is the canonical spelling."""

    user: str
    password: str | None
    host: str  # a name, an address, a socket directory, or "" for the client's default
    port: int | None
    dbname: str

    @property
    def url(self) -> str:
        userinfo = quote(self.user, safe="")
        if self.password:
            userinfo += ":" + quote(self.password, safe="")
        port = f":{self.port}" if self.port else ""
        if self.host.startswith("/"):  # a socket directory goes in the query, both read it
            query = f"?host={quote(self.host)}" + (f"&port={self.port}" if self.port else "")
            return f"postgresql://{userinfo}@/{quote(self.dbname, safe='')}{query}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"postgresql://{userinfo}@{host}{port}/{quote(self.dbname, safe='')}"

    @property
    def target(self) -> str:
        """Where and as whom, without the password: `host:port/db as user 'u'`."""
        host = self.host or "the default host"
        return f"{host}:{self.port or 5432}/{self.dbname} as user {self.user!r}"


def parse_dsn(text: str) -> str:
    """Return a URL or key=value DSN as a canonical postgresql:// URL, password in the userinfo.

    Raises UsageError with one line that never quotes the password.
    """
    return _parse(text).url


def _parse(text: str) -> _Dsn:
    text = text.strip()
    if not text:
        raise UsageError(f"empty DSN: {_DSN_HINT}")
    if _SCHEME_RE.match(text):  # a bare scheme token: quoting it cannot reveal a password
        scheme = text.partition("://")[0]
        if scheme.lower() not in _URL_SCHEMES:
            raise UsageError(f"unsupported DSN scheme {scheme!r}: use postgresql://")
        params = _url_params(text)
    elif "=" in text:
        try:
            params = parse_conninfo(text)
        except ValueError as exc:
            raise UsageError(f"invalid DSN: {exc}; {_DSN_HINT}") from None
    else:
        raise UsageError(f"DSN is not a postgresql:// URL or key=value pairs: {_DSN_HINT}")
    values: dict[str, str] = {}
    for key, value in params:
        key = _DSN_ALIASES.get(key, key)
        if key not in _DSN_KEYS:
            if key in _LIBPQ_KEYWORDS:
                raise UsageError(
                    f"unsupported DSN parameter {key!r}: poolbench passes on only "
                    f"{', '.join(_DSN_KEYS)}"
                )
            raise UsageError(f"unknown DSN parameter: poolbench reads {', '.join(_DSN_KEYS)}")
        values[key] = value  # as in libpq, a later value wins
    host = values.get("hostaddr") or values.get("host", "")
    if "," in host or "," in values.get("port", ""):
        raise UsageError("the DSN names several hosts: give one host")
    port = values.get("port", "")
    if port and not (port.isdigit() and 0 < int(port) < 65536):
        raise UsageError(
            "invalid port in the DSN (percent-encode any '?', '/', '@' or ':' in the password)"
        )
    user = values.get("user") or os.environ.get("PGUSER") or getpass.getuser()
    dbname = values.get("dbname") or os.environ.get("PGDATABASE") or user
    return _Dsn(
        user=user,
        password=values.get("password") or None,
        host=host,
        port=int(port) if port else None,
        dbname=dbname,
    )


def _url_params(url: str) -> list[tuple[str, str]]:
    """The (keyword, value) pairs of a postgresql:// URL, decoded, query last (it wins)."""
    rest = url.partition("://")[2]
    if "#" in rest:
        raise UsageError(
            "the DSN has a '#': percent-encode '#', '?', '/' and '@' in the password "
            "(%23, %3F, %2F, %40)"
        )
    cut = min((i for i in (rest.find("/"), rest.find("?")) if i >= 0), default=len(rest))
    authority, tail = rest[:cut], rest[cut:]
    path, _, query = tail.partition("?")
    params: list[tuple[str, str]] = []
    userinfo, at, hostport = authority.rpartition("@")
    if at:
        user, colon, password = userinfo.partition(":")
        params.append(("user", unquote(user)))
        if colon:
            params.append(("password", unquote(password)))
    if hostport.startswith("["):
        host, _, port = hostport[1:].partition("]")
        port = port.removeprefix(":")
    else:
        host, _, port = hostport.partition(":")
    params += [("host", unquote(host)), ("port", port)]
    if path.strip("/"):
        params.append(("dbname", unquote(path[1:])))
    for param in query.split("&") if query else []:
        key, eq, value = param.partition("=")
        if not eq:
            raise UsageError(f"invalid DSN: a query parameter without '='; {_DSN_HINT}")
        params.append((unquote(key), unquote(value)))
    return [(key, value) for key, value in params if value or key == "password"]


def check_database(dsn: str, *, timeout_s: float = DEFAULT_CHECK_TIMEOUT_S) -> None:
    """Connect once; raise UsageError with one line naming the cause and the redacted target.

    Call it from sync code (it runs its own event loop), before anything starts.
    """
    parsed = _parse(dsn)
    try:
        asyncio.run(_connect_once(parsed.url, timeout_s))
    except asyncpg.InvalidPasswordError:
        cause = "password authentication failed"
    except asyncpg.InvalidAuthorizationSpecificationError as exc:
        cause = f"not authorised ({_one_line(exc, parsed)})"
    except asyncpg.InvalidCatalogNameError:
        cause = f"database {parsed.dbname!r} does not exist"
    except TimeoutError:
        cause = f"no answer within {timeout_s:g} s"
    except ConnectionRefusedError:
        cause = "connection refused (is Postgres running and listening there?)"
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        if "Connect call failed" in str(exc) or "refused" in str(exc).lower():
            cause = "connection refused (is Postgres running and listening there?)"
        else:
            cause = f"{type(exc).__name__}: {_one_line(exc, parsed)}"
    else:
        return
    raise UsageError(f"cannot connect to {parsed.target}: {cause}")


async def _connect_once(url: str, timeout_s: float) -> None:
    async with asyncio.timeout(timeout_s):
        conn = await asyncpg.connect(url, timeout=timeout_s)
    await conn.close(timeout=timeout_s)


def _one_line(exc: BaseException, dsn: _Dsn) -> str:
    text = " ".join(str(exc).split()) or "no detail"
    return text.replace(dsn.password, "***") if dsn.password else text


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
        userinfo = f"{SUPERUSER}:{quote(self._password, safe='')}"
        return f"postgresql://{userinfo}@127.0.0.1:{self.port}/{DEFAULT_DATABASE}"

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
            _write_owner(self._tmp / OWNER_FILE)
            self._init_cluster(bindir, user)
            self._launch(bindir, user)
            self._wait_ready(bindir)
            self._run(
                [str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(self.port)]
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
        argv += ["-k", str(self._tmp / "sock"), "-c", "listen_addresses=127.0.0.1"]
        argv += ["-c", f"max_connections={self.max_connections}"]
        for key, value in self.settings.items():
            argv += ["-c", f"{key}={value}"]
        log = open(self._tmp / "postgres.log", "wb")  # noqa: SIM115 - handed to the child
        with log:
            self.process = subprocess.Popen(
                argv,
                user=user,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                preexec_fn=die_with_parent,
            )
        _guard_signals()

    def _wait_ready(self, bindir: Path) -> None:
        assert self.process is not None and self._tmp is not None
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise PostgresStartError(f"postgres exited at start-up: {self.log_tail()}")
            ready = subprocess.run(
                [str(bindir / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(self.port)],
                timeout=10,
            )
            if ready.returncode == 0:
                return
            time.sleep(0.1)
        raise PostgresStartError(f"postgres not ready after {self.start_timeout_s:.0f} s")

    def log_tail(self, lines: int = 3) -> str:
        return file_tail(self._tmp / "postgres.log" if self._tmp else None, lines)

    def stop(self) -> None:
        """Stop the postmaster (fast shutdown, then harder) and delete the cluster. Idempotent."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            for sig, wait_s in (
                (signal.SIGINT, DEFAULT_STOP_TIMEOUT_S),
                (signal.SIGQUIT, 5.0),
                (signal.SIGKILL, 5.0),
            ):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, sig)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(timeout=wait_s)
                    break
        tmp, self._tmp = self._tmp, None
        self._password = None
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        atexit.unregister(self.stop)

    def __enter__(self) -> Database:
        return self.start().database

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _write_owner(path: Path) -> None:
    me = psutil.Process()
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"pid": me.pid, "started": me.create_time()}))
    tmp.rename(path)  # a reader sees the whole file or none


def _owner_alive(cluster_dir: Path) -> bool:
    """False only when the owner file proves its process gone; unknown counts as alive."""
    try:
        owner = json.loads((cluster_dir / OWNER_FILE).read_text())
        pid, started = int(owner["pid"]), float(owner["started"])
    except (OSError, ValueError, KeyError, TypeError):
        return True  # an older poolbench's cluster, or one being created right now
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return False
        return abs(process.create_time() - started) < _START_TIME_TOLERANCE_S
    except psutil.NoSuchProcess:
        return False
    except psutil.Error:
        return True


def _stop_stale_postmaster(data_dir: Path) -> None:
    try:
        pid = int((data_dir / "postmaster.pid").read_text().split("\n", 1)[0])
        postmaster = psutil.Process(pid)
        # The pid may have been reused: only a postgres serving this data directory is ours.
        if str(data_dir) not in postmaster.cmdline():
            return
    except (OSError, ValueError, psutil.Error):
        return
    for sig, wait_s in (
        (signal.SIGINT, DEFAULT_STOP_TIMEOUT_S),
        (signal.SIGQUIT, 5.0),
        (signal.SIGKILL, 5.0),
    ):
        with contextlib.suppress(OSError):
            # We started it as a session leader: its group holds the backends too.
            os.killpg(pid, sig) if sig == signal.SIGKILL else os.kill(pid, sig)
        with contextlib.suppress(psutil.TimeoutExpired, psutil.NoSuchProcess):
            postmaster.wait(timeout=wait_s)
            return


def remove_stale_clusters(tmp_root: Path | None = None) -> list[Path]:
    """Stop and delete the clusters whose owner process is dead (a SIGKILLed sweep's).

    Clusters of live owners, and any without an owner file, are left alone.
    """
    root = tmp_root or Path(tempfile.gettempdir())
    removed = []
    for cluster_dir in sorted(root.glob(CLUSTER_PREFIX + "*")):
        if not cluster_dir.is_dir() or cluster_dir.is_symlink() or _owner_alive(cluster_dir):
            continue
        _stop_stale_postmaster(cluster_dir / "data")
        shutil.rmtree(cluster_dir, ignore_errors=True)
        removed.append(cluster_dir)
    return removed


def _raise_system_exit(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


def _guard_signals() -> None:
    """Turn SIGTERM into SystemExit so `with` blocks unwind and stop their servers."""
    with contextlib.suppress(ValueError):  # not the main thread: the caller owns signals
        if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
            signal.signal(signal.SIGTERM, _raise_system_exit)


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
        yield Database(dsn=parse_dsn(dsn), managed=False)
        return
    with PostgresServer(max_connections=max_connections, settings=settings) as db:
        yield db
