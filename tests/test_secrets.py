"""Every spelling of a DSN password that libpq or asyncpg accepts is redacted before disk."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from poolbench.secrets import (
    MASK,
    dsn_password,
    redact_dsn,
    redact_files,
    scrub_secrets,
    scrub_tree,
)

# (DSN, its password as libpq/asyncpg read it)
DSNS = [
    ("postgresql://u:s3cret@h:5432/d", "s3cret"),
    ("postgres://u:s3cret@h/d?sslmode=disable", "s3cret"),
    ("postgresql+asyncpg://u:s3cret@h:1/d", "s3cret"),
    ("postgresql://u@h:5432/d?password=s3cret", "s3cret"),
    ("postgresql://u@h:5432/d?sslmode=disable&password=s3cret", "s3cret"),
    ("postgresql://u@h:5432/d?password=s3cret&sslmode=disable", "s3cret"),
    ("postgresql://u@h/d?PASSWORD=s3cret", "s3cret"),
    ("postgresql://u:p%40ss%2Fw%3Ard@h/d", "p@ss/w:rd"),
    ("postgresql://u@h/d?password=p%26ss%20w", "p&ss w"),
    ("postgresql://u:p@ss@h/d", "p@ss"),  # asyncpg reads up to the last '@'
    ("host=127.0.0.1 port=5432 user=u password=s3cret dbname=d", "s3cret"),
    ("password=s3cret host=h", "s3cret"),
    ("host=h password = s3cret dbname=d", "s3cret"),
    ("host=h password='s3 cr\\'et' dbname=d", "s3 cr'et"),
    ("host=h dbname=d password=s3\\ cret", "s3 cret"),
    ("host=h dbname=d password=s3cr=t&x", "s3cr=t&x"),
]


@pytest.mark.parametrize(("dsn", "password"), [d for d in DSNS if d[1]])
def test_redact_dsn_hides_every_password_form(dsn: str, password: str) -> None:
    redacted = redact_dsn(dsn)
    assert MASK in redacted
    for fragment in {password, *password.split()}:
        if len(fragment) > 2:
            assert fragment not in redacted, redacted
    assert "s3" not in redacted and "cret" not in redacted


@pytest.mark.parametrize(("dsn", "password"), [d for d in DSNS if d[1]])
def test_dsn_password_reads_every_form(dsn: str, password: str) -> None:
    assert dsn_password(dsn) == password


def test_redact_dsn_keeps_the_rest() -> None:
    assert redact_dsn("postgresql://u:secret@h:1/d") == "postgresql://u:***@h:1/d"
    assert redact_dsn("postgresql://u@h:1/d") == "postgresql://u@h:1/d"
    assert (
        redact_dsn("postgresql://u@h:1/d?sslmode=require&password=x&application_name=a")
        == "postgresql://u@h:1/d?sslmode=require&password=***&application_name=a"
    )
    assert (
        redact_dsn("host=h port=1 user=u password='a b' dbname=d")
        == "host=h port=1 user=u password=*** dbname=d"
    )
    assert redact_dsn("host=h dbname=d") == "host=h dbname=d"
    assert dsn_password("host=h dbname=d") is None
    assert dsn_password("postgresql://u@h/d") is None
    assert dsn_password(None) is None


@pytest.mark.parametrize(
    "text",
    [
        "connecting to postgresql://u:s3cret@db/x failed",
        "connecting to postgresql://u@db/x?password=s3cret failed",
        "connecting to postgresql://u@db/x?sslmode=disable&password=s3cret failed",
        "conninfo: host=db user=u password=s3cret dbname=x",
        "conninfo: host=db user=u password='s3 cret' dbname=x",
        "conninfo: host=db user=u password = s3cret dbname=x",
        '{"user": "u", "password": "s3cret"}',
        "<td>host=db password=s3cret</td>",
        "PGPASSWORD=s3cret psql",
    ],
)
def test_scrub_secrets_in_free_text(text: str) -> None:
    scrubbed = scrub_secrets(text)
    assert "s3" not in scrubbed and "cret" not in scrubbed, scrubbed
    assert MASK in scrubbed


def test_scrub_secrets_leaves_the_surroundings() -> None:
    assert scrub_secrets("<td>host=db password=x</td>") == "<td>host=db password=***</td>"
    assert scrub_secrets("a ?password=x&b=1") == "a ?password=***&b=1"
    assert scrub_secrets("no secrets here: pool_size=4") == "no secrets here: pool_size=4"


def test_scrub_tree_redacts_dsns_in_every_form() -> None:
    tree = {
        "dsn": "postgresql://u@h/d?password=s3cret",
        "conninfo": "host=h user=u password='s3 cret' dbname=d",
        "nested": [{"url": "postgresql://u:s3cret@h/d"}, ("dbname=d password=s3cret",)],
        "db_password": "s3cret",
        "pool_size": 4,
    }
    scrubbed = json.dumps(scrub_tree(tree))
    assert "s3" not in scrubbed and "cret" not in scrubbed, scrubbed
    assert '"pool_size": 4' in scrubbed and "host=h user=u" in scrubbed


@pytest.mark.parametrize(
    "dsn",
    [
        "postgresql://u:p%40ss%2Fw%3Ard@h/d",
        "postgresql://u@h/d?password=p%40ss%2Fw%3Ard",
        "host=h password='p@ss/w:rd' dbname=d",
    ],
)
def test_redact_files_catches_decoded_and_encoded_spellings(tmp_path: Path, dsn: str) -> None:
    (tmp_path / "app.log").write_text("url postgresql://u:p%40ss%2Fw%3Ard@h/d\n")
    (tmp_path / "run.json").write_text(json.dumps({"pw": "p@ss/w:rd"}))
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "locust.log").write_bytes(b"\x00\xffp@ss/w:rd\n")
    redact_files(tmp_path, dsn)
    for path in tmp_path.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert b"p@ss/w:rd" not in data and b"p%40ss%2Fw%3Ard" not in data, path
    assert (tmp_path / "sub" / "locust.log").read_bytes() == b"\x00\xff***\n"
    assert json.loads((tmp_path / "run.json").read_text()) == {"pw": "***"}
