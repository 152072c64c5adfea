"""The package as pip users get it: the wheel's contents, the light install, a fresh machine.

Each test builds the wheel from a copy of the checkout and installs it into a virtualenv of its
own (pip reuses the packages `make install` already downloaded), so nothing here can lean on the
checkout, the editable install or the current directory.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.install

# What the wheel must carry for the CLI to work without the checkout.
SHIPPED = (
    "poolbench/__main__.py",
    "poolbench/py.typed",
    "poolbench/load/own_locustfile.py",
    "poolbench/report/templates/report.html.j2",
    "poolbench/specs/quick.toml",
    "poolbench/scenarios/single_query.py",
    "poolbench/sample_app/main.py",
    "poolbench/sample_app/routes/users.py",
)
# A service that is instrumented already runs these; the light install may add at most 5 more.
SERVICE_PACKAGES = ("fastapi", "sqlalchemy[asyncio]", "asyncpg")
MAX_LIGHT_ADDED = 5
INSTALL_TIMEOUT_S = 900
# An ASGI round trip through an instrumented FastAPI app, with no HTTP client installed.
INSTRUMENTED_APP = """
import asyncio
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import create_async_engine
from poolbench import instrument

app = FastAPI()
engine = create_async_engine("postgresql+asyncpg://user@127.0.0.1:1/db")
instrument(app, engine=engine)
sent = []

async def receive():
    return {"type": "http.request", "body": b"", "more_body": False}

async def send(message):
    sent.append(message)

scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
         "scheme": "http", "path": "/metrics", "raw_path": b"/metrics", "query_string": b"",
         "root_path": "", "headers": [], "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80)}
asyncio.run(app(scope, receive, send))
status = sent[0]["status"]
body = b"".join(m.get("body", b"") for m in sent[1:]).decode()
print(status, "poolbench_" in body)
"""


def _run(argv: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # type: ignore[call-overload, no-any-return]
        argv, capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S, **kwargs
    )


def _checked(argv: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    out = _run(argv, **kwargs)
    assert out.returncode == 0, f"{argv}: {out.stdout[-2000:]}{out.stderr[-3000:]}"
    return out


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel, built from a copy of the checkout (no build/ left in the tree)."""
    src = tmp_path_factory.mktemp("src") / "poolbench"
    ignore = shutil.ignore_patterns(
        ".git",
        ".venv",
        "results",
        "reports",
        "build",
        "dist",
        "*.egg-info",
        "__pycache__",
        ".*cache",
    )
    shutil.copytree(ROOT, src, ignore=ignore)
    out = tmp_path_factory.mktemp("wheel")
    _checked([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(src)])
    (found,) = out.glob("poolbench-*.whl")
    return found


def _venv(path: Path) -> Path:
    _checked([sys.executable, "-m", "venv", str(path)])
    python = path / "bin" / "python"
    _checked([str(python), "-m", "pip", "install", "-q", "--upgrade", "pip"])
    return python


def _installed(python: Path) -> set[str]:
    out = _checked([str(python), "-m", "pip", "list", "--format", "freeze"])
    return {re.split(r"==| @ ", line)[0].lower() for line in out.stdout.splitlines() if line}


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def test_the_wheel_installs_one_top_level_name_and_everything_the_cli_needs(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    top = {name.split("/")[0] for name in names}
    assert top == {"poolbench", wheel.name.split("-py3")[0] + ".dist-info"}, top
    missing = [path for path in SHIPPED if path not in names]
    assert not missing, missing
    assert not [n for n in names if "/tests/" in n or n.startswith("benchmarks")]


def test_the_light_install_adds_at_most_five_packages_and_no_toolkit(
    wheel: Path, tmp_path: Path
) -> None:
    python = _venv(tmp_path / "service")
    _checked([str(python), "-m", "pip", "install", "-q", *SERVICE_PACKAGES])
    before = _installed(python)
    _checked([str(python), "-m", "pip", "install", "-q", str(wheel)])
    added = _installed(python) - before - {"poolbench"}
    assert len(added) <= MAX_LIGHT_ADDED, sorted(added)

    served = _checked([str(python), "-c", INSTRUMENTED_APP], cwd=tmp_path)
    assert served.stdout.split() == ["200", "True"], served.stdout + served.stderr
    for toolkit in ("locust", "pandas"):
        imported = _run([str(python), "-c", f"import {toolkit}"], cwd=tmp_path)
        assert imported.returncode != 0, f"{toolkit} came with the light install"

    command = python.parent / "poolbench"
    assert _checked([str(command), "--version"]).stdout.strip().startswith("poolbench ")
    refused = _run([str(command), "sweep", "quick"], cwd=tmp_path)
    assert refused.returncode == 2
    lines = refused.stderr.splitlines()
    assert len(lines) == 1 and "pip install 'poolbench[bench]'" in lines[0], refused.stderr


@pytest.fixture
def bench_venv(wheel: Path, tmp_path: Path) -> Iterator[Path]:
    """A fresh virtualenv with poolbench[bench] from the wheel."""
    python = _venv(tmp_path / "venv")
    _checked([str(python), "-m", "pip", "install", "-q", f"{wheel}[bench]"])
    yield python.parent


@pytest.mark.slow
def test_a_pip_user_sweeps_analyses_and_reports_from_an_empty_directory(
    bench_venv: Path, tmp_path: Path
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    venv = bench_venv.parent
    untouched = _files(venv)
    env = {k: v for k, v in os.environ.items() if k != "BENCH_DATABASE_URL"}
    env["PATH"] = f"{bench_venv}{os.pathsep}{env['PATH']}"

    swept = _checked(
        [str(bench_venv / "poolbench"), "sweep", "quick", "--search", "grid",
        "--set", "grid.pool_size=[3,8]", "--set", "timing.repetitions=1",
        "--set", "timing.duration_s=2", "--set", "timing.warmup_s=1"],
        cwd=work, env=env,
    )  # fmt: skip
    (sweep,) = (work / "results").iterdir()
    assert sweep.name in swept.stdout
    assert len([d for d in (sweep / "runs").iterdir() if (d / "run.json").is_file()]) == 2
    version = _checked([str(bench_venv / "poolbench"), "--version"]).stdout.split()[-1]
    assert json.loads((sweep / "manifest.json").read_text())["versions"]["poolbench"] == version

    # 3 is INCONCLUSIVE (every run CPU-bound on a busy host): still a full analysis and report.
    for command in ("analyze", "report", "recommend"):
        done = _run([str(bench_venv / "poolbench"), command, str(sweep)], cwd=work, env=env)
        assert done.returncode in (0, 3), f"{command}: {done.stdout[-2000:]}{done.stderr[-2000:]}"
        assert "Traceback" not in done.stderr
    assert "DB_POOL_SIZE=" in done.stdout or "INCONCLUSIVE" in done.stdout + done.stderr
    assert not (work / "reports").exists()  # the report is beside the results
    assert (sweep / "report.html").stat().st_size > 10_000

    written = _files(venv) - untouched
    assert not written, sorted(written)[:20]
