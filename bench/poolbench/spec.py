"""The sweep spec: SweepSpec, checked across its tables when it is made, and its runs (Point).

`SweepSpec` is the one definition of a spec: `specfile` reads TOML into it and a Python caller
builds it directly; both pass the same checks (its tables in `spectables` and `objectives`,
the field checks in `checks`) and fail with the same one-line error naming the field.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Any, Self

from pydantic import Field, PlainValidator, ValidationInfo, model_validator

from poolbench.checks import (
    MAX_POINTS,
    MAX_RATE,
    FieldError,
    SpecModel,
    any_text,
    integer,
    non_empty_text,
    number,
    one_of,
    text,
)
from poolbench.defaults import (
    DEFAULT_APP_WORKERS,
    DEFAULT_CAPACITY_USERS_PER_CONNECTION,
    DEFAULT_OPEN_MODEL_MAX_INFLIGHT,
    DEFAULT_OPEN_MODEL_RPS,
    DEFAULT_SHAPE,
)
from poolbench.locustfiles import (
    defines_user,
    known_scenarios,
    open_model_problem,
    poolbench_users_only,
    scenario_path,
)
from poolbench.objectives import DIRECT, PGBOUNCER, Fleet, Slo
from poolbench.shipped import OWN_LOCUSTFILE
from poolbench.spectables import (
    DEFAULT_POOLER,
    TARGET_PLACEHOLDERS,
    WORKLOAD_AXES,
    Grid,
    Target,
    Timing,
    Workload,
)

__all__ = ["Grid", "Point", "SweepSpec", "Target", "Timing", "Workload"]

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
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_ENV_NAME = re.compile(r"^[A-Z_][A-Z0-9_]*$")


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

    @property
    def sqlalchemy_connections(self) -> int:
        """The most connections one process's SQLAlchemy pool opens: pool_size + max_overflow."""
        return self.pool_size + self.max_overflow

    @property
    def process_connections(self) -> int:
        """Every connection one app process may open: both pools."""
        return self.sqlalchemy_connections + self.pg_max_size

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


def _name(value: object) -> str:
    name = non_empty_text(value)
    if not _NAME.match(name):
        raise ValueError("must be letters, digits, '.', '_' or '-' (it names a directory)")
    return name


def _app_env(value: object) -> dict[str, str]:
    """Extra settings of the app: TOML strings, numbers and booleans, as env var strings."""
    if not isinstance(value, Mapping):
        raise ValueError("must be a table")
    env: dict[str, str] = {}
    for key, item in value.items():
        if not isinstance(key, str) or not _ENV_NAME.match(key):
            raise FieldError((str(key),), "must be an UPPER_CASE environment variable name")
        if isinstance(item, bool):
            env[key] = "true" if item else "false"
        elif isinstance(item, str | int | float):
            env[key] = str(item)
        else:
            raise FieldError((key,), "must be a string, number or boolean")
    return env


class SweepSpec(SpecModel):
    """A whole sweep, resolved: every default filled in and every override applied.

    Validation context (`specfile`): `base_dir`, what a relative locustfile is relative to (else
    the working directory), and `check_files=False` for a stored spec, whose files need not
    exist here.
    """

    name: Annotated[str, PlainValidator(_name)]
    # A scenarios/ file's name; for a locustfile of the user's own, the file's stem.
    scenario: Annotated[str, text()] = ""
    # A locustfile of the user's own (absolute path); None: scenarios/<scenario>.py.
    locustfile: Annotated[str | None, text(optional=True)] = None
    # Not given: implied by the load model (open model: slo, closed loop: capacity).
    kind: Annotated[str, one_of(KINDS)] = CAPACITY
    search: Annotated[str, one_of(SEARCHES)] = GRID
    shape: Annotated[str, one_of(SHAPES)] = DEFAULT_SHAPE
    open_model_rps: Annotated[float, number(0, MAX_RATE)] = DEFAULT_OPEN_MODEL_RPS
    capacity_users: Annotated[int | None, integer(1, optional=True)] = None
    open_model_max_inflight: Annotated[int, integer(1)] = DEFAULT_OPEN_MODEL_MAX_INFLIGHT
    description: Annotated[str, PlainValidator(any_text)] = ""
    grid: Grid = Field(default_factory=Grid)
    workload: Workload = Field(default_factory=Workload)
    timing: Timing = Field(default_factory=Timing)
    slo: Slo = Field(default_factory=Slo)
    fleet: Fleet = Field(default_factory=Fleet)
    target: Target | None = None
    app_env: Annotated[Mapping[str, str], PlainValidator(_app_env)] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _resolve(cls, data: Any, info: ValidationInfo) -> Any:
        """A locustfile's absolute path and scenario name, and the kind the load model implies."""
        if not isinstance(data, Mapping):
            return data
        data = dict(data)
        if data.get("locustfile") is not None:
            if "scenario" in data:
                raise FieldError("locustfile", "give scenario or locustfile, not both")
            try:
                given = Path(non_empty_text(data["locustfile"])).expanduser()
            except ValueError as exc:
                raise FieldError("locustfile", str(exc)) from None
            path = (Path((info.context or {}).get("base_dir", ".")) / given).resolve()
            data["locustfile"], data["scenario"] = str(path), path.stem
        elif "scenario" not in data:
            raise FieldError(
                "scenario",
                "missing (a file in scenarios/, e.g. single_query; or locustfile = your own file)",
            )
        if data.get("kind") is None:
            rps = data.get("open_model_rps")
            data["kind"] = SLO if isinstance(rps, int | float) and rps > 0 else CAPACITY
        return data

    @model_validator(mode="after")
    def _check(self, info: ValidationInfo) -> Self:
        """The checks across fields, in the order a reader of the spec would fix them."""
        check_files = (info.context or {}).get("check_files", True)
        self._check_load(check_files=check_files)
        self._check_kind()
        if check_files:  # manifests before to_dict dropped swept axes gave them twice
            given = self.workload.model_fields_set
            for axis in WORKLOAD_AXES:
                if getattr(self.grid, axis) and axis in given:
                    raise FieldError(("grid", axis), "also set in [workload]: give it in one place")
        if sum(1 for _ in itertools.islice(self._runs(), MAX_POINTS + 1)) > MAX_POINTS:
            runs = f"more than {MAX_POINTS:,} runs"
            raise FieldError("grid", f"{runs} (grid x repetitions); at most {MAX_POINTS:,}")
        if self.target is not None:
            if self.grid.app_workers != (1,) or self.grid.pooler != (DIRECT,):
                raise FieldError(
                    "target",
                    "grid.app_workers and grid.pooler shape the sample app the sweep starts; "
                    "with a [target] your service decides its workers and pooler",
                )
            # Every placeholder is known at load time, not mid-sweep.
            self.target.expand(self.points()[0], **dict.fromkeys(TARGET_PLACEHOLDERS, "0"))
        return self

    def _check_load(self, *, check_files: bool) -> None:
        """The locustfile or scenario exists and defines users that fit the load model."""
        if self.locustfile is None:
            if not _NAME.match(self.scenario) or (
                check_files and not defines_user(scenario_path(self.scenario))
            ):
                raise FieldError(
                    "scenario",
                    f"scenarios/{self.scenario}.py is not a scenario: no such file, or it "
                    f"defines no Locust user class (known: {', '.join(known_scenarios())})",
                )
            return
        if not check_files:
            return
        path = Path(self.locustfile)
        if not defines_user(path):
            raise FieldError(
                "locustfile", f"{path}: no such file, or it defines no Locust user class"
            )
        thinks = self.grid.think_time_s or (self.workload.think_time_s,)
        if any(t > 0 for t in thinks) and not poolbench_users_only(path):
            raise FieldError(
                "think_time_s",
                f"{path}'s users pace themselves with their own wait_time; think_time_s paces "
                "only users derived from poolbench.load's PoolbenchUser (drop it, or set it "
                "to 0)",
            )
        if self.open_model_rps > 0 and (reason := open_model_problem(path)) is not None:
            raise FieldError(
                "open_model_rps",
                f"the open model cannot run {path}: {reason} (a closed loop runs it: "
                "kind = capacity)",
            )

    def _check_kind(self) -> None:
        if self.kind in (SLO, "both") and self.open_model_rps <= 0:
            raise FieldError(
                "kind",
                f"{self.kind} needs open_model_rps > 0 (the per-user arrival rate of the target)",
            )
        if self.kind == CAPACITY and self.open_model_rps > 0:
            raise FieldError(
                "kind",
                "capacity is a closed loop: drop open_model_rps, or use kind = both for an SLO "
                "sweep at that rate as well",
            )

    @property
    def locust_files(self) -> tuple[str, ...]:
        """What Locust's -f runs: the scenario, or what runs the user's file (`wrapping`)."""
        if self.locustfile is not None:
            return (str(OWN_LOCUSTFILE),)
        return (str(scenario_path(self.scenario)),)

    def to_dict(self) -> dict[str, Any]:
        """Return the spec in its TOML layout (what manifest.json stores)."""
        raw = self.model_dump()
        if self.locustfile is None:
            del raw["locustfile"]
        else:
            del raw["scenario"]  # the file names it
        raw["grid"] = {k: list(v) for k, v in raw["grid"].items() if v}
        for axis in WORKLOAD_AXES:
            if axis in raw["grid"]:
                del raw["workload"][axis]  # swept: the grid gives it, and only there
        raw["app_env"] = dict(self.app_env)
        if self.target is None:
            del raw["target"]
        return raw

    def points(self) -> list[Point]:
        """Expand the grid (cartesian product) times repetitions, in run order.

        Repetitions are the outer loop so slow drift of the machine spreads over all points;
        points sharing a Postgres setting run together so one server serves them.
        """
        return sorted(self._runs(), key=lambda p: p.pg_max_connections)

    def _runs(self) -> Iterator[Point]:
        """Every run, repetitions outermost; lazily, so counting them stops at MAX_POINTS."""
        axes = _axes(self)
        varying = {name for name, values in axes.items() if len(values) > 1}
        if len(self.grid.pgbouncer_pool_size) > 1 and PGBOUNCER in self.grid.pooler:
            varying.add("pgbouncer_pool_size")
        experiments = (SLO, CAPACITY) if self.kind == "both" else (self.kind,)
        for rep in range(1, self.timing.repetitions + 1):
            for experiment in experiments:
                for combo in itertools.product(*axes.values()):
                    for values in self._pooled(dict(zip(axes, combo, strict=True))):
                        yield self._point(values, rep, varying, experiment)

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
