"""What a sweep measures is what happened: open-model queueing, whole-host CPU, empty windows.

Real Postgres, app, Locust and CPU load on loopback; every run is a few seconds.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from poolbench import analyse, load_sweep
from tests.sweep.test_sweep import QUICK, only_dir, read_rows, run_sweep

# One connection holding each request ~26 ms (20 ms simulated, pre-ping, overhead): ~38 rps.
POOL_1 = ["--set", "grid.pool_size=[1]", "--set", "workload.sim_latency_ms=20"]
POOL_1 += ["--repetitions", "1", "--warmup", "1", "--no-report"]
# Twice its capacity: 9 users x 10 rps = 90 rps offered, as open Poisson arrivals.
OVERLOAD = POOL_1 + ["--users", "9", "--set", "open_model_rps=10"]


def measure(tmp_path: Path, name: str, *args: str) -> dict[str, str]:
    out = tmp_path / name
    result = run_sweep(QUICK, "--out", str(out), *args, timeout=180)
    assert result.returncode == 0, result.stderr[-2000:]
    (row,) = read_rows(only_dir(out))[1]
    return row


@pytest.mark.slow
def test_open_model_overload_queues_without_bound(tmp_path: Path) -> None:
    short = measure(tmp_path, "short", *OVERLOAD, "--duration", "3")
    long = measure(tmp_path, "long", *OVERLOAD, "--duration", "8")
    for row in (short, long):
        served = float(row["rps"])
        # The pool's capacity, one connection leased back to back (~26 ms with pre-ping), not
        # the 90 rps offered.
        capacity = 1000 / float(row["hold_time_mean_ms"])
        assert 0.8 * capacity < served <= 1.1 * capacity and served < 0.7 * 90, row
        assert row["bottleneck"] == "pool", row
        # The load generator kept its schedule: the queue is in the app, not in Locust.
        assert float(row["schedule_lag_p95_ms"]) < 50 and int(row["dropped_arrivals"]) == 0
    # A closed loop would show p95 ~ users / throughput (~200 ms) at any length. An open model
    # queues: the backlog grows at offered - served, so latency grows with the run's length.
    assert float(long["p95_ms"]) > 1.8 * float(short["p95_ms"]), (short, long)
    assert float(short["p95_ms"]) > 1000
    backlog_growth = int(long["inflight_at_end"]) - int(short["inflight_at_end"])
    expected = (90 - float(long["rps"])) * (8 - 3)
    assert 0.5 * expected < backlog_growth < 1.5 * expected, (short, long, expected)


@pytest.mark.slow
def test_open_model_cap_drops_and_reports_arrivals(tmp_path: Path) -> None:
    row = measure(
        tmp_path, "capped", *OVERLOAD, "--duration", "3", "--set", "open_model_max_inflight=20"
    )
    assert int(row["dropped_arrivals"]) > 30, row  # ~45 rps over the cap for 3 s
    assert int(row["inflight_at_end"]) <= 20
    analysis = analyse(load_sweep(only_dir(tmp_path / "capped")))
    assert any("in-flight cap" in w and "dropped" in w for w in analysis.warnings)


@pytest.fixture
def busy_host() -> Iterator[None]:
    """Two CPU burners outside every measured process tree, stopped after at most 60 s."""
    burn = "import time\nend = time.monotonic() + 60\nwhile time.monotonic() < end: pass"
    burners = [subprocess.Popen([sys.executable, "-c", burn]) for _ in range(2)]
    try:
        yield
    finally:
        for burner in burners:
            burner.kill()
            burner.wait(timeout=10)


@pytest.mark.slow
def test_a_saturated_host_is_labelled_host_cpu(tmp_path: Path, busy_host: None) -> None:
    # A light load: no process of ours is near a core, but the host has none to spare.
    row = measure(tmp_path, "busy", *POOL_1, "--users", "2", "--duration", "3")
    assert float(row["host_cpu_pct"]) >= 90, row
    assert float(row["app_cpu_pct"]) < 90 and float(row["locust_cpu_pct"]) < 90, row
    assert row["bottleneck"] == "host_cpu", row
    analysis = analyse(load_sweep(only_dir(tmp_path / "busy")))
    assert any("host-CPU-bound" in w for w in analysis.warnings)
    assert analysis.headline.optimum.inconclusive and analysis.verdict().startswith("INCONCLUSIVE")


@pytest.mark.slow
def test_an_empty_window_fails_the_slo_with_its_reason(tmp_path: Path) -> None:
    # Each query sleeps 20 s: nothing completes in a 2 s window.
    row = measure(
        tmp_path,
        "empty",
        *POOL_1,
        "--set",
        "workload.sim_latency_ms=20000",
        "--set",
        "open_model_rps=0",
        "--users",
        "2",
        "--duration",
        "2",
    )
    assert int(row["requests"]) == 0 and row["p95_ms"] == "" and row["error_rate"] == "", row
    assert int(row["inflight_at_end"]) == 2  # both users' requests, counted, not dropped
    analysis = analyse(load_sweep(only_dir(tmp_path / "empty")))
    assert analysis.verdict().startswith("FAIL")
    assert "no request completed in the measured window" in analysis.headline.optimum.reason
    assert any("completed no request" in w for w in analysis.warnings)
