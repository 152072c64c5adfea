"""DSN redaction and secret scrubbing in one place: no password reaches disk."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

MASK = "***"
_PASSWORD_RE = re.compile(r"(://[^:/@\s]*:)[^@\s]*@")
_URL_RE = re.compile(r"^[a-z][a-z0-9+.-]*://", re.IGNORECASE)
_SECRET_KEY_RE = re.compile(r"password|passwd|secret|token", re.IGNORECASE)


def redact_dsn(dsn: str) -> str:
    """Return the DSN with any password replaced, safe to log or write to disk."""
    try:
        url = make_url(dsn)
    except (ArgumentError, ValueError):
        return scrub_secrets(dsn)
    if url.password is None:
        return dsn
    return url.render_as_string(hide_password=True)


def dsn_password(dsn: str | None) -> str | None:
    """Return the password a DSN carries, if any (to scrub it from files)."""
    if not dsn:
        return None
    try:
        password = make_url(dsn).password
    except (ArgumentError, ValueError):
        return None
    return str(password) if password else None


def scrub_secrets(text: str) -> str:
    """Replace any `scheme://user:password@` password in free text with `***`."""
    return _PASSWORD_RE.sub(rf"\1{MASK}@", text)


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
        if _URL_RE.match(value.strip()):
            value = redact_dsn(value.strip())
        return scrub_secrets(value)
    return value


def redact_files(directory: Path, dsn: str | None) -> None:
    """Replace a DSN's password in every text file of a directory (logs may echo the URL)."""
    password = dsn_password(dsn)
    if not password:
        return
    for path in directory.iterdir():
        if path.is_file():
            text = path.read_text(errors="replace")
            if password in text:
                path.write_text(text.replace(password, MASK))
