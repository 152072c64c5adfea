"""What a sweep exposes: no listener beyond loopback, and no DSN password in any output file."""

from __future__ import annotations

import csv
import os
import re
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import psutil
import pytest

from poolbench.results import LOCUST_CSV_PREFIX
from poolbench.secrets import dsn_password, password_spellings
from poolbench.specfile import load_spec
from poolbench.sweep import commands
from poolbench.sweep.pg import PostgresServer
from tests.sweep.test_sweep import TINY_ONE, only_dir, read_rows, sweep_argv

ROOT = Path(__file__).resolve().parents[2]
QUICK = ROOT / "bench/poolbench/specs/quick.toml"
LOCUST_DEFAULT_MASTER_PORT = 5557
WILDCARDS = {"0.0.0.0", "::", ""}
ONE_SHORT_RUN = [arg for arg in TINY_ONE if arg != "--no-report"]  # the report is checked too


class _Ok(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - the http.server hook name
        body = b"{}"
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def target() -> Iterator[str]:
    """A tiny HTTP server on loopback answering `{}` to every GET."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Ok)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _listening(pid: int) -> set[tuple[str, int]]:
    """The (address, port) every process of a tree listens on, now."""
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return set()
    found = set()
    for proc in procs:
        try:
            for conn in proc.net_connections(kind="inet"):
                if conn.status == psutil.CONN_LISTEN:
                    found.add((conn.laddr.ip, conn.laddr.port))
        except psutil.Error:
            continue
    return found


@pytest.mark.slow
def test_locust_processes_master_listens_on_loopback_only(tmp_path: Path, target: str) -> None:
    spec = load_spec(
        QUICK,
        {
            "open_model_rps": 0,
            "grid.pool_size": [1],
            "grid.users": [2],
            "timing.warmup_s": 1,
            "timing.duration_s": 2,
            "timing.repetitions": 1,
        },
    )
    (point,) = spec.points()
    argv = commands.locust_argv(point, target, tmp_path, 2)
    env = commands.python_env(commands.scenario_env(point, spec, tmp_path).to_env())
    listening: set[tuple[str, int]] = set()
    with subprocess.Popen(
        argv, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    ) as locust:
        deadline = time.monotonic() + 60
        while locust.poll() is None and time.monotonic() < deadline:
            listening |= _listening(locust.pid)
            time.sleep(0.1)
        if locust.poll() is None:
            locust.kill()
        _, stderr = locust.communicate(timeout=30)
    assert locust.returncode == 0, stderr[-2000:]
    assert listening, "the master never listened (did --processes start workers?)"
    assert all(ip not in WILDCARDS for ip, _ in listening), listening
    assert all(ip == "127.0.0.1" for ip, _ in listening), listening
    assert all(port != LOCUST_DEFAULT_MASTER_PORT for _, port in listening), listening
    # The forked workers found the master: they ran the users, whose requests it counted.
    with open(tmp_path / f"{LOCUST_CSV_PREFIX}_stats.csv", newline="") as fh:
        (total,) = [row for row in csv.DictReader(fh) if row["Name"] == "Aggregated"]
    assert int(total["Request Count"]) > 0, total


@pytest.fixture(scope="module")
def external() -> Iterator[PostgresServer]:
    """The "external" database: a managed cluster, so its generated password is known."""
    server = PostgresServer(max_connections=50).start()
    yield server
    server.stop()


def _external_dsn(server: PostgresServer, form: str) -> str:
    password = dsn_password(server.dsn)
    where = f"127.0.0.1:{server.port}/poolbench"
    return {
        "url-userinfo": server.dsn,
        "url-query": f"postgresql://postgres@{where}?password={password}",
        "key-value": f"host=127.0.0.1 port={server.port} user=postgres password={password} "
        "dbname=poolbench",
    }[form]


@pytest.mark.slow
@pytest.mark.parametrize(
    "form",
    [
        "url-userinfo",
        "url-query",
        "key-value",
    ],
)
def test_external_dsn_password_reaches_no_output_file(
    external: PostgresServer, form: str, tmp_path: Path
) -> None:
    dsn = _external_dsn(external, form)
    password = dsn_password(dsn)
    assert password and len(password) >= 20
    env = {k: v for k, v in os.environ.items() if k != "BENCH_DATABASE_URL"}
    result = subprocess.run(
        sweep_argv(str(QUICK), "--out", str(tmp_path), "--dsn", dsn, *ONE_SHORT_RUN),
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    # The report goes into the sweep's directory.
    reports = [Path(m) for m in re.findall(r"^report: (\S+\.html)$", result.stdout, re.M)]
    assert result.returncode == 0, result.stderr[-2000:]
    sweep_dir = only_dir(tmp_path)
    (row,) = read_rows(sweep_dir)[1]
    assert int(row["requests"]) > 0 and int(row["pg_xact_commit"]) > 0, row
    files = [path for path in tmp_path.rglob("*") if path.is_file()]
    assert len(reports) == 1 and reports[0] in files, result.stdout[-2000:]
    assert any(path.name == "run.json" for path in files), files
    spellings = [spelling.encode() for spelling in password_spellings(dsn)]
    leaks = [path for path in files if any(s in path.read_bytes() for s in spellings)]
    assert not leaks, f"the password is in {leaks}"
    assert password not in result.stdout + result.stderr
