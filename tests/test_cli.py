"""Bad command lines get one `error:` line and exit 2; help still works."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import ROOT


def poolbench(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bench.cli", *args],
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
    assert out.returncode == 0 and "Usage" in out.stdout
