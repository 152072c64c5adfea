"""DSN redaction and secret scrubbing in one place: no password reaches disk.

A password reaches a DSN in three places, and every one is covered: a URL's userinfo
(`postgresql://user:pw@host/db`), a URL's query (`?password=pw`, libpq and asyncpg both
accept it) and a libpq key=value conninfo (`host=h password=pw` or `password='p w'`).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus, unquote, unquote_plus

MASK = "***"
_URL_RE = re.compile(r"^[a-z][a-z0-9+.-]*://", re.IGNORECASE)
_SECRET_KEY_RE = re.compile(r"password|passwd|secret|token", re.IGNORECASE)
# libpq ends the userinfo at the first '@', asyncpg (urllib) at the last one before the path:
# masking up to the last '@' before any '/' covers both readings.
_USERINFO_RE = re.compile(r"(?P<head>://[^:/@\s]*:)[^/\s]*(?=@)")
_PASSWORD_KEY = r"\w*pass(?:word|wd)"  # password, sslpassword, PGPASSWORD, db_passwd ...
# In a DSN the query value runs to the next '&'; in free text also to a space, quote or tag.
_DSN_QUERY_RE = re.compile(rf"(?P<head>[?&]{_PASSWORD_KEY}=)[^&\s]*", re.IGNORECASE)
_TEXT_QUERY_RE = re.compile(rf"(?P<head>[?&]{_PASSWORD_KEY}=)[^&#\s\"'<]*", re.IGNORECASE)
_TEXT_JSON_RE = re.compile(
    rf"(?P<head>(?P<q>[\"']){_PASSWORD_KEY}(?P=q)\s*:\s*)"
    r"(?:\"(?:[^\"\\]|\\.)*\"|'(?:[^'\\]|\\.)*')",
    re.IGNORECASE,
)
# key=value as libpq reads it (quoted with backslash escapes, or up to whitespace); in free
# text an unquoted value also stops at a double quote or a tag, and HTML-escaped quotes count.
_TEXT_CONNINFO_RE = re.compile(
    rf"(?P<head>(?<![\w?&]){_PASSWORD_KEY}\s*=\s*)"
    r"(?:'(?:[^'\\]|\\.)*'?|&#(?:x27|39);.*?&#(?:x27|39);|(?:\\.|[^\s\"<\\])+)",
    re.IGNORECASE,
)
_PASSWORD_NAME_RE = re.compile(rf"^{_PASSWORD_KEY}$", re.IGNORECASE)


def _masked(match: re.Match[str]) -> str:
    return match.group("head") + MASK


def parse_conninfo(text: str) -> list[tuple[str, str]]:
    """Return the (keyword, value) pairs of a libpq key=value conninfo, in order.

    Raises ValueError naming what is wrong, never quoting the text (it may hold a password).
    """
    return [(key, value) for key, value, _, _ in _conninfo_tokens(text)]


def _conninfo_tokens(text: str) -> list[tuple[str, str, int, int]]:
    """libpq's conninfo_parse: (keyword, unescaped value, value start, value end) per pair."""
    tokens: list[tuple[str, str, int, int]] = []
    i, n = 0, len(text)
    while True:
        while i < n and text[i].isspace():
            i += 1
        if i == n:
            break
        key_start = i
        while i < n and not text[i].isspace() and text[i] != "=":
            i += 1
        key = text[key_start:i]
        while i < n and text[i].isspace():
            i += 1
        if i == n or text[i] != "=" or not key:
            raise ValueError("expected keyword=value pairs")
        i += 1
        while i < n and text[i].isspace():
            i += 1
        start, chars = i, []
        if i < n and text[i] == "'":
            i += 1
            while True:
                if i == n:
                    raise ValueError("unterminated quoted value")
                if text[i] == "\\" and i + 1 < n:
                    i += 1
                elif text[i] == "'":
                    i += 1
                    break
                chars.append(text[i])
                i += 1
        else:
            while i < n and not text[i].isspace():
                if text[i] == "\\" and i + 1 < n:
                    i += 1
                chars.append(text[i])
                i += 1
        tokens.append((key, "".join(chars), start, i))
    return tokens


def _is_password_key(key: str) -> bool:
    return bool(_PASSWORD_NAME_RE.match(unquote(key)))


def _url_passwords(url: str) -> list[str]:
    """The raw (still percent-encoded) password spellings of a URL: userinfo, then query."""
    rest = url.split("://", 1)[1]
    authority = rest.split("/", 1)[0]
    found = []
    if "@" in authority:
        userinfo = authority.rsplit("@", 1)[0]
        # A '?' before the '@' may start a query rather than a password: keep both readings.
        if ":" in userinfo:
            found.append(userinfo.split(":", 1)[1])
    query = rest.split("?", 1)[1] if "?" in rest else ""
    for param in query.split("&"):
        key, eq, value = param.partition("=")
        if eq and _is_password_key(key):
            found.append(value)
    return found


def _raw_passwords(dsn: str) -> list[tuple[str, str]]:
    """Every password a DSN carries as (as written, as the server sees it); the last wins."""
    text = dsn.strip()
    if _URL_RE.match(text):
        return [(raw, unquote(raw)) for raw in _url_passwords(text)]
    try:
        tokens = _conninfo_tokens(text)
    except ValueError:
        return []
    return [(text[s:e], value) for key, value, s, e in tokens if _is_password_key(key)]


def redact_dsn(dsn: str) -> str:
    """Return the DSN with any password replaced, safe to log or write to disk."""
    text = dsn.strip()
    if _URL_RE.match(text):
        return _DSN_QUERY_RE.sub(_masked, _USERINFO_RE.sub(_masked, text))
    try:
        tokens = _conninfo_tokens(text)
    except ValueError:
        return scrub_secrets(dsn)
    for key, _, start, end in reversed(tokens):
        if _is_password_key(key):
            text = text[:start] + MASK + text[end:]
    return text


def dsn_password(dsn: str | None) -> str | None:
    """Return the password a DSN carries, decoded as libpq reads it, if any."""
    if not dsn:
        return None
    passwords = [plain for _, plain in _raw_passwords(dsn) if plain]
    return passwords[-1] if passwords else None


def password_spellings(dsn: str | None) -> list[str]:
    """Every way a DSN's passwords may be written out: decoded, percent-encoded, escaped.

    Longest first, so replacing them in turn leaves no tail of a longer one.
    """
    spellings: set[str] = set()
    for raw, plain in _raw_passwords(dsn or ""):
        for spelling in (raw, plain, unquote_plus(raw), quote(plain, safe=""), quote(plain)):
            spellings |= {spelling, quote_plus(plain), json.dumps(plain)[1:-1]}
    return sorted((s for s in spellings if s), key=len, reverse=True)


def scrub_secrets(text: str) -> str:
    """Replace every password in free text: URL userinfo and query, key=value, JSON pairs."""
    text = _USERINFO_RE.sub(_masked, text)
    text = _TEXT_QUERY_RE.sub(_masked, text)
    text = _TEXT_JSON_RE.sub(lambda m: f"{m.group('head')}{m.group('q')}{MASK}{m.group('q')}", text)
    return _TEXT_CONNINFO_RE.sub(_masked, text)


def scrub_tree(value: Any) -> Any:
    """Return a copy of a JSON-like value with every DSN password and secret-named key redacted."""
    if isinstance(value, dict):
        return {
            str(k): MASK if _SECRET_KEY_RE.search(str(k)) else scrub_tree(v)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [scrub_tree(v) for v in value]
    if isinstance(value, str):
        # A whole DSN is redacted by its own grammar (a quoted password may hold spaces).
        return scrub_secrets(redact_dsn(value) if _raw_passwords(value) else value)
    return value


def redact_files(directory: Path, dsn: str | None) -> None:
    """Replace a DSN's password, in every spelling, in every file under a directory."""
    spellings = [s.encode() for s in password_spellings(dsn)]
    if not spellings:
        return
    for path in directory.rglob("*"):
        if not path.is_file() or path.is_symlink():
            continue
        data = original = path.read_bytes()
        for spelling in spellings:
            data = data.replace(spelling, MASK.encode())
        if data != original:
            path.write_bytes(data)
