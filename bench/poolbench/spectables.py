"""The sweep spec's own tables, [grid], [workload], [timing] and [target], each checking itself."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import PlainValidator, model_validator

from poolbench.checks import (
    MAX_MS,
    MAX_RATE,
    MAX_REPETITIONS,
    MAX_SECONDS,
    FieldError,
    SpecModel,
    as_list,
    integer,
    integers,
    is_int,
    non_empty_text,
    number,
    numbers,
    text,
)
from poolbench.defaults import (
    DEFAULT_APP_WORKERS,
    DEFAULT_DOWNSTREAM_LATENCY_MS,
    DEFAULT_DURATION_S,
    DEFAULT_FANOUT_CALLS,
    DEFAULT_HEALTH_PATH,
    DEFAULT_HTTP_CONCURRENCY_LIMIT,
    DEFAULT_MAX_OVERFLOW,
    DEFAULT_PG_MAX_CONNECTIONS,
    DEFAULT_PG_MAX_SIZE,
    DEFAULT_PGBOUNCER_POOL_SIZE,
    DEFAULT_POOL_SIZE,
    DEFAULT_QUERIES_PER_REQUEST,
    DEFAULT_REPETITIONS,
    DEFAULT_SEED_USERS,
    DEFAULT_SIM_LATENCY_MS,
    DEFAULT_SPAWN_RATE,
    DEFAULT_THINK_TIME_S,
    DEFAULT_USERS,
    DEFAULT_WARMUP_S,
)
from poolbench.objectives import DIRECT, PGBOUNCER

if TYPE_CHECKING:
    from poolbench.spec import Point

POOLERS = (DIRECT, PGBOUNCER)
DEFAULT_POOLER = DIRECT
# Worker processes of the app: on a 2-core host shared with Postgres and Locust more than a few
# only time-share the same cores (and each holds its own pools), so the bound stays small.
MAX_APP_WORKERS = 4
# Grid axes that a [workload] value stands in for when they are not swept.
WORKLOAD_AXES = ("sim_latency_ms", "think_time_s", "fanout_calls")

Counts = Annotated[tuple[int, ...], integers(1)]


def _app_workers(value: object) -> tuple[int, ...]:
    values = as_list(value)
    if not all(is_int(v, 1, MAX_APP_WORKERS) for v in values):
        raise ValueError(
            f"must be a list of integers from 1 to {MAX_APP_WORKERS}: more worker processes "
            "than that only time-share this host's cores with Postgres and Locust, which "
            "measures the host rather than the pools"
        )
    return tuple(values)


def _poolers(value: object) -> tuple[str, ...]:
    values = as_list(value)
    if not all(isinstance(v, str) and v in POOLERS for v in values):
        raise ValueError(f"must be a list of {' and/or '.join(map(repr, POOLERS))}")
    if len(set(values)) != len(values):
        raise ValueError("names a pooler twice")
    return tuple(values)


class Grid(SpecModel):
    """Swept axes: the cartesian product of these lists is the set of points."""

    table = "grid"
    pool_size: Counts = (DEFAULT_POOL_SIZE,)
    max_overflow: Annotated[tuple[int, ...], integers(0)] = (DEFAULT_MAX_OVERFLOW,)
    http_concurrency_limit: Counts = (DEFAULT_HTTP_CONCURRENCY_LIMIT,)
    users: Counts = (DEFAULT_USERS,)
    pg_max_size: Counts = (DEFAULT_PG_MAX_SIZE,)
    pg_max_connections: Counts = (DEFAULT_PG_MAX_CONNECTIONS,)
    queries_per_request: Counts = (DEFAULT_QUERIES_PER_REQUEST,)
    # Production shape: uvicorn worker processes, each with its own pools, and the pooler.
    app_workers: Annotated[tuple[int, ...], PlainValidator(_app_workers)] = (DEFAULT_APP_WORKERS,)
    pooler: Annotated[tuple[str, ...], PlainValidator(_poolers)] = (DEFAULT_POOLER,)
    # PgBouncer's default_pool_size: an axis of pgbouncer points only (direct points run once).
    pgbouncer_pool_size: Counts = (DEFAULT_PGBOUNCER_POOL_SIZE,)
    # Extra axes (WORKLOAD_AXES): empty means "the [workload] value".
    sim_latency_ms: Annotated[tuple[float, ...], numbers(0, MAX_MS)] = ()
    think_time_s: Annotated[tuple[float, ...], numbers(0, MAX_SECONDS)] = ()
    fanout_calls: Counts = ()


class Workload(SpecModel):
    """What each request does, when not swept."""

    table = "workload"
    sim_latency_ms: Annotated[float, number(0, MAX_MS)] = DEFAULT_SIM_LATENCY_MS
    think_time_s: Annotated[float, number(0, MAX_SECONDS)] = DEFAULT_THINK_TIME_S
    fanout_calls: Annotated[int, integer(1)] = DEFAULT_FANOUT_CALLS
    downstream_latency_ms: Annotated[float, number(0, MAX_MS)] = DEFAULT_DOWNSTREAM_LATENCY_MS
    seed_users: Annotated[int, integer(1)] = DEFAULT_SEED_USERS


class Timing(SpecModel):
    """How long and how often each point runs."""

    table = "timing"
    repetitions: Annotated[int, integer(1, MAX_REPETITIONS)] = DEFAULT_REPETITIONS
    warmup_s: Annotated[float, number(0, MAX_SECONDS)] = DEFAULT_WARMUP_S
    duration_s: Annotated[float, number(0, MAX_SECONDS, strict=True)] = DEFAULT_DURATION_S
    spawn_rate: Annotated[float, number(0, MAX_RATE, strict=True)] = DEFAULT_SPAWN_RATE


def _url(value: object) -> str:
    url = non_empty_text(value).rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise ValueError("must start with http:// or https://")
    return url


def _health_path(value: object) -> str:
    if not non_empty_text(value).startswith("/"):
        raise ValueError("must start with /")
    return str(value)


def _absolute(value: object) -> str | None:
    if value is None:  # a manifest stores an unset path as null
        return None
    if not Path(non_empty_text(value)).is_absolute():
        raise ValueError("must be an absolute path")
    return str(value)


def _cgroup(value: object) -> str | None:
    path = _absolute(value)
    if path is not None and not path.startswith("/sys/fs/cgroup/"):
        raise ValueError("must be a cgroup directory under /sys/fs/cgroup/")
    return path


class Target(SpecModel):
    """Bring your own app: restart it per point with `restart_cmd`, then load `url`."""

    table = "target"
    url: Annotated[str, PlainValidator(_url)]
    restart_cmd: Annotated[str, text()]
    health_path: Annotated[str, PlainValidator(_health_path)] = DEFAULT_HEALTH_PATH
    # Where the target's CPU and memory are measured from (neither: not measured): a file the
    # restart writes the service's pid to, and/or the service's cgroup (v2) directory.
    pid_file: Annotated[str | None, PlainValidator(_absolute)] = None
    cgroup: Annotated[str | None, PlainValidator(_cgroup)] = None

    @model_validator(mode="before")
    @classmethod
    def _needs_url_and_restart_cmd(cls, data: Any) -> Any:
        for key in ("url", "restart_cmd"):
            if isinstance(data, Mapping) and key not in data:
                raise FieldError(key, "missing (a [target] needs url and restart_cmd)")
        return data

    def restart_command(self, point: Point) -> str:
        """The shell command that restarts the target for `point` (str.format of restart_cmd)."""
        try:
            return self.restart_cmd.format(**point.as_dict())
        except (KeyError, IndexError, ValueError, AttributeError) as exc:
            raise FieldError(
                "target.restart_cmd",
                f"bad placeholder {exc} (use point fields such as {{pool_size}}; "
                "double literal braces: ${VAR} becomes ${{VAR}})",
            ) from None
