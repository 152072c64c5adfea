"""The sweep spec as frozen value objects: grid, workload, timing, SLO, fleet, target, points."""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from poolbench.locustfiles import scenario_path
from poolbench.objectives import (
    DEFAULT_APP_WORKERS,
    DIRECT,
    PGBOUNCER,
    Fleet,
    Slo,
)
from poolbench.sample_app.config import settings_env
from poolbench.scenario_env import DEFAULT_MAX_INFLIGHT
from poolbench.shipped import WINDOW_PLUGIN

SHAPES = ("constant", "step", "spike")
# What a sweep measures. slo: the open model at the target rate, for the smallest config meeting
# the SLO; capacity: a closed loop with more users than connections, every point saturated, for
# the throughput curve (USL, Little's-law ceiling); both: the two, from one spec.
KINDS = ("slo", "capacity", "both")
SLO, CAPACITY = "slo", "capacity"
# How a sweep picks its runs: every grid point, or an adaptive search of the SLO boundary in pool
# size (poolbench.sweep.search).
GRID, ADAPTIVE = "grid", "adaptive"
SEARCHES = (GRID, ADAPTIVE)
# Capacity points need users well above the pool: this many times the largest pool by default.
DEFAULT_CAPACITY_USERS_PER_CONNECTION = 4

# Every default of the spec, in one place.
DEFAULT_SHAPE = "constant"
DEFAULT_OPEN_MODEL_RPS = 0.0
DEFAULT_OPEN_MODEL_MAX_INFLIGHT = DEFAULT_MAX_INFLIGHT  # per Locust process
DEFAULT_POOL_SIZE = 5
DEFAULT_MAX_OVERFLOW = 10
DEFAULT_HTTP_CONCURRENCY_LIMIT = 20
DEFAULT_USERS = 32
DEFAULT_PG_MAX_SIZE = 10
DEFAULT_PG_MAX_CONNECTIONS = 100
DEFAULT_QUERIES_PER_REQUEST = 1
DEFAULT_SIM_LATENCY_MS = 0.0
DEFAULT_THINK_TIME_S = 0.0
DEFAULT_FANOUT_CALLS = 5
DEFAULT_DOWNSTREAM_LATENCY_MS = 20.0
DEFAULT_SEED_USERS = 1000
DEFAULT_REPETITIONS = 1
DEFAULT_WARMUP_S = 3.0
DEFAULT_DURATION_S = 10.0
DEFAULT_SPAWN_RATE = 100.0
DEFAULT_HEALTH_PATH = "/health"
POOLERS = (DIRECT, PGBOUNCER)
DEFAULT_POOLER = DIRECT
DEFAULT_PGBOUNCER_POOL_SIZE = 20  # PgBouncer's own default_pool_size


@dataclass(frozen=True, kw_only=True)
class Grid:
    """Swept axes: the cartesian product of these lists is the set of points."""

    pool_size: tuple[int, ...] = (DEFAULT_POOL_SIZE,)
    max_overflow: tuple[int, ...] = (DEFAULT_MAX_OVERFLOW,)
    http_concurrency_limit: tuple[int, ...] = (DEFAULT_HTTP_CONCURRENCY_LIMIT,)
    users: tuple[int, ...] = (DEFAULT_USERS,)
    pg_max_size: tuple[int, ...] = (DEFAULT_PG_MAX_SIZE,)
    pg_max_connections: tuple[int, ...] = (DEFAULT_PG_MAX_CONNECTIONS,)
    queries_per_request: tuple[int, ...] = (DEFAULT_QUERIES_PER_REQUEST,)
    # Production shape: uvicorn worker processes, each with its own pools, and the pooler.
    app_workers: tuple[int, ...] = (DEFAULT_APP_WORKERS,)
    pooler: tuple[str, ...] = (DEFAULT_POOLER,)
    # PgBouncer's default_pool_size: an axis of pgbouncer points only (direct points run once).
    pgbouncer_pool_size: tuple[int, ...] = (DEFAULT_PGBOUNCER_POOL_SIZE,)
    # Extra axes: empty means "the [workload] value".
    sim_latency_ms: tuple[float, ...] = ()
    think_time_s: tuple[float, ...] = ()
    fanout_calls: tuple[int, ...] = ()


@dataclass(frozen=True, kw_only=True)
class Workload:
    """What each request does, when not swept."""

    sim_latency_ms: float = DEFAULT_SIM_LATENCY_MS
    think_time_s: float = DEFAULT_THINK_TIME_S
    fanout_calls: int = DEFAULT_FANOUT_CALLS
    downstream_latency_ms: float = DEFAULT_DOWNSTREAM_LATENCY_MS
    seed_users: int = DEFAULT_SEED_USERS


@dataclass(frozen=True, kw_only=True)
class Timing:
    """How long and how often each point runs."""

    repetitions: int = DEFAULT_REPETITIONS
    warmup_s: float = DEFAULT_WARMUP_S
    duration_s: float = DEFAULT_DURATION_S
    spawn_rate: float = DEFAULT_SPAWN_RATE


@dataclass(frozen=True, kw_only=True)
class Target:
    """Bring your own app: restart it per point with `restart_cmd`, then load `url`."""

    url: str
    restart_cmd: str
    health_path: str = DEFAULT_HEALTH_PATH
    # Where the target's CPU and memory are measured from (neither: not measured): a file the
    # restart writes the service's pid to, and/or the service's cgroup (v2) directory.
    pid_file: str | None = None
    cgroup: str | None = None


@dataclass(frozen=True, kw_only=True)
class Point:
    """One run: a grid point and a repetition number."""

    run_id: str
    scenario: str
    shape: str
    repetition: int
    pool_size: int
    max_overflow: int
    http_concurrency_limit: int
    users: int
    pg_max_size: int
    pg_max_connections: int
    queries_per_request: int
    sim_latency_ms: float
    think_time_s: float
    fanout_calls: int
    app_workers: int = DEFAULT_APP_WORKERS
    pooler: str = DEFAULT_POOLER
    pgbouncer_pool_size: int | None = None  # None: direct (no PgBouncer)
    open_model_rps: float
    open_model_max_inflight: int
    experiment: str  # slo or capacity
    spawn_rate: float
    warmup_s: float
    duration_s: float

    def app_env(self) -> dict[str, str]:
        """Return the sample app's settings for this point as env vars (of every worker)."""
        env = settings_env(
            db_pool_size=self.pool_size,
            db_max_overflow=self.max_overflow,
            http_concurrency_limit=self.http_concurrency_limit,
            pg_pool_max_size=self.pg_max_size,
            sim_query_latency_ms=float(self.sim_latency_ms),
        )
        if self.pooler == PGBOUNCER:
            # Transaction pooling: a server connection's prepared statements are not this
            # client's (PgBouncer 1.18 has no max_prepared_statements).
            env |= settings_env(db_prepared_statements=False)
        return env

    @property
    def process_connections(self) -> int:
        """Every connection one app process may open: both pools."""
        return self.pool_size + self.max_overflow + self.pg_max_size

    @property
    def app_connections(self) -> int:
        """Every connection all the app's worker processes may open (to Postgres or PgBouncer)."""
        return self.app_workers * self.process_connections

    @property
    def offered_rps(self) -> float:
        """The open model's offered rate (users x per-user rate); 0 for a closed loop."""
        return self.users * self.open_model_rps

    def as_dict(self) -> dict[str, Any]:
        """Return the point as plain JSON-able values (offered_rps, app_max_connections too)."""
        return asdict(self) | {
            "offered_rps": self.offered_rps,
            "app_max_connections": self.app_connections,
        }


@dataclass(frozen=True, kw_only=True)
class SweepSpec:
    """A whole sweep, resolved: every default filled in and every override applied."""

    name: str
    scenario: str
    # A locustfile of the user's own (absolute path); None: scenarios/<scenario>.py.
    locustfile: str | None = None
    kind: str = CAPACITY
    search: str = GRID
    shape: str = DEFAULT_SHAPE
    open_model_rps: float = DEFAULT_OPEN_MODEL_RPS
    capacity_users: int | None = None
    open_model_max_inflight: int = DEFAULT_OPEN_MODEL_MAX_INFLIGHT
    description: str = ""
    grid: Grid = field(default_factory=Grid)
    workload: Workload = field(default_factory=Workload)
    timing: Timing = field(default_factory=Timing)
    slo: Slo = field(default_factory=Slo)
    fleet: Fleet = field(default_factory=Fleet)
    target: Target | None = None
    app_env: Mapping[str, str] = field(default_factory=dict)

    @property
    def locust_files(self) -> tuple[str, ...]:
        """What Locust's -f runs: the scenario, or the user's file and the window's listeners."""
        if self.locustfile is not None:
            return (self.locustfile, str(WINDOW_PLUGIN))
        return (str(scenario_path(self.scenario)),)

    def to_dict(self) -> dict[str, Any]:
        """Return the spec in its TOML layout (what manifest.json stores)."""
        raw = asdict(self)
        if self.locustfile is None:
            del raw["locustfile"]
        else:
            del raw["scenario"]  # the file names it
        raw["grid"] = {k: list(v) for k, v in raw["grid"].items() if v}
        raw["app_env"] = dict(self.app_env)
        if self.target is None:
            del raw["target"]
        return raw

    def points(self) -> list[Point]:
        """Expand the grid (cartesian product) times repetitions, in run order.

        Repetitions are the outer loop so slow drift of the machine spreads over all points;
        points sharing a Postgres setting run together so one server serves them.
        """
        axes = _axes(self)
        varying = {name for name, values in axes.items() if len(values) > 1}
        if len(self.grid.pgbouncer_pool_size) > 1 and PGBOUNCER in self.grid.pooler:
            varying.add("pgbouncer_pool_size")
        experiments = (SLO, CAPACITY) if self.kind == "both" else (self.kind,)
        points = [
            self._point(values, rep, varying, experiment)
            for rep in range(1, self.timing.repetitions + 1)
            for experiment in experiments
            for combo in itertools.product(*axes.values())
            for values in self._pooled(dict(zip(axes, combo, strict=True)))
        ]
        return sorted(points, key=lambda p: p.pg_max_connections)

    def _pooled(self, values: dict[str, Any]) -> list[dict[str, Any]]:
        """A combo once per PgBouncer pool size when it goes through PgBouncer, else once."""
        if values["pooler"] != PGBOUNCER:
            return [values | {"pgbouncer_pool_size": None}]
        return [values | {"pgbouncer_pool_size": s} for s in self.grid.pgbouncer_pool_size]

    @property
    def capacity_point_users(self) -> int:
        """Closed-loop users of capacity points: capacity_users, else 4 x the largest pool."""
        if self.capacity_users is not None:
            return self.capacity_users
        largest = max(self.grid.pool_size) + max(self.grid.max_overflow)
        largest *= max(self.grid.app_workers)  # every worker has its own pool
        return max(max(self.grid.users), DEFAULT_CAPACITY_USERS_PER_CONNECTION * largest)

    def _point(self, values: dict[str, Any], rep: int, varying: set[str], experiment: str) -> Point:
        open_model_rps = self.open_model_rps
        suffix = ""
        if experiment == CAPACITY:
            open_model_rps = 0.0
            if self.kind == "both" or self.capacity_users is not None:
                values = values | {"users": self.capacity_point_users}
            suffix = "-cap" if self.kind == "both" else ""
        run_id = (
            f"p{values['pool_size']}-o{values['max_overflow']}"
            f"-s{values['http_concurrency_limit']}-u{values['users']}"
            f"-q{values['queries_per_request']}"
        )
        for axis, tag in _EXTRA_RUN_ID_TAGS.items():
            if axis in varying:
                run_id += f"-{tag}{_fmt(values[axis])}"
        run_id += _pooler_tag(values, varying)
        return Point(
            run_id=f"{run_id}{suffix}-r{rep}",
            scenario=self.scenario,
            shape=self.shape,
            repetition=rep,
            experiment=experiment,
            open_model_rps=open_model_rps,
            open_model_max_inflight=self.open_model_max_inflight,
            spawn_rate=self.timing.spawn_rate,
            warmup_s=self.timing.warmup_s,
            duration_s=self.timing.duration_s,
            **values,
        )


# Axes outside DESIGN.md's fixed run_id prefix get a tag only when they actually vary.
_EXTRA_RUN_ID_TAGS = {
    "pg_max_size": "a",
    "pg_max_connections": "m",
    "sim_latency_ms": "l",
    "think_time_s": "t",
    "fanout_calls": "f",
    "app_workers": "w",
}


def _pooler_tag(values: Mapping[str, Any], varying: set[str]) -> str:
    """`-pgb{pgbouncer_pool_size}` on PgBouncer points and `-direct` on the others, when needed.

    Only when the pooler or PgBouncer's pool size varies, like every extra axis.
    """
    if "pooler" not in varying and "pgbouncer_pool_size" not in varying:
        return ""
    if values["pooler"] == PGBOUNCER:
        return f"-pgb{values['pgbouncer_pool_size']}"
    return "-direct"


def _axes(spec: SweepSpec) -> dict[str, tuple[Any, ...]]:
    grid = spec.grid
    return {
        "pool_size": grid.pool_size,
        "max_overflow": grid.max_overflow,
        "http_concurrency_limit": grid.http_concurrency_limit,
        "users": grid.users,
        "pg_max_size": grid.pg_max_size,
        "pg_max_connections": grid.pg_max_connections,
        "queries_per_request": grid.queries_per_request,
        "sim_latency_ms": grid.sim_latency_ms or (spec.workload.sim_latency_ms,),
        "think_time_s": grid.think_time_s or (spec.workload.think_time_s,),
        "fanout_calls": grid.fanout_calls or (spec.workload.fanout_calls,),
        "app_workers": grid.app_workers,
        "pooler": grid.pooler,
    }


def _fmt(value: float) -> str:
    """Format a number without a trailing `.0` (run ids and env vars)."""
    return f"{value:g}" if isinstance(value, float) else str(value)
