"""A minimal PostgreSQL wire client for PgBouncer's admin console: simple queries, SCRAM login.

The admin console (`SHOW POOLS`, `SHOW STATS` on the virtual `pgbouncer` database) speaks only
the simple query protocol; asyncpg always prepares (extended protocol) and reads no rows from a
simple query. Standard library only: startup, SCRAM-SHA-256 (RFC 5802/7677, no channel
binding), `Q` queries whose values come back as text, `X` to leave.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import secrets
import socket
import struct

PROTOCOL_VERSION = 196608  # 3.0
DEFAULT_TIMEOUT_S = 5.0
_SCRAM = "SCRAM-SHA-256"
_AUTH_OK, _AUTH_CLEARTEXT, _AUTH_SASL, _AUTH_SASL_CONTINUE, _AUTH_SASL_FINAL = 0, 3, 10, 11, 12


class WireError(Exception):
    """The server refused, or said something this client does not understand."""


def _message(kind: bytes, payload: bytes) -> bytes:
    return kind + struct.pack("!i", len(payload) + 4) + payload


def _hmac(key: bytes, text: bytes) -> bytes:
    return hmac.new(key, text, hashlib.sha256).digest()


class SimpleQueryClient:
    """One connection; `query(sql)` returns rows as {column: text or None}."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        user: str,
        password: str,
        database: str,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        self._sock = socket.create_connection((host, port), timeout=timeout_s)
        self._buffer = b""
        try:
            params = f"user\0{user}\0database\0{database}\0\0".encode()
            self._sock.sendall(struct.pack("!ii", len(params) + 8, PROTOCOL_VERSION) + params)
            self._login(password)
        except BaseException:
            self._sock.close()
            raise

    # --- reading ----------------------------------------------------------------------------

    def _read(self, count: int) -> bytes:
        while len(self._buffer) < count:
            chunk = self._sock.recv(65536)
            if not chunk:
                raise WireError("the server closed the connection")
            self._buffer += chunk
        data, self._buffer = self._buffer[:count], self._buffer[count:]
        return data

    def _next(self) -> tuple[bytes, bytes]:
        kind = self._read(1)
        (length,) = struct.unpack("!i", self._read(4))
        payload = self._read(length - 4)
        if kind == b"E":
            fields = {f[:1]: f[1:].decode(errors="replace") for f in payload.split(b"\0") if f}
            raise WireError(fields.get(b"M", "error"))
        return kind, payload

    # --- login ------------------------------------------------------------------------------

    def _login(self, password: str) -> None:
        nonce = base64.b64encode(secrets.token_bytes(18)).decode()
        first_bare = f"n=,r={nonce}"
        salted = b""
        auth_message = ""
        while True:
            kind, payload = self._next()
            if kind == b"Z":
                return
            if kind != b"R":
                continue  # ParameterStatus, BackendKeyData, notices
            (code,) = struct.unpack("!i", payload[:4])
            data = payload[4:]
            if code == _AUTH_OK:
                continue
            if code == _AUTH_CLEARTEXT:
                self._sock.sendall(_message(b"p", password.encode() + b"\0"))
            elif code == _AUTH_SASL:
                if _SCRAM.encode() not in data.split(b"\0"):
                    raise WireError(f"the server offers no {_SCRAM}")
                initial = f"n,,{first_bare}".encode()
                body = _SCRAM.encode() + b"\0" + struct.pack("!i", len(initial)) + initial
                self._sock.sendall(_message(b"p", body))
            elif code == _AUTH_SASL_CONTINUE:
                server_first = data.decode()
                fields = dict(part.split("=", 1) for part in server_first.split(","))
                if not fields["r"].startswith(nonce):
                    raise WireError("SCRAM: the server's nonce does not extend ours")
                salt, rounds = base64.b64decode(fields["s"]), int(fields["i"])
                salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, rounds)
                client_key = _hmac(salted, b"Client Key")
                without_proof = f"c=biws,r={fields['r']}"
                auth_message = f"{first_bare},{server_first},{without_proof}"
                signature = _hmac(hashlib.sha256(client_key).digest(), auth_message.encode())
                proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
                final = f"{without_proof},p={base64.b64encode(proof).decode()}"
                self._sock.sendall(_message(b"p", final.encode()))
            elif code == _AUTH_SASL_FINAL:
                expected = _hmac(_hmac(salted, b"Server Key"), auth_message.encode())
                given = dict(part.split("=", 1) for part in data.decode().split(","))
                if not hmac.compare_digest(base64.b64decode(given.get("v", "")), expected):
                    raise WireError("SCRAM: the server's signature does not match")
            else:
                raise WireError(f"unsupported authentication request {code}")

    # --- queries ----------------------------------------------------------------------------

    def query(self, sql: str) -> list[dict[str, str | None]]:
        """Run one simple query; every row as {column: value as text, or None for NULL}."""
        self._sock.sendall(_message(b"Q", sql.encode() + b"\0"))
        columns: list[str] = []
        rows: list[dict[str, str | None]] = []
        error: WireError | None = None
        while True:
            try:
                kind, payload = self._next()
            except WireError as exc:
                error = exc  # the server still ends the query with ReadyForQuery
                continue
            if kind == b"T":
                columns = _columns(payload)
            elif kind == b"D":
                rows.append(dict(zip(columns, _values(payload), strict=True)))
            elif kind == b"Z":
                if error is not None:
                    raise error
                return rows

    def close(self) -> None:
        """Say goodbye and close the socket."""
        with contextlib.suppress(OSError):
            self._sock.sendall(_message(b"X", b""))
        self._sock.close()

    def __enter__(self) -> SimpleQueryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _columns(payload: bytes) -> list[str]:
    (count,) = struct.unpack("!h", payload[:2])
    names, offset = [], 2
    for _ in range(count):
        end = payload.index(b"\0", offset)
        names.append(payload[offset:end].decode())
        offset = end + 1 + 18  # table oid, attnum, type oid, typlen, typmod, format
    return names


def _values(payload: bytes) -> list[str | None]:
    (count,) = struct.unpack("!h", payload[:2])
    values: list[str | None] = []
    offset = 2
    for _ in range(count):
        (length,) = struct.unpack("!i", payload[offset : offset + 4])
        offset += 4
        if length < 0:
            values.append(None)
            continue
        values.append(payload[offset : offset + length].decode(errors="replace"))
        offset += length
    return values
