"""The sweep spec as frozen value objects: grid, workload, timing, SLO, fleet, target, points."""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from bench.errors import UsageError
from bench.locustfiles import WINDOW_PLUGIN, scenario_path
from bench.scenario_env import DEFAULT_MAX_INFLIGHT
from sample_app.config import settings_env

ROOT = Path(__file__).resolve().parent.parent
SHAPES = ("constant", "step", "spike")
# What a sweep measures. slo: the open model at the target rate, for the smallest config meeting
# the SLO; capacity: a closed loop with more users than connections, every point saturated, for
# the throughput curve (USL, Little's-law ceiling); both: the two, from one spec.
KINDS = ("slo", "capacity", "both")
SLO, CAPACITY = "slo", "capacity"
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
DEFAULT_SLO_P95_MS = 250.0
DEFAULT_SLO_MAX_ERROR_RATE = 0.01
DEFAULT_INSTANCES = 1
DEFAULT_WORKERS_PER_INSTANCE = 1
DEFAULT_FLEET_MAX_CONNECTIONS = 100
DEFAULT_RESERVED_CONNECTIONS = 3
DEFAULT_HEALTH_PATH = "/health"
DEFAULT_APP_WORKERS = 1
# How the app reaches Postgres: its own pools straight to the server, or through a PgBouncer in
# transaction mode whose server pool (default_pool_size) is what Postgres sees.
DIRECT, PGBOUNCER = "direct", "pgbouncer"
POOLERS = (DIRECT, PGBOUNCER)
DEFAULT_POOLER = DIRECT
DEFAULT_PGBOUNCER_POOL_SIZE = 20  # PgBouncer's own default_pool_size
DEFAULT_PGBOUNCER_INSTANCES = 1


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
class EndpointSlo:
    """One endpoint's objective, `[slo.endpoints."POST /orders"]` (None: that part is not set)."""

    p95_ms: float | None = None
    max_error_rate: float | None = None

    def failure(self, figures: Mapping[str, Any]) -> str | None:
        """Why one run's figures of the endpoint (an endpoints.csv row) miss it, or None.

        An endpoint that completed no request in the window fails, as an empty window does.
        """
        if not _number(figures.get("requests")) > 0:
            return "no request completed"
        return Slo(p95_ms=self.p95_ms, max_error_rate=self.max_error_rate).failure(figures)

    def describe(self) -> str:
        """Human summary, e.g. `p95 <= 300 ms`."""
        return Slo(p95_ms=self.p95_ms, max_error_rate=self.max_error_rate).describe()


@dataclass(frozen=True, kw_only=True)
class Slo:
    """The service level a recommended configuration must meet (None: that part is not set).

    `p95_ms` and `max_error_rate` hold for all requests together; `endpoints` adds objectives
    for single endpoints (Locust's request_type and name, e.g. `POST /orders`), because a mix
    can pass on the aggregate while one of its endpoints misses.
    """

    p95_ms: float | None = DEFAULT_SLO_P95_MS
    max_error_rate: float | None = DEFAULT_SLO_MAX_ERROR_RATE
    endpoints: Mapping[str, EndpointSlo] = field(default_factory=dict)

    @classmethod
    def unset(cls) -> Slo:
        """No objective at all (plain Locust output has no spec)."""
        return cls(p95_ms=None, max_error_rate=None)

    @property
    def is_set(self) -> bool:
        """True when there is anything to check."""
        return self.p95_ms is not None or self.max_error_rate is not None or bool(self.endpoints)

    def failure(self, row: Mapping[Any, Any]) -> str | None:
        """Why a run or config (a runs.csv or aggregated row) misses the objective, or None.

        A window in which no request completed, or whose p95 or error rate is unknown, fails:
        nothing measured is not a pass.
        """
        if _number(row.get("requests")) == 0 or _number(row.get("empty_windows")) > 0:
            return "no request completed in the measured window"
        p95 = _number(row.get("p95_ms"))
        errors = _number(row.get("error_rate"))
        if math.isnan(p95):
            return "p95 unknown"
        if self.p95_ms is not None and not p95 <= self.p95_ms:
            return f"p95 {p95:.1f} ms > {self.p95_ms:g} ms"
        if self.max_error_rate is not None:
            if math.isnan(errors):
                return "error rate unknown"
            if not errors <= self.max_error_rate:
                return f"errors {errors:.2%} > {self.max_error_rate:.2%}"
        return None

    def passes(self, row: Mapping[Any, Any]) -> bool:
        """True when the row meets the objective (see `failure`)."""
        return self.failure(row) is None

    def endpoint_failure(self, endpoints: Mapping[str, Mapping[str, Any]]) -> str | None:
        """Why one run misses an endpoint's objective (the first, in the spec's order), or None.

        `endpoints` is the run's figures by endpoint name (`bench.analysis.load.endpoint_figures`:
        requests, error_rate, p95_ms, ...). An endpoint with an objective but no completed
        request in the run fails: e.g. `POST /orders: no request completed`.
        """
        for name, objective in self.endpoints.items():
            reason = objective.failure(endpoints.get(name) or {})
            if reason is not None:
                return f"{name}: {reason}"
        return None

    def describe(self) -> str:
        """Human summary, e.g. `p95 <= 250 ms, errors <= 1.00%; POST /orders: p95 <= 300 ms`."""
        parts = []
        if self.p95_ms is not None:
            parts.append(f"p95 <= {self.p95_ms:g} ms")
        if self.max_error_rate is not None:
            parts.append(f"errors <= {self.max_error_rate:.2%}")
        described = [", ".join(parts)] if parts else []
        described += [f"{name}: {slo.describe()}" for name, slo in self.endpoints.items()]
        return "; ".join(described) or "no SLO set"


@dataclass(frozen=True, kw_only=True)
class Demand:
    """What one config asks of the database's connection budget.

    Direct, every app process opens its own pools: `pools` per process (both pools, as
    configured), or more when Postgres saw more in the run (`measured_peak`, the run's
    pg_peak_connections, over its `app_workers` processes). Through PgBouncer the server side is
    PgBouncer's pool instead (`pgbouncer_pool_size` per database/user pair, or what Postgres saw),
    however many app processes connect to it.
    """

    pools: float
    app_workers: int = DEFAULT_APP_WORKERS
    measured_peak: float | None = None
    pgbouncer_pool_size: float | None = None

    @classmethod
    def of(cls, row: Mapping[Any, Any]) -> Demand:
        """The demand of a runs.csv row or aggregated config (older sweeps: direct, 1 worker)."""
        direct = _number(row.get("pg_max_size"))
        overflow = _number(row.get("max_overflow"))
        pools = _number(row.get("pool_size")) + _or_zero(overflow) + _or_zero(direct)
        workers = _number(row.get("app_workers"))
        peak = _number(row.get("pg_peak_connections"))
        pgbouncer = _number(row.get("pgbouncer_pool_size"))
        return cls(
            pools=pools,
            app_workers=int(workers) if workers >= 1 else DEFAULT_APP_WORKERS,
            measured_peak=None if math.isnan(peak) else peak,
            pgbouncer_pool_size=pgbouncer
            if row.get("pooler") == PGBOUNCER and not math.isnan(pgbouncer)
            else None,
        )

    @property
    def per_process(self) -> float:
        """Connections one app process counts for: its pools, or what the run measured."""
        if self.measured_peak is None:
            return self.pools
        return max(self.pools, self.measured_peak / self.app_workers)

    @property
    def per_pgbouncer(self) -> float:
        """Server connections one PgBouncer counts for: its pool, or what the run measured."""
        assert self.pgbouncer_pool_size is not None
        return max(self.pgbouncer_pool_size, self.measured_peak or 0.0)


@dataclass(frozen=True, kw_only=True)
class Fleet:
    """The production fleet sharing one database's connection budget.

    Every worker process of every instance opens its own pools, so with the apps connecting
    directly the budget is `instances x workers x (pool_size + max_overflow + pg_max_size) <=
    max_connections - reserved`; behind PgBouncer it is `pgbouncer_instances x
    default_pool_size` instead (see `Demand`).
    """

    instances: int = DEFAULT_INSTANCES
    workers_per_instance: int = DEFAULT_WORKERS_PER_INSTANCE
    max_connections: int = DEFAULT_FLEET_MAX_CONNECTIONS
    reserved_connections: int = DEFAULT_RESERVED_CONNECTIONS
    pgbouncer_instances: int = DEFAULT_PGBOUNCER_INSTANCES

    def with_overrides(self, **overrides: int | None) -> Fleet:
        """Return the fleet with the given (non-None) fields replaced and checked."""
        fleet = replace(self, **{k: v for k, v in overrides.items() if v is not None})
        if fleet.instances < 1 or fleet.workers_per_instance < 1 or fleet.pgbouncer_instances < 1:
            raise UsageError("fleet: instances, workers and PgBouncer instances must be >= 1")
        if fleet.budget < 1:
            raise UsageError(
                f"fleet: max_connections {fleet.max_connections} minus reserved "
                f"{fleet.reserved_connections} leaves no connections"
            )
        return fleet

    @property
    def processes(self) -> int:
        """Processes that each hold a pool."""
        return self.instances * self.workers_per_instance

    @property
    def budget(self) -> int:
        """Connections the application may open in total."""
        return self.max_connections - self.reserved_connections

    @property
    def per_process(self) -> int:
        """Largest pool_size + max_overflow one process may have."""
        return self.budget // self.processes

    def total(self, demand: float | Demand) -> float:
        """Server connections the whole fleet opens (a number: connections per app process)."""
        demand = demand if isinstance(demand, Demand) else Demand(pools=demand)
        if demand.pgbouncer_pool_size is not None:
            return self.pgbouncer_instances * demand.per_pgbouncer
        return self.processes * demand.per_process

    def fits(self, demand: float | Demand) -> bool:
        """The fleet's server connections <= max_connections - reserved."""
        return self.total(demand) <= self.budget

    def describe(self, demand: float | Demand) -> str:
        """The budget arithmetic for one config."""
        demand = demand if isinstance(demand, Demand) else Demand(pools=demand)
        verb = "<=" if self.fits(demand) else ">"
        budget = (
            f"{self.total(demand):g} {verb} {self.max_connections} - "
            f"{self.reserved_connections} reserved = {self.budget}"
        )
        measured = ""
        if demand.measured_peak is not None:
            measured = f" (Postgres saw {demand.measured_peak:g} in the run)"
        if demand.pgbouncer_pool_size is not None:
            return (
                f"{self.pgbouncer_instances} PgBouncer x {demand.per_pgbouncer:g} server "
                f"connections{measured} = {budget}"
            )
        if demand.measured_peak is not None and demand.app_workers > 1:
            measured = f" (Postgres saw {demand.measured_peak:g} from {demand.app_workers} workers)"
        return (
            f"{self.instances} instances x {self.workers_per_instance} workers x "
            f"{demand.per_process:g} connections{measured} = {budget}"
        )


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


def _number(value: Any) -> float:
    """A figure as a float; missing or unparseable is NaN."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _or_zero(value: float) -> float:
    return 0.0 if math.isnan(value) else value


def _fmt(value: float) -> str:
    """Format a number without a trailing `.0` (run ids and env vars)."""
    return f"{value:g}" if isinstance(value, float) else str(value)
