"""Sweep modes beyond the default: remote Locust workers, and bring-your-own app ([target])."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from poolbench.sweep.pg import database, free_port
from tests.sweep.test_sweep import (
    assert_all_gone,
    descendants,
    has_child,
    read_rows,
    run_sweep,
    sweep_argv,
    wait_until,
)

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = str(Path(sys.executable).parent)
TINY_SPEC = """
name = "tiny"
scenario = "single_query"
[grid]
pool_size = {pool_sizes}
max_overflow = [0]
users = [{users}]
[workload]
sim_latency_ms = 20
seed_users = 200
[timing]
repetitions = 1
warmup_s = 1
duration_s = {duration_s}
"""


def only_sweep_dir(out: Path) -> Path:
    (sweep_dir,) = [p for p in out.iterdir() if p.is_dir()]
    return sweep_dir


def kill_group(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is not None and proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


@pytest.mark.slow
def test_remote_worker_runs_the_printed_command(tmp_path: Path) -> None:
    spec = tmp_path / "tiny.toml"
    spec.write_text(TINY_SPEC.format(pool_sizes="[2]", users=4, duration_s=2))
    out, log, port = tmp_path / "results", tmp_path / "sweep.log", free_port()
    argv = sweep_argv(str(spec), "--out", str(out), "--no-report", "--remote-workers", "1")
    argv += ["--master-bind-host", "127.0.0.1", "--master-port", str(port)]
    worker: subprocess.Popen[bytes] | None = None
    with open(log, "wb") as fh:
        sweep = subprocess.Popen(
            argv, cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        wait_until(lambda: any(out.glob("*/worker_command.sh")), 60, "worker_command.sh")
        script = next(out.glob("*/worker_command.sh"))
        command = script.read_text().splitlines()[-1]
        assert f"--worker --master-host 127.0.0.1 --master-port {port}" in command
        assert "POOLBENCH_WARMUP_S=1 " in command and "POOLBENCH_OUT_DIR" not in command
        wait_until(lambda: has_child(sweep.pid, "locust"), 30, "the Locust master")
        children = descendants(sweep.pid)
        # What a user does on the load-generator machine: run the file, virtualenv active.
        env = os.environ | {"PATH": f"{VENV_BIN}:{os.environ['PATH']}"}
        worker = subprocess.Popen(
            ["sh", str(script)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        wait_until(lambda: has_child(worker.pid, "locust"), 10, "the worker")
        children += [psutil.Process(worker.pid), *descendants(worker.pid)]
        assert sweep.wait(timeout=90) == 0, log.read_text()[-2000:]
        assert worker.wait(timeout=30) == 0  # the master tells its workers to quit
    finally:
        kill_group(worker)
        kill_group(sweep)
    assert_all_gone(children)
    assert command in log.read_text().splitlines()  # printed whole, on one line

    sweep_dir = only_sweep_dir(out)
    (row,) = read_rows(sweep_dir)[1]
    requests, rps, hold_ms = (
        int(row["requests"]),
        float(row["rps"]),
        float(row["hold_time_mean_ms"]),
    )
    assert requests > 0 and float(row["error_rate"]) == 0
    # The worker resets its stats with the master: no warm-up in the totals (Little's law).
    assert rps <= 2 / (hold_ms / 1000) * 1.15
    run = json.loads((sweep_dir / "runs" / row["run_id"] / "run.json").read_text())
    assert run["remote_workers"] == 1 and run["locust_processes"] == 1
    # The remote worker sends its window figures to the master, which writes them here.
    assert run["figures"]["latency_source"] == "hdr" and run["window"]["exact"]
    assert not list((sweep_dir / "runs" / row["run_id"]).glob("latency-*"))  # merged
    assert (sweep_dir / "runs" / row["run_id"] / "latency.json").exists()
    manifest = json.loads((sweep_dir / "manifest.json").read_text())
    assert manifest["remote_workers"] == {"count": 1, "bind_host": "127.0.0.1", "port": port}


def test_local_and_remote_workers_are_exclusive() -> None:
    result = run_sweep(
        "bench/poolbench/specs/quick.toml", "--workers", "2", "--remote-workers", "1"
    )
    assert result.returncode == 2
    assert result.stderr.startswith("error: --workers and --remote-workers")


# Stops the previous instance (pid file), waits until it is gone (or a zombie: PID 1 may not
# reap), and starts the app in the background with the point's pool settings.
RESTART_CMD = """
echo "restart: pool_size={pool_size} max_overflow={max_overflow}"
if [ -f PIDFILE ]; then
  pid=$(cat PIDFILE)
  kill $pid 2>/dev/null
  while [ -e /proc/$pid ] && ! grep -q zombie /proc/$pid/status; do sleep 0.05; done
fi
DB_POOL_SIZE={pool_size} DB_MAX_OVERFLOW={max_overflow} PYTHON -m uvicorn \
  poolbench.sample_app.main:app \
  --host 127.0.0.1 --port PORT --log-level warning >> LOGFILE 2>&1 &
echo $! > PIDFILE
"""


def stop_target(pidfile: Path) -> None:
    if not pidfile.exists():
        return
    with contextlib.suppress(psutil.NoSuchProcess):
        proc = psutil.Process(int(pidfile.read_text()))
        proc.terminate()
        _, alive = psutil.wait_procs([proc], timeout=10)
        for left in alive:
            if left.status() != psutil.STATUS_ZOMBIE:
                left.kill()


@pytest.mark.slow
def test_external_target_is_restarted_with_each_points_settings(tmp_path: Path) -> None:
    port, pidfile = free_port(), tmp_path / "target.pid"
    restart_cmd = (
        RESTART_CMD.replace("PIDFILE", str(pidfile))
        .replace("PYTHON", sys.executable)
        .replace("PORT", str(port))
        .replace("LOGFILE", str(tmp_path / "target.log"))
    )
    out = tmp_path / "results"
    with database() as db:
        seed = subprocess.run(
            [sys.executable, "-m", "poolbench.sample_app.seed", "--users", "200"],
            cwd=ROOT,
            env=os.environ | {"DATABASE_URL": db.sqlalchemy_url, "LOG_LEVEL": "WARNING"},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert seed.returncode == 0, seed.stderr[-2000:]
        spec = tmp_path / "external.toml"
        spec.write_text(
            TINY_SPEC.format(pool_sizes="[2, 4]", users=8, duration_s=3)
            + f'[target]\nurl = "http://127.0.0.1:{port}"\nhealth_path = "/users/1"\n'
            + f"restart_cmd = '''{restart_cmd}'''\n"
            + f'pid_file = "{pidfile}"\n'
            + f'[app_env]\nDATABASE_URL = "{db.sqlalchemy_url}"\n'
        )
        try:
            result = run_sweep(str(spec), "--out", str(out), "--dsn", db.dsn, "--no-report")
        finally:
            stop_target(pidfile)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]

    sweep_dir = only_sweep_dir(out)
    rows = read_rows(sweep_dir)[1]
    assert [int(r["pool_size"]) for r in rows] == [2, 4]
    for row in rows:
        pool_size, run_dir = int(row["pool_size"]), sweep_dir / "runs" / row["run_id"]
        assert int(row["requests"]) > 0 and float(row["error_rate"]) == 0
        # 8 users on a pool of 2 or 4 (the app's default is 5 + 10 overflow).
        assert 0 < int(row["peak_checked_out"]) <= pool_size
        telemetry = json.loads((run_dir / "telemetry.json").read_text())
        assert telemetry["sqlalchemy"]["pool_size"] == pool_size
        assert f"restart: pool_size={pool_size} max_overflow=0" in (run_dir / "app.log").read_text()
        assert int(row["pg_xact_commit"]) > 0  # the probe watched the target's database
        # Measured from the pid file the restart wrote (re-read every run).
        assert float(row["app_cpu_pct"]) > 0 and float(row["app_peak_rss_mb"]) > 20


# A service of the user's own that exposes only Prometheus /metrics (its /telemetry is mounted
# elsewhere, as a proxy might hide it): the runner differences /metrics across the window.
METRICS_ONLY_APP = """
import os

from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from poolbench import instrument

engine = create_async_engine(
    os.environ["DATABASE_URL"], pool_size=int(os.environ["DB_POOL_SIZE"]), max_overflow=0
)
app = FastAPI()
instrument(app, engine=engine, telemetry_path="/internal/telemetry")


@app.get("/users/{user_id}")
async def user(user_id: int) -> dict:
    async with engine.connect() as conn:
        await conn.execute(text("SELECT pg_sleep(0.02)"))
    return {"id": user_id}
"""


@pytest.mark.slow
def test_a_target_with_only_prometheus_metrics_still_gives_pool_figures(tmp_path: Path) -> None:
    port, pidfile = free_port(), tmp_path / "target.pid"
    (tmp_path / "metrics_only.py").write_text(METRICS_ONLY_APP)
    restart_cmd = (
        RESTART_CMD.replace(
            "poolbench.sample_app.main:app", f"--app-dir {tmp_path} metrics_only:app"
        )
        .replace("PIDFILE", str(pidfile))
        .replace("PYTHON", sys.executable)
        .replace("PORT", str(port))
        .replace("LOGFILE", str(tmp_path / "target.log"))
    )
    out = tmp_path / "results"
    with database() as db:
        spec = tmp_path / "metrics.toml"
        spec.write_text(
            TINY_SPEC.format(pool_sizes="[2]", users=4, duration_s=3)
            + f'[target]\nurl = "http://127.0.0.1:{port}"\nhealth_path = "/users/1"\n'
            + f"restart_cmd = '''{restart_cmd}'''\n"
            + f'[app_env]\nDATABASE_URL = "{db.sqlalchemy_url}"\n'
        )
        try:
            result = run_sweep(str(spec), "--out", str(out), "--no-report")
        finally:
            stop_target(pidfile)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    sweep_dir = only_sweep_dir(out)
    (row,) = read_rows(sweep_dir)[1]
    run = json.loads((sweep_dir / "runs" / row["run_id"] / "run.json").read_text())
    assert run["telemetry_source"] == "/metrics"
    # From the cumulative hold-time sum and count: about the 20 ms the query sleeps.
    assert 15 < float(row["hold_time_mean_ms"]) < 200
    assert float(row["acquire_wait_mean_ms"]) >= 0
    analysed = subprocess.run(
        [sys.executable, "-m", "poolbench.cli", "analyze", str(sweep_dir)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "read the target's /metrics (it serves no /telemetry)" in analysed.stdout


@pytest.mark.slow
def test_an_adaptive_search_runs_part_of_the_grid_and_finds_its_optimum(tmp_path: Path) -> None:
    spec = tmp_path / "search.toml"
    spec.write_text(
        TINY_SPEC.format(pool_sizes="[1, 2, 3, 4, 6, 8]", users=20, duration_s=3)
        .replace('scenario = "single_query"', 'scenario = "single_query"\nopen_model_rps = 2.5')
        .replace("repetitions = 1", "repetitions = 2")
        + "[slo]\np95_ms = 100\n"
    )
    out = tmp_path / "results"
    done = run_sweep(str(spec), "--search", "adaptive", "--out", str(out), "--no-report")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "an adaptive search of 12 grid runs" in done.stdout
    sweep_dir = only_sweep_dir(out)
    manifest = json.loads((sweep_dir / "manifest.json").read_text())
    assert manifest["status"] == "finished" and manifest["spec"]["search"] == "adaptive"
    _, rows = read_rows(sweep_dir)
    assert 2 <= len(rows) < 12
    analysis = tmp_path / "analysis.json"
    analysed = subprocess.run(
        [sys.executable, "-m", "poolbench.cli", "analyze", str(sweep_dir), "--json", str(analysis)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert analysed.returncode == 0, analysed.stderr
    assert f"an adaptive search (bench/sweep/search.py) ran {len(rows)} of" in analysed.stdout
    # The search stops at the smallest size that met the SLO in both repetitions: the only size
    # it ran twice, and the analysis of its runs picks the same.
    twice = {int(r["pool_size"]) for r in rows if r["repetition"] == "2"}
    assert len(twice) == 1
    recommended = json.loads(analysis.read_text())["recommendation"]
    assert recommended is not None and recommended["pool_size"] == twice.pop()
