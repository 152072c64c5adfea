"""Faults during a sweep: real processes die under it, and nothing wrong is kept as a result.

Each test runs one short point against real Postgres, uvicorn and Locust on loopback.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from tests.sweep.test_sweep import (
    QUICK,
    ROOT,
    TINY_ONE,
    descendants,
    only_dir,
    read_rows,
    run_sweep,
    sweep_argv,
    wait_until,
)

RUN_ID = "p2-o0-s20-u4-q1-r1"
# Long enough to kill something inside the measured window, short enough for the suite.
WINDOWED = [*TINY_ONE, "--duration", "8"]


def start(out: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        sweep_argv(QUICK, "--out", str(out), *args),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def in_window(out: Path) -> bool:
    """Whether a run's measured window has opened (Locust wrote its start marker)."""
    return any('"start"' in p.read_text() for p in out.glob("*/runs/.*.tmp/window.jsonl"))


def child(sweep: subprocess.Popen[str], match: str) -> psutil.Process:
    """The sweep's child process whose command line matches (the postmaster, uvicorn...)."""
    for proc in descendants(sweep.pid):
        try:
            if match in " ".join(proc.cmdline()):
                return proc
        except psutil.Error:
            continue
    raise AssertionError(f"no child process matching {match!r}")


def finish(sweep: subprocess.Popen[str]) -> tuple[int, str]:
    try:
        _, stderr = sweep.communicate(timeout=120)
    finally:
        if sweep.poll() is None:
            sweep.kill()
            sweep.communicate()
    return sweep.returncode, stderr


@pytest.mark.slow
def test_a_sweep_works_from_any_directory(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = subprocess.run(
        sweep_argv(str(ROOT / QUICK), "--out", "results", *TINY_ONE),
        cwd=elsewhere,
        capture_output=True,
        text=True,
        timeout=150,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    sweep_dir = only_dir(elsewhere / "results")
    assert (sweep_dir / "runs" / RUN_ID / "run.json").is_file()
    assert [row["run_id"] for row in read_rows(sweep_dir)[1]] == [RUN_ID]
    assert not list(sweep_dir.glob("runs/.*"))


# `pg_ctl stop -m fast` is a SIGINT to the postmaster; SIGKILL is the crash.
@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT], ids=["killed", "fast-stop"])
def test_a_database_that_dies_mid_run_fails_the_run_and_resume_redoes_it(
    tmp_path: Path, sig: signal.Signals
) -> None:
    sweep = start(tmp_path, *WINDOWED)
    try:
        wait_until(lambda: in_window(tmp_path), 90, "the measured window")
        child(sweep, "postgres -D").send_signal(sig)
    finally:
        code, stderr = finish(sweep)
    assert code == 1, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    assert lines[0].startswith(f"error: run {RUN_ID} failed: the database went away")
    sweep_dir = only_dir(tmp_path)
    assert not (sweep_dir / "runs" / RUN_ID).exists()
    assert not list(sweep_dir.glob("runs/.*")), "a torn run directory was left"
    assert read_rows(sweep_dir)[1] == []
    manifest = json.loads((sweep_dir / "manifest.json").read_text())
    assert manifest["status"] == "failed"
    (failure,) = manifest["failed_runs"]
    assert failure["run_id"] == RUN_ID and "database went away" in failure["error"]
    (kept,) = (sweep_dir / "logs" / "failed").iterdir()
    assert (kept / "app.log").is_file()

    again = run_sweep("--resume", str(sweep_dir), "--no-report")
    assert again.returncode == 0, again.stderr[-2000:]
    assert f"resume: the sweep stopped when run {RUN_ID} failed" in again.stdout
    assert [row["run_id"] for row in read_rows(sweep_dir)[1]] == [RUN_ID]


@pytest.mark.slow
def test_an_app_that_dies_mid_run_fails_the_run(tmp_path: Path) -> None:
    sweep = start(tmp_path, *WINDOWED)
    try:
        wait_until(lambda: in_window(tmp_path), 90, "the measured window")
        child(sweep, "poolbench.sweep.appserver").kill()
    finally:
        code, stderr = finish(sweep)
    assert code == 1, stderr
    assert "Traceback" not in stderr and len(stderr.strip().splitlines()) == 1, stderr
    assert f"run {RUN_ID} failed: the app exited during the run" in stderr
    sweep_dir = only_dir(tmp_path)
    assert not (sweep_dir / "runs" / RUN_ID).exists()
    assert json.loads((sweep_dir / "manifest.json").read_text())["status"] == "failed"


@pytest.mark.slow
def test_a_killed_sweep_is_reported_as_cut_off(tmp_path: Path) -> None:
    sweep = start(tmp_path, *TINY_ONE, "--set", "grid.pool_size=[2,4]")
    try:
        wait_until(lambda: any(tmp_path.glob(f"*/runs/{RUN_ID}/run.json")), 90, "the first run")
        children = descendants(sweep.pid)
        sweep.kill()
    finally:
        finish(sweep)
    # Children get SIGTERM from the kernel when the sweep dies (PR_SET_PDEATHSIG).
    _, alive = psutil.wait_procs(children, timeout=30)
    assert not alive, alive
    sweep_dir = only_dir(tmp_path)
    assert json.loads((sweep_dir / "manifest.json").read_text())["status"] == "running"

    analysed = subprocess.run(
        [sys.executable, "-m", "poolbench.cli", "analyze", str(sweep_dir)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "the sweep was cut off" in analysed.stdout, analysed.stdout + analysed.stderr
    assert "1 of 2 runs finished" in analysed.stdout
    again = run_sweep("--resume", str(sweep_dir), "--no-report")
    assert again.returncode == 0, again.stderr[-2000:]
    assert "resume: the sweep was cut off" in again.stdout
    assert len(read_rows(sweep_dir)[1]) == 2
