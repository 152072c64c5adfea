"""Bad command lines get one `error:` line and exit 2; help still works."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from poolbench.results import RunRecord
from poolbench.specfile import spec_from_dict
from poolbench.sweep.metadata import manifest
from poolbench.sweep.pg import Database, free_port
from poolbench.sweep.sweepdir import SweepDir
from tests.conftest import ROOT


def poolbench(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "poolbench.cli", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["bogus"], "No such command 'bogus'"),
        (["size", "--concurrency", "abc"], "Invalid value for '--concurrency'"),
        (["size", "--concurrency", "10", "--no-such-option"], "No such option"),
        (["sweep", "no/such/spec.toml"], "no such file"),
        # A path that does not exist is never taken for the shipped spec of the same name.
        (["sweep", "no/such/specs/quick.toml"], "not a shipped spec"),
        (["sweep", "quik"], "shipped: capacity, external"),
        (
            ["sweep", "bench/poolbench/specs/quick.toml", "--workers", "0"],
            "--workers 0: give a number",
        ),
        (["sweep", "bench/poolbench/specs/quick.toml", "--workers", "many"], "or auto"),
        (
            ["sweep", "bench/poolbench/specs/quick.toml", "--search", "binary"],
            "must be one of grid, adaptive",
        ),
        (["sweep", "bench/poolbench/specs/capacity.toml", "--search", "adaptive"], "has none"),
    ],
)
def test_bad_command_line_is_one_error_line(args: list[str], needle: str) -> None:
    out = poolbench(*args)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], out.stderr
    assert "Traceback" not in out.stderr + out.stdout


@pytest.mark.parametrize("args", [[], ["--help"], ["db"]])
def test_help_exits_zero(args: list[str]) -> None:
    out = poolbench(*args)
    assert out.returncode == 0 and "Usage" in out.stdout + out.stderr  # bare: click's stderr


@pytest.mark.parametrize(
    ("command", "text"),
    [("recommend", "(overrides [fleet])"), ("sweep", "grid.pool_size=[2,4]")],
)
def test_help_prints_table_names_as_written(command: str, text: str) -> None:
    """Rich markup ate "[fleet]" ("(overrides )", issue 18): help is plain text."""
    out = poolbench(command, "--help")
    assert out.returncode == 0 and text in " ".join(out.stdout.split())


def resumable(root: Path) -> Path:
    """A sweep directory with one finished run of two (no processes)."""
    spec = spec_from_dict(
        {"scenario": "single_query", "grid": {"pool_size": [2, 4]}}, source="cli.toml"
    )
    sweep = SweepDir(root, spec.points(), manifest(spec, "cli.toml", None, 1, None))
    sweep.open(resume=False)
    point = spec.points()[0]
    record = {"run_id": point.run_id, "point": point.as_dict(), "figures": {"rps": 1.0}}
    sweep.commit_run(sweep.new_run(point), RunRecord.from_json(record), [])
    sweep.close("interrupted")
    return root


@pytest.mark.parametrize(
    ("damage", "needle"),
    [
        (lambda d: (d / "manifest.json").write_text("{torn"), "manifest.json: not valid JSON"),
        (lambda d: (d / "manifest.json").write_text('{"status": "x"}'), "holds no spec"),
        (lambda d: (d / "manifest.json").unlink(), "no manifest.json"),
    ],
)
def test_resume_of_a_damaged_sweep_is_one_error_line(
    tmp_path: Path, damage: Callable[[Path], object], needle: str
) -> None:
    damage(resumable(tmp_path))
    out = poolbench("sweep", "--resume", str(tmp_path))
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: --resume {tmp_path}: "), out.stderr
    assert needle in lines[0]


def test_resume_refuses_options_that_change_the_sweep(tmp_path: Path) -> None:
    sweep_dir = resumable(tmp_path)
    before = {p.name: p.read_bytes() for p in sweep_dir.iterdir() if p.is_file()}
    out = poolbench("sweep", "--resume", str(sweep_dir), "--set", "grid.pool_size=[8]")
    assert out.returncode == 2
    assert "change grid.pool_size of the sweep being resumed" in out.stderr
    assert {p.name: p.read_bytes() for p in sweep_dir.iterdir() if p.is_file()} == before
    out = poolbench("sweep", "--resume", str(sweep_dir), "--duration", "99")
    assert out.returncode == 2 and "change timing.duration_s" in out.stderr


def test_out_pointing_at_a_file_is_one_error_line(tmp_path: Path) -> None:
    target = tmp_path / "a-file"
    target.write_text("not a directory")
    out = poolbench("sweep", "bench/poolbench/specs/quick.toml", "--out", str(target))
    assert out.returncode == 2
    assert out.stderr.strip() == f"error: --out {target}: not a directory"


def dsn_cases(pg: Database) -> dict[str, tuple[str, str]]:
    url = make_url(pg.dsn)
    where = f"host={url.host} port={url.port} user={url.username}"
    return {
        "wrong password": (url.set(password="wrong").render_as_string(False), "password"),
        "missing database": (url.set(database="nope").render_as_string(False), "'nope' does not"),
        "refused port": (url.set(port=free_port()).render_as_string(False), "connection refused"),
        "key=value, wrong password": (f"{where} password=wrong dbname=x", "password"),
        "not a DSN": ("mysql://u:wrong@h/db", "DSN"),
    }


@pytest.mark.parametrize(
    "case",
    [
        "wrong password",
        "missing database",
        "refused port",
        "key=value, wrong password",
        "not a DSN",
    ],
)
def test_a_bad_dsn_is_one_error_line_before_anything_starts(
    pg: Database, tmp_path: Path, case: str
) -> None:
    dsn, needle = dsn_cases(pg)[case]
    out = poolbench(
        "sweep", "bench/poolbench/specs/quick.toml", "--out", str(tmp_path), "--dsn", dsn
    )
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], out.stderr
    assert "wrong" not in out.stderr + out.stdout  # the password is never echoed
    assert not any(tmp_path.iterdir()), "nothing may start before the DSN is checked"
