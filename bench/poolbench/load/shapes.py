"""Load shapes chosen by `POOLBENCH_SHAPE`; constant load needs none (Locust's -u/-r/-t).

A locustfile exposes `LoadShape = shape_from_env()`: Locust uses a LoadTestShape subclass found
in the locustfile's namespace, and `None` there means no shape.
"""

from __future__ import annotations

import math

from locust import LoadTestShape

from poolbench.scenario_env import ScenarioEnv

DEFAULT_SPIKE_BASE_SHARE = 0.25  # users outside the spike, as a share of the peak


class StepShape(LoadTestShape):
    """Ramp users up in equal steps to find where throughput stops growing (saturation)."""

    def __init__(self) -> None:
        super().__init__()
        env = ScenarioEnv.from_env()
        self.users = env.users
        self.steps = max(1, env.steps)
        self.duration_s = env.duration_s
        self.spawn_rate = env.spawn_rate

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
        env = ScenarioEnv.from_env()
        self.users = env.users
        self.base_users = max(1, round(self.users * DEFAULT_SPIKE_BASE_SHARE))
        self.duration_s = env.duration_s
        self.spawn_rate = env.spawn_rate

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
    name = ScenarioEnv.from_env().shape
    if name == "constant":
        return None
    if name not in SHAPES:
        raise ValueError(f"POOLBENCH_SHAPE must be constant, step or spike, not {name!r}")
    return SHAPES[name]
