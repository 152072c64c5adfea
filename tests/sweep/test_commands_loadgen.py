"""The Locust processes a run gets: the estimate, the choice and the --workers option."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from poolbench.cli.sweep import parse_workers
from poolbench.errors import UsageError
from poolbench.spec import Point, SweepSpec
from poolbench.specfile import load_spec
from poolbench.sweep.commands import local_processes_args
from poolbench.sweep.loadgen import (
    DEFAULT_LOCUST_CPU_TARGET_PCT,
    LOCUST_RPS_PER_CPU_S,
    LocustCost,
    choose_workers,
    expected_rps,
    plan_workers,
)
from tests.conftest import ROOT

QUICK = ROOT / "bench/poolbench/specs/quick.toml"
# The most one process may serve under the target share of a core.
ONE_PROCESS_RPS = LOCUST_RPS_PER_CPU_S * DEFAULT_LOCUST_CPU_TARGET_PCT / 100


def closed(**overrides: object) -> tuple[Point, SweepSpec]:
    spec = load_spec(QUICK, {"open_model_rps": 0, "timing.repetitions": 1, **overrides})
    return spec.points()[0], spec


@pytest.mark.parametrize(
    ("rps", "cores", "workers"),
    [
        (0, 2, 1),
        (100, 2, 1),
        (ONE_PROCESS_RPS, 2, 1),
        (ONE_PROCESS_RPS + 1, 2, 2),
        (2 * ONE_PROCESS_RPS, 4, 2),
        (2 * ONE_PROCESS_RPS + 1, 4, 3),
        (ONE_PROCESS_RPS + 1, 1, 1),
    ],
)
def test_the_fewest_processes_under_the_target(rps: float, cores: int, workers: int) -> None:
    chosen, pct = choose_workers(rps, cores=cores)
    assert chosen == workers
    assert pct == pytest.approx(rps / workers / LOCUST_RPS_PER_CPU_S * 100)


def test_the_cores_cap_the_processes_even_above_the_target() -> None:
    assert choose_workers(10_000, cores=2) == (
        2,
        pytest.approx(10_000 / 2 / LOCUST_RPS_PER_CPU_S * 100),
    )
    assert choose_workers(math.inf, cores=2) == (2, math.inf)


def test_the_default_sweep_needs_one_process() -> None:
    spec = load_spec(QUICK, {})
    choice = plan_workers(spec.points()[0], spec, given=None, cores=2)
    assert (choice.workers, choice.expected_rps) == (1, 100)
    assert choice.expected_cpu_pct == pytest.approx(100 / LOCUST_RPS_PER_CPU_S * 100)
    assert choice.reason.startswith("auto: open model: 40 users x 2.5/s = 100/s offered")


def test_a_number_on_the_command_line_wins() -> None:
    spec = load_spec(QUICK, {})
    choice = plan_workers(spec.points()[0], spec, given=3, cores=2)
    assert (choice.workers, choice.expected_rps, choice.reason) == (3, None, "--workers 3")


def test_a_closed_loop_is_bounded_by_users_and_think_time() -> None:
    point, spec = closed(**{"grid.users": [10], "workload.think_time_s": 0.48})
    rps, how = expected_rps(point, spec)
    assert rps == pytest.approx(10 / (0.48 + 0.02))
    assert "10 users / (0.48 s think + 20 ms least response)" in how


def test_a_closed_loop_is_bounded_by_the_pool() -> None:
    # 64 users without think time could send 3200/s; 2 connections held 20 ms serve 100/s.
    point, spec = closed(**{"grid.users": [64], "grid.pool_size": [2], "grid.app_workers": [1]})
    rps, how = expected_rps(point, spec)
    assert rps == pytest.approx(100)
    assert "2 connections / 20 ms least hold" in how
    assert plan_workers(point, spec, given=None, cores=2).workers == 1


def test_a_closed_loop_near_the_pool_bound_gets_more_processes() -> None:
    point, spec = closed(**{"grid.users": [64], "grid.pool_size": [80]})
    choice = plan_workers(point, spec, given=None, cores=2)
    assert choice.expected_rps == pytest.approx(64 / 0.02)  # the users bound is the smaller
    assert choice.workers == 2
    assert choice.expected_cpu_pct == pytest.approx(64 / 0.02 / 2 / LOCUST_RPS_PER_CPU_S * 100)
    assert "capped at 2 (the host's cores)" in choice.reason


def own_locustfile(tmp_path: Path, **overrides: object) -> tuple[Point, SweepSpec]:
    mine = tmp_path / "mine.py"
    mine.write_text(
        "from locust import HttpUser, task\n\n\nclass MyUser(HttpUser):\n"
        "    @task\n    def get_root(self) -> None:\n        self.client.get('/')\n"
    )
    return closed(locustfile=str(mine), scenario=None, **overrides)


def test_an_own_locustfile_starts_with_one_process(tmp_path: Path) -> None:
    """Its cost per request is unknown before it ran (issue 18: it got two on two cores)."""
    point, spec = own_locustfile(tmp_path)
    choice = plan_workers(point, spec, given=None, cores=2)
    assert choice.workers == 1 and choice.expected_rps is None
    assert "not measured before its first run: 1 process" in choice.reason


def test_an_own_locustfile_is_planned_from_its_measured_cost(tmp_path: Path) -> None:
    # Two runs: 400/s at 50 % of a core (800 per CPU-second) and 300/s at 30 % (1,000).
    runs = [{"rps": 400.0, "locust_cpu_pct": 50.0}, {"rps": 300.0, "locust_cpu_pct": 30.0}]
    measured = LocustCost.measured([*runs, {"rps": 10.0, "locust_cpu_pct": None}])
    assert measured == LocustCost(rps_per_cpu_s=800.0, peak_rps=400.0)
    point, spec = own_locustfile(tmp_path)  # closed loop: the highest rate measured, 400/s
    choice = plan_workers(point, spec, given=None, cores=2, measured=measured)
    assert choice.workers == 1 and choice.expected_cpu_pct == pytest.approx(50)
    assert "the highest rate measured, 400/s; 800 requests per Locust CPU-second" in choice.reason
    point, spec = own_locustfile(tmp_path, open_model_rps=30, kind="slo")  # 40 x 30 = 1,200/s
    choice = plan_workers(point, spec, given=None, cores=2, measured=measured)
    assert choice.workers == 2 and choice.expected_cpu_pct == pytest.approx(75)
    assert LocustCost.measured([{"rps": 5.0, "locust_cpu_pct": 0.0}]) is None


@pytest.mark.parametrize(("value", "workers"), [("auto", None), ("AUTO", None), ("2", 2)])
def test_workers_option_parses(value: str, workers: int | None) -> None:
    assert parse_workers(value) == workers


@pytest.mark.parametrize("value", ["0", "-1", "two", ""])
def test_workers_option_refuses_anything_else(value: str) -> None:
    with pytest.raises(UsageError, match="give a number of processes"):
        parse_workers(value)


def test_local_processes_listen_on_loopback() -> None:
    assert local_processes_args(1) == []
    args = local_processes_args(2)
    assert args[:2] == ["--processes", "2"]
    bind = args[args.index("--master-bind-host") + 1]
    port = args[args.index("--master-bind-port") + 1]
    assert bind == "127.0.0.1" and args[args.index("--master-port") + 1] == port
