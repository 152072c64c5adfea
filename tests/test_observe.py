"""`poolbench observe URL`: live telemetry to pool sizes, read over real HTTP without a reset.

Fast tests serve apps written here (tests.test_instrument's minimal app) with a real uvicorn
server on a loopback port; the slow one runs the sample app as a real uvicorn process under a
real Locust open-model load and compares observe with what a real sweep at that load says.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from prometheus_client import generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from poolbench.analysis.analyse import analyse
from poolbench.analysis.load import load_sweep
from poolbench.observe import base_url, parse_duration
from poolbench.spec import SLO, Grid, SweepSpec, Timing, Workload
from poolbench.sweep import commands, managed
from poolbench.sweep.pg import Database, free_port
from tests.app.app_helpers import create_database, started, wait_http_ok
from tests.conftest import ROOT
from tests.test_instrument import minimal_app


def poolbench(*args: str, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "poolbench.cli", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )


@contextmanager
def served(app: Starlette) -> Iterator[str]:
    """Serve `app` with uvicorn on a free loopback port in a thread; yield its URL; stop it."""
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=20)


@contextmanager
def steady_requests(url: str, path: str) -> Iterator[None]:
    """One client sending `path` back to back in a thread until the block ends."""
    stop = threading.Event()

    def loop() -> None:
        with httpx.Client(base_url=url, timeout=10) as client:
            while not stop.is_set():
                client.get(path).raise_for_status()

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=20)


def one_error_line(out: subprocess.CompletedProcess[str], needle: str) -> None:
    assert out.returncode == 2, (out.stdout, out.stderr)
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], out.stderr
    assert "Traceback" not in out.stderr + out.stdout


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["ftp://127.0.0.1/x"], "is not an http(s) URL"),
        (["not a url"], "is not an http(s) URL"),
        (["http://127.0.0.1:99999"], "bad port"),
        (["http://127.0.0.1:8000", "--for", "5x"], "give a duration such as 60s"),
        (["http://127.0.0.1:8000", "--for", "0"], "more than 0"),
    ],
)
def test_bad_url_or_duration_is_one_error_line(args: list[str], needle: str) -> None:
    one_error_line(poolbench("observe", *args), needle)


def test_unreachable_service_is_one_error_line() -> None:
    port = free_port()  # nothing listens there
    one_error_line(poolbench("observe", f"http://127.0.0.1:{port}", "--for", "1"), "cannot reach")


def test_a_service_without_telemetry_is_one_error_line() -> None:
    async def page(request: Request) -> Response:
        if request.url.path == "/metrics":
            return HTMLResponse("<html>not metrics</html>")
        return HTMLResponse("<html>hello</html>", status_code=404)

    app = Starlette()
    app.add_route("/{path:path}", page)
    with served(app) as url:
        out = poolbench("observe", url, "--for", "1")
    one_error_line(out, "serves no poolbench telemetry")
    assert "/telemetry/totals: HTTP 404" in out.stderr


def test_durations_and_urls() -> None:
    assert [parse_duration(t) for t in ("60s", "90", "2m", "500ms", "1h")] == [
        60,
        90,
        120,
        0.5,
        3600,
    ]
    assert base_url("http://h:8/app/") == ("http://h:8/app", None)
    assert base_url("http://h:8/app/metrics") == ("http://h:8/app", "/metrics")
    assert base_url("http://h:8/telemetry") == ("http://h:8", "/telemetry/totals")


def test_observe_sizes_every_pool_from_totals_without_resetting(
    pg: Database, tmp_path: Path
) -> None:
    with served(minimal_app(pg)) as url, steady_requests(url, "/sleep"):
        time.sleep(0.5)
        window_before = httpx.get(f"{url}/telemetry").json()["window_s"]
        out = poolbench("observe", url, "--for", "3s", "--json", str(tmp_path / "o.json"))
        window_after = httpx.get(f"{url}/telemetry").json()["window_s"]
    assert out.returncode == 0, out.stderr
    assert window_after > window_before + 3  # nobody reset the service's window
    doc = json.loads((tmp_path / "o.json").read_text())
    assert doc["source"] == "/telemetry/totals" and doc["missing"] == []
    assert 2.5 < doc["window_s"] < 4.5
    sa = doc["pools"]["sqlalchemy"]
    # One client back to back: about one request in flight, each holding ~20 ms.
    assert 0.5 < doc["requests"]["inflight_mean"] <= 1.0
    assert doc["requests"]["statements_per_request"] == 1
    assert sa["figures"]["hold_time_mean_ms"] >= 20
    models = {m["name"]: m for m in sa["models"]}
    little = models["Little's law"]
    assert little["pool_size"] >= 1 and little["inputs"]["target_rps"] == pytest.approx(
        sa["figures"]["lease_rps"]
    )
    assert models["Erlang C"]["pool_size"] >= 1
    assert models["USL fit"]["pool_size"] is None
    assert sa["size"] == max(little["pool_size"], models["Erlang C"]["pool_size"])
    # The asyncpg pool is instrumented but unused by /sleep: no model, said so.
    assert doc["pools"]["asyncpg"]["size"] is None
    assert doc["pools"]["asyncpg"]["why"] == "not used in the observed window"
    # The same snippet as recommend: env vars, engine kwargs, reasons.
    assert f"DB_POOL_SIZE={sa['size']}" in out.stdout and "create_async_engine(" in out.stdout
    assert "PG_POOL_MAX_SIZE=2" in out.stdout and "# Why these values:" in out.stdout
    assert "/telemetry/totals, difference over" in out.stdout


def test_observe_from_prometheus_says_which_figures_are_missing(
    pg: Database, tmp_path: Path
) -> None:
    app = minimal_app(pg)

    async def stripped(request: Request) -> Response:
        # /metrics without the hold times' sum of squares: a service whose exporter lacks it.
        text = generate_latest(app.state.poolbench.telemetry.registry).decode()
        kept = [line for line in text.splitlines() if "hold_seconds_squared" not in line]
        return Response("\n".join(kept) + "\n", media_type="text/plain")

    app.add_route("/stripped/metrics", stripped)
    with served(app) as url, steady_requests(url, "/sleep"):
        time.sleep(0.3)
        full = poolbench("observe", f"{url}/metrics", "--for", "2")
        partial = poolbench(
            "observe", f"{url}/stripped/metrics", "--for", "2", "--json", str(tmp_path / "p.json")
        )
    assert full.returncode == 0 and partial.returncode == 0, (full.stderr, partial.stderr)
    assert "Missing from" not in full.stdout and "bucketed" in full.stdout
    assert "Missing from /metrics" in partial.stdout
    assert "poolbench_pool_hold_seconds_squared_total{pool='sqlalchemy'}" in partial.stdout
    assert "sqlalchemy: hold time cv" in partial.stdout
    # Erlang C needs the hold time's variability: it says so instead of assuming one.
    doc = json.loads((tmp_path / "p.json").read_text())
    models = {m["name"]: m for m in doc["pools"]["sqlalchemy"]["models"]}
    assert models["Erlang C"]["pool_size"] is None
    assert models["Erlang C"]["note"] == "missing input: hold_time_cv"
    assert models["Little's law"]["pool_size"] >= 1
    assert doc["pools"]["sqlalchemy"]["size"] == models["Little's law"]["pool_size"]
    assert "sqlalchemy.hold_time_cv" in doc["missing"]


# --- observe vs a sweep at the same load ----------------------------------------------------

OBSERVE_DB = "poolbench_observe"
USERS = 12
RPS_PER_USER = 4.0  # 48 rps offered, Poisson arrivals
SIM_LATENCY_MS = 40  # one query per request: ~2 connections busy on average
SWEEP_POOLS = (2, 3, 4, 8)  # around the expected size, and an ample pool for the reference
OBSERVE_POOL = 8  # an ample pool, as in production
WARMUP_S, DURATION_S = 3.0, 10.0
OBSERVE_FOR_S = 12


def load_spec(pools: tuple[int, ...]) -> SweepSpec:
    return SweepSpec(
        name="observe-vs-sweep",
        scenario="single_query",
        kind=SLO,
        open_model_rps=RPS_PER_USER,
        grid=Grid(pool_size=pools, max_overflow=(0,), users=(USERS,), pg_max_size=(2,)),
        workload=Workload(sim_latency_ms=SIM_LATENCY_MS, seed_users=200),
        timing=Timing(warmup_s=WARMUP_S, duration_s=DURATION_S, repetitions=1),
    )


def spec_toml(path: Path) -> Path:
    path.write_text(
        f"""
name = "observe-vs-sweep"
scenario = "single_query"
open_model_rps = {RPS_PER_USER}
[grid]
pool_size = {list(SWEEP_POOLS)}
max_overflow = [0]
users = [{USERS}]
pg_max_size = [2]
[workload]
sim_latency_ms = {SIM_LATENCY_MS}
seed_users = 200
[timing]
repetitions = 1
warmup_s = {WARMUP_S}
duration_s = {DURATION_S}
[slo]
p95_ms = 250
"""
    )
    return path


def sweep_littles_law(tmp_path: Path, dsn: str) -> dict[str, Any]:
    """Sweep SWEEP_POOLS at the load; return the analysis's Little's law, inputs and optimum."""
    out = poolbench(
        "sweep", str(spec_toml(tmp_path / "spec.toml")), "--dsn", dsn,
        "--out", str(tmp_path / "results"), "--no-report", timeout_s=240,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    (sweep_dir,) = (tmp_path / "results").iterdir()
    workload = analyse(load_sweep(sweep_dir)).headline
    little = next(c for c in workload.models if c.model.name == "Little's law")
    assert little.model.pool_size is not None, workload.inputs_note
    return {
        "pool_size": little.model.pool_size,
        "inputs": dict(little.model.inputs),
        "reference_run": (workload.reference or {}).get("run_id"),
        "reference_hold_time_ms": (workload.reference or {}).get("hold_time_mean_ms"),
        "optimum": workload.optimum.row and workload.optimum.row.get("connections"),
    }


def observe_under_load(tmp_path: Path, dsn: str) -> dict[str, Any]:
    """The sample app (pool 8) under the same Locust load as the sweep; observe it."""
    spec = load_spec((OBSERVE_POOL,))
    (point,) = spec.points()
    point = replace(point, duration_s=OBSERVE_FOR_S + 10)  # long enough for the window
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    database_url = dsn.replace("postgresql://", "postgresql+asyncpg://", 1)
    app_env = managed.app_env(
        point, spec, database_url=database_url, downstream_url="http://127.0.0.1:9"
    )
    app_env["CREATE_SCHEMA"] = "false"  # the sweep seeded it
    run_dir = tmp_path / "observe-run"
    run_dir.mkdir()
    locust_env = commands.python_env(commands.scenario_env(point, spec, run_dir).to_env())
    with started(
        commands.app_argv(port), commands.python_env(app_env), tmp_path / "app.log"
    ) as app:
        wait_http_ok(f"{url}/telemetry/totals", app)  # /health needs the downstream
        with started(
            commands.locust_argv(point, url, run_dir, workers=1), locust_env, tmp_path / "lc.log"
        ) as locust:
            time.sleep(WARMUP_S + 2)  # the open model's users spawned, pools warm
            json_path = tmp_path / "observe.json"
            out = poolbench("observe", url, "--for", f"{OBSERVE_FOR_S}s", "--json", str(json_path))
            assert locust.poll() is None, (tmp_path / "lc.log").read_text()[-2000:]
    assert out.returncode == 0, out.stderr
    print(out.stdout)
    doc: dict[str, Any] = json.loads(json_path.read_text())
    return doc


@pytest.mark.slow
async def test_observe_gives_the_littles_law_size_a_sweep_gives_at_the_same_load(
    pg: Database, tmp_path: Path
) -> None:
    """Observe's Little's-law size is within 1 of the sweep's at the same offered load.

    The comparison: a real `poolbench sweep` of the single_query scenario at 48 rps offered
    (12 open-model Poisson users x 4 rps, 40 ms simulated query), pool sizes 2, 3, 4 and 8, one
    repetition; its analysis feeds Little's law from its reference run (the largest pool that
    was not pool-bound, i.e. pool 8) with the offered rate and that run's mean hold time, and
    recommends the fewest connections that met the SLO at that load. Then the
    sample app runs as a real uvicorn process with pool 8 under a real Locust process at the
    same open-model load, and `poolbench observe` reads it for 12 s (no reset): its Little's-law
    size for the SQLAlchemy pool, fed with the measured lease rate and mean hold time, must be
    within 1 connection of the sweep's Little's law and of the size the sweep recommends.
    """
    dsn = await create_database(pg, OBSERVE_DB)
    swept = sweep_littles_law(tmp_path, dsn)
    observed = observe_under_load(tmp_path, dsn)
    sa = observed["pools"]["sqlalchemy"]
    little = next(m for m in sa["models"] if m["name"] == "Little's law")
    figures = {
        "sweep": swept,
        "observe": {
            "pool_size": little["pool_size"],
            "inputs": little["inputs"],
            "window_s": observed["window_s"],
            "rps": observed["requests"]["rps"],
            "inflight_mean": observed["requests"]["inflight_mean"],
            "size": sa["size"],
        },
    }
    print("\nobserve vs sweep:", json.dumps(figures, indent=2, default=str))
    # The load was what the sweep offered (Poisson noise on ~600 arrivals is ~4%).
    assert observed["requests"]["rps"] == pytest.approx(USERS * RPS_PER_USER, rel=0.2)
    assert abs(little["pool_size"] - swept["pool_size"]) <= 1, figures
    assert swept["optimum"] is not None, figures  # the sweep recommended a size
    assert abs(little["pool_size"] - swept["optimum"]) <= 1, figures
