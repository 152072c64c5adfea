"""The sweep runner end to end: real Postgres, uvicorn and Locust processes."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest
from sqlalchemy.engine import make_url

from poolbench.results import RUNS_CSV_COLUMNS
from poolbench.secrets import redact_files
from poolbench.specfile import load_spec
from poolbench.sweep.figures import label_bottleneck
from poolbench.sweep.pg import Database

ROOT = Path(__file__).resolve().parents[2]
QUICK = "bench/poolbench/specs/quick.toml"
APP = "poolbench.sweep.appserver"  # the sample app's workers
# docs/DESIGN.md, "runs.csv columns": the analysis reads exactly these.
DESIGN_COLUMNS = (
    "run_id, scenario, repetition, pool_size, max_overflow, http_concurrency_limit, users, "
    "pg_max_size, pg_max_connections, queries_per_request, sim_latency_ms, think_time_s, "
    "spawn_rate, duration_s, experiment, offered_rps, app_workers, pooler, pgbouncer_pool_size, "
    "app_max_connections, requests, failures, error_rate, rps, "
    "p50_ms, p95_ms, p99_ms, "
    "mean_ms, max_ms, schedule_lag_p95_ms, dropped_arrivals, inflight_at_end, "
    "acquire_wait_mean_ms, acquire_wait_p95_ms, acquire_wait_p99_ms, "
    "hold_time_mean_ms, hold_time_p95_ms, hold_time_cv, peak_checked_out, pool_timeouts, "
    "connections_opened, "
    "app_inflight_mean, app_inflight_peak, statements_per_request, pg_pool_acquire_wait_p95_ms, "
    "pg_pool_hold_time_mean_ms, pg_pool_peak_checked_out, pg_pool_timeouts, "
    "http_peak_in_flight, http_semaphore_wait_p95_ms, http_waits_holding_connection, "
    "littles_efficiency, handoff_share, idle_share, ping_mean_ms, pings, "
    "pg_peak_connections, pg_xact_commit, pgb_cl_waiting_peak, pgb_maxwait_ms, pgb_sv_active_peak, "
    "pgb_clients_peak, pgb_wait_mean_ms, app_cpu_pct, locust_cpu_pct, pg_cpu_pct, "
    "app_peak_rss_mb, locust_peak_rss_mb, pg_peak_rss_mb, locust_cpu_warning, host_cores, "
    "host_cpu_pct, downstream_cpu_pct, bottleneck"
).split(", ")
# Closed-loop users (open_model_rps=0): the assertions below lean on a saturated pool.
TINY = [
    "--set",
    "open_model_rps=0",
    "--set",
    "grid.pool_size=[2,4]",
    "--duration",
    "3",
    "--warmup",
    "1",
]
TINY += ["--repetitions", "1", "--users", "8", "--no-report"]
TINY_ONE = ["--set", "open_model_rps=0", "--set", "grid.pool_size=[2]", "--duration", "2"]
TINY_ONE += ["--warmup", "1", "--repetitions", "1", "--users", "4", "--no-report"]
RUN_FILES = {
    "run.json",
    "locust_stats.csv",
    "locust_stats_history.csv",
    "locust_failures.csv",
    "locust_exceptions.csv",
    "telemetry.json",
    "app.log",
    "locust.log",
}


def sweep_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "poolbench.cli", "sweep", *args]


def run_sweep(*args: str, timeout: float = 150) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        sweep_argv(*args), cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )


def only_dir(out: Path) -> Path:
    (sweep_dir,) = [p for p in out.iterdir() if p.is_dir()]
    return sweep_dir


def read_rows(sweep_dir: Path) -> tuple[list[str], list[dict[str, str]]]:
    with open(sweep_dir / "runs.csv", newline="") as fh:
        reader = csv.DictReader(fh)
        return list(reader.fieldnames or []), list(reader)


def wait_until(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def has_child(pid: int, name: str) -> bool:
    for proc in descendants(pid):
        try:
            if any(name in part for part in proc.cmdline()):
                return True
        except psutil.Error:
            continue
    return False


@pytest.fixture(scope="module")
def tiny_sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("results")
    result = run_sweep(QUICK, "--out", str(out), *TINY)
    assert result.returncode == 0, result.stderr[-2000:]
    return only_dir(out)


@pytest.mark.slow
def test_runs_csv_has_the_design_columns_and_sane_values(tiny_sweep: Path) -> None:
    columns, rows = read_rows(tiny_sweep)
    assert columns == DESIGN_COLUMNS == list(RUNS_CSV_COLUMNS)
    assert [r["run_id"] for r in rows] == ["p2-o0-s20-u8-q1-r1", "p4-o0-s20-u8-q1-r1"]
    for row in rows:
        pool, overflow = int(row["pool_size"]), int(row["max_overflow"])
        rps, hold_ms = float(row["rps"]), float(row["hold_time_mean_ms"])
        assert rps > 0 and float(row["p95_ms"]) > 0
        assert int(row["requests"]) > 0 and float(row["error_rate"]) == 0
        assert hold_ms >= float(row["sim_latency_ms"]) == 20
        assert 0 < int(row["peak_checked_out"]) <= pool + overflow
        # Little's law: a pool-bound run cannot beat pool_size / hold_time.
        assert rps <= pool / (hold_ms / 1000) * 1.1
        assert int(row["pg_xact_commit"]) > 0 and int(row["pg_peak_connections"]) >= pool
        assert float(row["app_cpu_pct"]) > 0 and float(row["locust_cpu_pct"]) > 0
        assert row["bottleneck"] in {"pool", "app_cpu", "host_cpu", "database", "load_generator"}
        # Measured in the app: one statement per request, and requests in flight obey
        # Little's law (in flight = throughput x time in the system).
        assert float(row["statements_per_request"]) == 1
        little = rps * float(row["mean_ms"]) / 1000
        assert abs(float(row["app_inflight_mean"]) / little - 1) < 0.15, (row, little)
        assert 1 <= int(row["app_inflight_peak"]) <= 8
        assert 0 < float(row["host_cpu_pct"]) <= 100 and float(row["downstream_cpu_pct"]) >= 0
        # A closed loop has no schedule to lag behind and drops nothing.
        assert row["schedule_lag_p95_ms"] == "" and int(row["dropped_arrivals"]) == 0
        assert 0 <= int(row["inflight_at_end"]) <= 8
        assert int(row["pg_pool_timeouts"]) == 0 and row["pg_pool_peak_checked_out"] != ""
        assert float(row["p50_ms"]) <= float(row["p95_ms"]) <= float(row["p99_ms"])
        # The exact per-second series covers the window's requests (and the warm-up's).
        with (tiny_sweep / "runs" / row["run_id"] / "timeseries.csv").open() as handle:
            series = list(csv.DictReader(handle))
        assert sum(int(s["requests"]) for s in series) >= int(row["requests"])
        assert all(float(s["p50_ms"]) <= float(s["p99_ms"]) for s in series)


@pytest.mark.slow
def test_run_directories_and_manifest(tiny_sweep: Path) -> None:
    runs = sorted(p.name for p in (tiny_sweep / "runs").iterdir())
    assert runs == ["p2-o0-s20-u8-q1-r1", "p4-o0-s20-u8-q1-r1"]  # no .tmp left behind
    for run in runs:
        run_dir = tiny_sweep / "runs" / run
        assert RUN_FILES <= {p.name for p in run_dir.iterdir()}
        data = json.loads((run_dir / "run.json").read_text())
        assert data["run_id"] == run and data["point"]["pool_size"] in (2, 4)
        assert 2 < data["window"]["window_s"] < 4
        assert data["figures"]["latency_source"] == "hdr" and data["window"]["exact"]
    manifest = json.loads((tiny_sweep / "manifest.json").read_text())
    assert manifest["status"] == "finished" and manifest["finished_runs"] == 2
    assert manifest["spec"]["grid"]["pool_size"] == [2, 4]
    assert manifest["host"]["cores"] == os.cpu_count()
    assert manifest["versions"]["locust"]


@pytest.mark.slow
def test_resume_skips_finished_runs(tiny_sweep: Path) -> None:
    before = {p: p.stat().st_mtime for p in (tiny_sweep / "runs").glob("*/run.json")}
    started = time.monotonic()
    result = run_sweep("--resume", str(tiny_sweep), "--no-report", timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "resume: 2 of 2 runs already finished" in result.stdout
    assert time.monotonic() - started < 15  # nothing was measured again
    after = {p: p.stat().st_mtime for p in (tiny_sweep / "runs").glob("*/run.json")}
    assert after == before
    assert len(read_rows(tiny_sweep)[1]) == 2


@pytest.mark.slow
def test_resume_with_a_different_spec_is_refused(tiny_sweep: Path) -> None:
    result = run_sweep(QUICK, "--resume", str(tiny_sweep), "--no-report", timeout=60)
    assert result.returncode == 2
    assert result.stderr.startswith("error: --resume")
    assert "of the sweep being resumed" in result.stderr


@pytest.mark.slow
def test_postgres_commits_match_locust_requests(tmp_path: Path) -> None:
    """Every request commits once (the session dependency commits reads too), so the window's
    xact_commit delta should match Locust's count; the probe runs from another database so its
    own queries do not count, and health checks happen before the window."""
    result = run_sweep(
        QUICK,
        "--out",
        str(tmp_path),
        "--set",
        "open_model_rps=0",
        "--set",
        "scenario=write_heavy",
        "--set",
        "grid.pool_size=[4]",
        "--set",
        "workload.sim_latency_ms=5",
        # Long enough that a backend's late-published commits (at most once a second) are a
        # small share of the window's count on a slow host too.
        "--duration",
        "12",
        "--warmup",
        "2",
        "--repetitions",
        "1",
        "--users",
        "8",
        "--no-report",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    sweep_dir = only_dir(tmp_path)
    (row,) = read_rows(sweep_dir)[1]
    requests, commits = int(row["requests"]), int(row["pg_xact_commit"])
    assert requests > 500
    # pg_xact_commit is a fitted rate times the window (backends publish counters once a second).
    assert abs(commits - requests) <= 0.04 * requests, (commits, requests)
    run = json.loads((sweep_dir / "runs" / row["run_id"] / "run.json").read_text())
    writes = run["requests_by_name"]["POST /orders"]["requests"]
    assert writes > 0.8 * requests


def start_sweep(out: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        sweep_argv(QUICK, "--out", str(out), *TINY),
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def assert_all_gone(procs: list[psutil.Process]) -> None:
    names = {p.pid: " ".join(p.cmdline()[:3]) for p in procs if p.is_running()}
    _, alive = psutil.wait_procs(procs, timeout=15)
    assert not alive, [names.get(p.pid, p.pid) for p in alive]


@pytest.mark.slow
def test_ctrl_c_stops_every_child_and_keeps_finished_runs(tmp_path: Path) -> None:
    sweep = start_sweep(tmp_path)
    try:
        first = "p2-o0-s20-u8-q1-r1"
        wait_until(lambda: any((tmp_path).glob(f"*/runs/{first}/run.json")), 90, "the first run")
        wait_until(
            lambda: has_child(sweep.pid, APP) and has_child(sweep.pid, "locust"),
            30,
            "the second run's app and Locust",
        )
        children = descendants(sweep.pid)
        assert any("postgres" in " ".join(p.cmdline()) for p in children)
        sweep.send_signal(signal.SIGINT)
        assert sweep.wait(timeout=60) == 128 + signal.SIGINT
    finally:
        if sweep.poll() is None:
            sweep.kill()
    assert_all_gone(children)
    sweep_dir = only_dir(tmp_path)
    assert [r["run_id"] for r in read_rows(sweep_dir)[1]] == [first]
    manifest = json.loads((sweep_dir / "manifest.json").read_text())
    assert manifest["status"] == "interrupted"
    finished_at = json.loads((sweep_dir / "runs" / first / "run.json").read_text())["finished_at"]

    # Resume measures only what is missing.
    result = run_sweep("--resume", str(sweep_dir), "--no-report")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "resume: 1 of 2 runs already finished" in result.stdout
    assert len(read_rows(sweep_dir)[1]) == 2
    again = json.loads((sweep_dir / "runs" / first / "run.json").read_text())["finished_at"]
    assert again == finished_at
    assert not list((sweep_dir / "runs").glob(".*.tmp"))


@pytest.mark.slow
def test_sigterm_stops_every_child(tmp_path: Path) -> None:
    sweep = start_sweep(tmp_path)
    try:
        wait_until(lambda: has_child(sweep.pid, APP), 60, "the app")
        children = descendants(sweep.pid)
        sweep.send_signal(signal.SIGTERM)
        assert sweep.wait(timeout=60) == 128 + signal.SIGTERM
    finally:
        if sweep.poll() is None:
            sweep.kill()
    assert_all_gone(children)


def test_bottleneck_rules() -> None:
    point = load_spec(ROOT / QUICK, {"grid.pool_size": [1]}).points()[0]
    base = {"p95_ms": 100.0, "acquire_wait_p95_ms": 0.1, "peak_checked_out": 1}
    assert label_bottleneck(point, base) == "none"
    assert label_bottleneck(point, base | {"locust_cpu_warning": True}) == "load_generator"
    assert label_bottleneck(point, base | {"locust_cpu_pct": 95.0}) == "load_generator"
    two_workers = {"locust_cpu_pct": 150.0, "locust_busiest_cpu_pct": 76.0}
    assert label_bottleneck(point, base | two_workers) == "none"  # each process judged alone
    two_workers["locust_busiest_cpu_pct"] = 93.0
    assert label_bottleneck(point, base | two_workers) == "load_generator"
    assert label_bottleneck(point, base | {"host_cpu_pct": 95.0}) == "host_cpu"
    assert label_bottleneck(point, base | {"host_cpu_pct": 95.0, "app_cpu_pct": 97}) == "host_cpu"
    assert label_bottleneck(point, base | {"app_cpu_pct": 97.0}) == "app_cpu"
    assert label_bottleneck(point, base | {"pg_cpu_pct": 99.0}) == "database"
    assert label_bottleneck(point, base | {"pg_peak_connections": 97}) == "database"
    assert label_bottleneck(point, base | {"acquire_wait_p95_ms": 40.0}) == "pool"
    assert label_bottleneck(point, base | {"pool_timeouts": 1}) == "pool"
    assert label_bottleneck(point, base | {"acquire_wait_p95_ms": 5.0}) == "pool"  # all out


def test_password_never_stays_in_run_files(tmp_path: Path) -> None:
    (tmp_path / "app.log").write_text("connecting to postgresql://u:s3cret@db/x\n")
    redact_files(tmp_path, "postgresql://u:s3cret@db/x")
    assert "s3cret" not in (tmp_path / "app.log").read_text()


# Statements each request of a scenario sends (queries_per_request = 3); None: a mix.
STATEMENTS = {"collection": 3, "multi_query": 3, "mix": None, "fanout": 0}


@pytest.mark.slow
@pytest.mark.parametrize("scenario", list(STATEMENTS))
def test_every_scenario_runs_clean_against_the_real_app(scenario: str, tmp_path: Path) -> None:
    result = run_sweep(
        QUICK,
        "--out",
        str(tmp_path),
        "--set",
        f"scenario={scenario}",
        "--set",
        "grid.queries_per_request=[3]",
        "--set",
        "grid.pool_size=[4]",
        "--set",
        "workload.sim_latency_ms=2",
        "--duration",
        "2",
        "--warmup",
        "1",
        "--repetitions",
        "1",
        "--users",
        "4",
        "--no-report",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    (row,) = read_rows(only_dir(tmp_path))[1]
    assert int(row["requests"]) > 0 and int(row["failures"]) == 0, row
    # Counted in the app: /queries?queries=3 and user + orders + items are 3 statements each.
    if STATEMENTS[scenario] is not None:
        assert float(row["statements_per_request"]) == STATEMENTS[scenario], row


@pytest.mark.slow
def test_external_dsn_is_used_and_its_password_never_written(pg: Database, tmp_path: Path) -> None:
    password = make_url(pg.dsn).password
    assert password
    env = {**os.environ, "BENCH_DATABASE_URL": pg.dsn}
    result = subprocess.run(
        sweep_argv(QUICK, "--out", str(tmp_path), *TINY_ONE),
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=150,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    sweep_dir = only_dir(tmp_path)
    (row,) = read_rows(sweep_dir)[1]
    assert int(row["requests"]) > 0 and int(row["pg_xact_commit"]) > 0
    manifest = json.loads((sweep_dir / "manifest.json").read_text())
    assert str(pg.dsn.rsplit("@", 1)[1]) in json.dumps(manifest)  # the external server, redacted
    for path in sweep_dir.rglob("*"):
        if path.is_file():
            assert password.encode() not in path.read_bytes(), path
    assert password not in result.stdout + result.stderr
