"""The contract between the sweep runner and the Locust scenarios: `POOLBENCH_*` variables.

The runner builds a ScenarioEnv per run and passes `to_env()`; every locustfile reads
`ScenarioEnv.from_env()`, so a locustfile also runs by hand with these defaults. Standard
library only: Locust processes import it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path

from poolbench.defaults import (
    DEFAULT_FANOUT_CALLS,
    DEFAULT_OPEN_MODEL_MAX_INFLIGHT,
    DEFAULT_OPEN_MODEL_RPS,
    DEFAULT_QUERIES_PER_REQUEST,
    DEFAULT_SEED_USERS,
    DEFAULT_SHAPE,
    DEFAULT_SPAWN_RATE,
    DEFAULT_THINK_TIME_S,
    DEFAULT_USERS,
)

PREFIX = "POOLBENCH_"
# For a locustfile run by hand: the whole run (warm-up included), and the step shape's steps.
DEFAULT_RUN_S = 60.0
DEFAULT_STEPS = 5


@dataclass(frozen=True, kw_only=True)
class ScenarioEnv:
    """What a scenario needs to know; each field is the variable POOLBENCH_<FIELD>."""

    warmup_s: float = 0.0
    seed_users: int = DEFAULT_SEED_USERS
    think_time_s: float = DEFAULT_THINK_TIME_S
    open_rps: float = DEFAULT_OPEN_MODEL_RPS  # per user; > 0: each user a Poisson arrival process
    max_inflight: int = DEFAULT_OPEN_MODEL_MAX_INFLIGHT  # open model: the cap per Locust process
    queries: int = DEFAULT_QUERIES_PER_REQUEST
    fanout_calls: int = DEFAULT_FANOUT_CALLS
    shape: str = DEFAULT_SHAPE
    users: int = DEFAULT_USERS
    spawn_rate: float = DEFAULT_SPAWN_RATE
    duration_s: float = DEFAULT_RUN_S  # the whole run, warm-up included
    steps: int = DEFAULT_STEPS  # the step shape's steps
    # A user's own locustfile, which `poolbench/load/own_locustfile.py` runs; "" for a scenario.
    locustfile: str = ""
    # Where each Locust process writes its window files; None for a remote worker.
    out_dir: Path | None = None

    def to_env(self) -> dict[str, str]:
        """Return the variables for a Locust process (out_dir only when set)."""
        env: dict[str, str] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None:
                continue
            env[PREFIX + f.name.upper()] = f"{value:g}" if isinstance(value, float) else str(value)
        return env

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> ScenarioEnv:
        """Read the variables that are set; the others keep their defaults."""
        values: dict[str, object] = {}
        for f in fields(cls):
            raw = environ.get(PREFIX + f.name.upper())
            if raw is None or raw == "":
                continue
            default = getattr(cls(), f.name)
            if f.name == "out_dir":
                values[f.name] = Path(raw)
            elif isinstance(default, bool | str):
                values[f.name] = raw
            elif isinstance(default, int):
                values[f.name] = int(raw)
            else:
                values[f.name] = float(raw)
        env = cls(**values)  # type: ignore[arg-type]
        if env.max_inflight < 1:
            raise ValueError(f"{PREFIX}MAX_INFLIGHT must be >= 1, not {env.max_inflight}")
        return env

    @property
    def open_model(self) -> bool:
        """True when users are Poisson arrival processes rather than a closed loop."""
        return self.open_rps > 0
