"""Load shapes chosen by `POOLBENCH_SHAPE`; constant load needs none (Locust's -u/-r/-t).

A locustfile exposes `LoadShape = shape_from_env()`: Locust uses a LoadTestShape subclass found
in the locustfile's namespace, and `None` there means no shape.
"""

from __future__ import annotations

import math
import os

from locust import LoadTestShape

DEFAULT_USERS = 32
DEFAULT_SPAWN_RATE = 100.0
DEFAULT_DURATION_S = 60.0
DEFAULT_STEPS = 5
DEFAULT_SPIKE_BASE_SHARE = 0.25  # users outside the spike, as a share of the peak


def _users() -> int:
    return int(os.environ.get("POOLBENCH_USERS", DEFAULT_USERS))


def _spawn_rate() -> float:
    return float(os.environ.get("POOLBENCH_SPAWN_RATE", DEFAULT_SPAWN_RATE))


def _duration_s() -> float:
    """Whole run time, warm-up included."""
    return float(os.environ.get("POOLBENCH_DURATION_S", DEFAULT_DURATION_S))


class StepShape(LoadTestShape):
    """Ramp users up in equal steps to find where throughput stops growing (saturation)."""

    def __init__(self) -> None:
        super().__init__()
        self.users = _users()
        self.steps = max(1, int(os.environ.get("POOLBENCH_STEPS", DEFAULT_STEPS)))
        self.duration_s = _duration_s()
        self.spawn_rate = _spawn_rate()

    def tick(self) -> tuple[int, float] | None:
        run_time = self.get_run_time()
        if run_time >= self.duration_s:
            return None
        step = min(self.steps, math.floor(run_time / (self.duration_s / self.steps)) + 1)
        return max(1, round(self.users * step / self.steps)), self.spawn_rate


class SpikeShape(LoadTestShape):
    """A base load with a burst to the full user count in the middle third of the run."""

    def __init__(self) -> None:
        super().__init__()
        self.users = _users()
        self.base_users = max(1, round(self.users * DEFAULT_SPIKE_BASE_SHARE))
        self.duration_s = _duration_s()
        self.spawn_rate = _spawn_rate()

    def tick(self) -> tuple[int, float] | None:
        run_time = self.get_run_time()
        if run_time >= self.duration_s:
            return None
        in_spike = self.duration_s / 3 <= run_time < 2 * self.duration_s / 3
        # A spike arrives at once: spawn as fast as Locust can.
        return (
            (self.users, max(self.spawn_rate, float(self.users)))
            if in_spike
            else (
                self.base_users,
                self.spawn_rate,
            )
        )


SHAPES: dict[str, type[LoadTestShape]] = {"step": StepShape, "spike": SpikeShape}


def shape_from_env() -> type[LoadTestShape] | None:
    """Return the shape class named by POOLBENCH_SHAPE, or None for constant load."""
    name = os.environ.get("POOLBENCH_SHAPE", "constant")
    if name == "constant":
        return None
    if name not in SHAPES:
        raise ValueError(f"POOLBENCH_SHAPE must be constant, step or spike, not {name!r}")
    return SHAPES[name]
