"""Load shapes and open-model pacing, at unit level (no load is generated)."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from poolbench.locustfiles import known_scenarios

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = known_scenarios()


@pytest.fixture(scope="module")
def shapes() -> ModuleType:
    """poolbench.load.shapes, imported without gevent's monkey patching of this whole process."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LOCUST_SKIP_MONKEY_PATCH", "1")
        return importlib.import_module("poolbench.load.shapes")


def ticks(shape: object, times: list[float]) -> list[tuple[int, float] | None]:
    """Return shape.tick() at each run time, by patching the instance's clock."""
    results = []
    for run_time in times:
        shape.get_run_time = lambda run_time=run_time: run_time  # type: ignore[attr-defined]
        results.append(shape.tick())  # type: ignore[attr-defined]
    return results


def test_step_shape_ramps_in_equal_steps_then_ends(
    shapes: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("POOLBENCH_USERS", "10")
    monkeypatch.setenv("POOLBENCH_STEPS", "5")
    monkeypatch.setenv("POOLBENCH_DURATION_S", "10")
    monkeypatch.setenv("POOLBENCH_SPAWN_RATE", "7")
    times = [0, 1.99, 2, 3.5, 4, 6, 8, 9.99, 10, 11]
    users = [2, 2, 4, 4, 6, 8, 10, 10, None, None]
    expected = [None if u is None else (u, 7.0) for u in users]
    assert ticks(shapes.StepShape(), times) == expected


def test_spike_shape_bursts_in_the_middle_third_then_ends(
    shapes: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("POOLBENCH_USERS", "20")
    monkeypatch.setenv("POOLBENCH_DURATION_S", "9")
    monkeypatch.setenv("POOLBENCH_SPAWN_RATE", "2")
    base, spike = (5, 2.0), (20, 20.0)  # a quarter of the users; the spike spawns at once
    times = [0, 2.99, 3, 5.99, 6, 8.99, 9, 12]
    expected = [base, base, spike, spike, base, base, None, None]
    assert ticks(shapes.SpikeShape(), times) == expected


def test_shape_from_env(shapes: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POOLBENCH_SHAPE", "constant")
    assert shapes.shape_from_env() is None
    monkeypatch.setenv("POOLBENCH_SHAPE", "step")
    assert shapes.shape_from_env() is shapes.StepShape
    monkeypatch.setenv("POOLBENCH_SHAPE", "spike")
    assert shapes.shape_from_env() is shapes.SpikeShape
    monkeypatch.setenv("POOLBENCH_SHAPE", "zigzag")
    with pytest.raises(ValueError, match="zigzag"):
        shapes.shape_from_env()


# Imports every scenario with the env the runner sets and calls each user class's wait_time
# CALLS times back to back, as if the tasks took no time and no wait was slept: a paced user then
# owes one start per period, so the last wait is CALLS periods ahead (fixed or random gaps alike).
CALLS = 400
WAITS = """
import importlib, json, random, sys
from time import perf_counter
from locust import User

random.seed(1)
waits = {}
for name in sys.argv[2:]:
    module = importlib.import_module(f"scenarios.{name}")
    for cls in vars(module).values():
        if isinstance(cls, type) and issubclass(cls, User) and cls.__module__ == module.__name__:
            fake = type("Fake", (), {"_cp_last_run": perf_counter(), "_cp_last_wait_time": 0})()
            calls = [cls.wait_time(fake) for _ in range(int(sys.argv[1]))]
            waits[f"{name}.{cls.__name__}"] = calls
print(json.dumps(waits))
"""


def user_waits(env: dict[str, str]) -> dict[str, list[float]]:
    result = subprocess.run(
        [sys.executable, "-c", WAITS, str(CALLS), *SCENARIOS],
        cwd=ROOT,
        env={k: v for k, v in os.environ.items() if not k.startswith("POOLBENCH_")} | env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout)


def test_open_model_rps_paces_every_scenario_user() -> None:
    waits = user_waits({"POOLBENCH_OPEN_RPS": "4", "POOLBENCH_THINK_TIME_S": "9"})
    assert len(waits) >= len(SCENARIOS)
    for name, calls in waits.items():
        # 4 starts per second per user, whatever the think time: a mean period of 0.25 s.
        assert calls[-1] / CALLS == pytest.approx(0.25, rel=0.15), name


def test_closed_model_waits_the_think_time() -> None:
    waits = user_waits({"POOLBENCH_THINK_TIME_S": "0.5"})
    assert len(waits) >= len(SCENARIOS)
    assert all(set(calls) == {0.5} for calls in waits.values()), waits
