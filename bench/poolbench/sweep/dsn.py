"""Postgres DSNs: parse a URL or key=value conninfo into one `Dsn`, spell it, check it connects.

Every URL poolbench hands on (to asyncpg, SQLAlchemy, PgBouncer's clients) is built by
`Dsn.url`. Errors are one line and never quote the password; redaction of text that may hold
one is `poolbench.secrets`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import getpass
import os
import re
from dataclasses import dataclass
from urllib.parse import quote, unquote

import asyncpg

from poolbench.errors import UsageError
from poolbench.secrets import parse_conninfo

DSN_ENV = "BENCH_DATABASE_URL"
DEFAULT_PORT = 5432
DEFAULT_CHECK_TIMEOUT_S = 10.0
SQLALCHEMY_SCHEME = "postgresql+asyncpg"
_URL_SCHEMES = ("postgresql", "postgres", SQLALCHEMY_SCHEME)
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
_BAD_PORT = "invalid port in the DSN (percent-encode any '?', '/', '@' or ':' in the password)"


@dataclass(frozen=True, kw_only=True)
class Dsn:
    """The parts of a DSN that poolbench passes on; `url` is their one spelling."""

    user: str
    password: str | None
    host: str  # a name, an address, a socket directory, or "" for the client's default
    port: int | None
    dbname: str

    def __post_init__(self) -> None:
        if self.port is not None and not 0 < self.port < 65536:
            raise UsageError(_BAD_PORT)

    @classmethod
    def parse(cls, text: str) -> Dsn:
        """Read a postgresql:// URL or a libpq key=value conninfo.

        Raises UsageError with one line that never quotes the password.
        """
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
        values = _known_values(params)
        host = values.get("hostaddr") or values.get("host", "")
        if "," in host or "," in values.get("port", ""):
            raise UsageError("the DSN names several hosts: give one host")
        port = values.get("port", "")
        if port and not port.isdigit():
            raise UsageError(_BAD_PORT)
        user = values.get("user") or os.environ.get("PGUSER") or getpass.getuser()
        dbname = values.get("dbname") or os.environ.get("PGDATABASE") or user
        return cls(
            user=user,
            password=values.get("password") or None,
            host=host,
            port=int(port) if port else None,
            dbname=dbname,
        )

    @property
    def url(self) -> str:
        """The canonical postgresql:// URL, password (if any) in the userinfo."""
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
    def sqlalchemy_url(self) -> str:
        """The URL in SQLAlchemy's asyncpg form."""
        return self.url.replace("postgresql://", f"{SQLALCHEMY_SCHEME}://", 1)

    @property
    def target(self) -> str:
        """Where and as whom, without the password: `host:port/db as user 'u'`."""
        host = self.host or "the default host"
        return f"{host}:{self.port or DEFAULT_PORT}/{self.dbname} as user {self.user!r}"

    @property
    def tcp(self) -> bool:
        """True when the DSN names a TCP host and port (not a socket or the default host)."""
        return bool(self.host) and not self.host.startswith("/") and self.port is not None

    def at(self, host: str, port: int) -> Dsn:
        """The same user, password and database at another address (a pooler in front)."""
        return dataclasses.replace(self, host=host, port=port)


def parse_dsn(text: str) -> str:
    """Return a URL or key=value DSN as a canonical postgresql:// URL, password in the userinfo.

    Raises UsageError with one line that never quotes the password.
    """
    return Dsn.parse(text).url


def _known_values(params: list[tuple[str, str]]) -> dict[str, str]:
    """The pairs poolbench passes on, by canonical key; anything else is an error."""
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
    return values


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
    parsed = Dsn.parse(dsn)
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


def _one_line(exc: BaseException, dsn: Dsn) -> str:
    text = " ".join(str(exc).split()) or "no detail"
    return text.replace(dsn.password, "***") if dsn.password else text
