"""The sweep spec's own tables, [grid], [workload], [timing] and [target], each checking itself."""

from __future__ import annotations

import re
import string
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Self

from pydantic import Field, PlainValidator, ValidationInfo, model_validator

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


def _url(value: object) -> str | None:
    if value is None:  # a manifest stores an unset url as null
        return None
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


# Placeholders a [target] command and env values get besides the point's fields.
TARGET_PLACEHOLDERS = ("port", "database_url", "dsn")
# Bound only by a managed `command`: the loopback port poolbench picked for the run.
PORT_PLACEHOLDER = "port"
DSN_PLACEHOLDERS = ("database_url", "dsn")  # from --dsn: SQLAlchemy's asyncpg form, libpq's
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _target_env(value: object) -> dict[str, str]:
    """[target.env]: environment names of the service's own, each a template string."""
    if not isinstance(value, Mapping):
        raise ValueError('must be a table of NAME = "template"')
    env: dict[str, str] = {}
    for key, item in value.items():
        if not isinstance(key, str) or not _ENV_NAME.match(key):
            raise FieldError((str(key),), "must be an environment variable name")
        if not isinstance(item, str | int | float) or isinstance(item, bool):
            raise FieldError((key,), "must be a string or number (placeholders: {pool_size}, ...)")
        env[key] = str(item)
    return env


class Target(SpecModel):
    """Bring your own service: poolbench starts it per run (`command`), or restarts it.

    `command`: a managed service, started for each run with the run's settings (in its
    placeholders and in `env`), stopped after the run like the sample app. `restart_cmd`: a
    service poolbench cannot start itself, restarted by the command, which must stop the
    previous instance and return; `stop_cmd`, if given, stops the last one when the sweep ends.
    Both run with `sh -c` in `cwd` (default: the spec file's directory).
    """

    table = "target"
    command: Annotated[str | None, text(optional=True)] = None
    restart_cmd: Annotated[str | None, text(optional=True)] = None
    stop_cmd: Annotated[str | None, text(optional=True)] = None
    url: Annotated[str | None, PlainValidator(_url)] = None
    cwd: Annotated[str | None, PlainValidator(_absolute)] = None
    env: Annotated[Mapping[str, str], PlainValidator(_target_env)] = Field(default_factory=dict)
    health_path: Annotated[str, PlainValidator(_health_path)] = DEFAULT_HEALTH_PATH
    # Where the target's CPU and memory are measured from, besides a managed command's own
    # process (neither: not measured): a file the restart writes the service's pid to, and/or
    # the service's cgroup (v2) directory.
    pid_file: Annotated[str | None, PlainValidator(_absolute)] = None
    cgroup: Annotated[str | None, PlainValidator(_cgroup)] = None

    @model_validator(mode="before")
    @classmethod
    def _resolve_cwd(cls, data: Any, info: ValidationInfo) -> Any:
        """A relative cwd (and none at all) is the spec file's directory, stored absolute."""
        if not isinstance(data, Mapping):
            return data
        data = dict(data)
        base = Path((info.context or {}).get("base_dir", "."))
        cwd = data.get("cwd")
        if cwd is None or isinstance(cwd, str) and cwd.strip():
            data["cwd"] = str((base / Path(cwd or ".").expanduser()).resolve())
        return data

    @model_validator(mode="after")
    def _one_way_to_start(self) -> Self:
        if (self.command is None) == (self.restart_cmd is None):
            raise FieldError(
                "target",
                "give command (poolbench starts and stops your service) or restart_cmd "
                "(your command restarts it), exactly one",
            )
        if self.restart_cmd is not None and self.url is None:
            raise FieldError("target.url", "missing (restart_cmd needs the url it serves at)")
        if self.stop_cmd is not None and self.command is not None:
            raise FieldError("target.stop_cmd", "only with restart_cmd (command is stopped by us)")
        if self.managed and self.url is None and PORT_PLACEHOLDER not in self.placeholders():
            raise FieldError(
                "target.command",
                "tell the service where to listen with {port} (in command or env), or give url",
            )
        if not self.managed and PORT_PLACEHOLDER in self.placeholders():
            raise FieldError("target", "{port} is a managed command's: restart_cmd has a url")
        return self

    @property
    def managed(self) -> bool:
        """Whether poolbench starts and stops the service itself (`command`)."""
        return self.command is not None

    def placeholders(self) -> set[str]:
        """Every placeholder the commands, url and env use."""
        names: set[str] = set()
        for template in self._templates().values():
            names |= {name for _, name, _, _ in string.Formatter().parse(template) if name}
        return names

    def expand(self, point: Point, **bound: str) -> Expanded:
        """The commands, url and env for `point`: str.format of each with point fields and bound.

        Raises a FieldError naming the template whose placeholder is unknown.
        """
        values = point.as_dict() | bound
        out: dict[str, str] = {}
        for where, template in self._templates().items():
            try:
                out[where] = template.format(**values)
            except (KeyError, IndexError, ValueError, AttributeError) as exc:
                known = ", ".join(f"{{{n}}}" for n in (*TARGET_PLACEHOLDERS, "pool_size"))
                raise FieldError(
                    f"target.{where}",
                    f"bad placeholder {exc} (known: {known} and every point field; double a "
                    "literal brace: ${VAR} becomes ${{VAR}})",
                ) from None
        env = {key[len("env.") :]: v for key, v in out.items() if key.startswith("env.")}
        return Expanded(
            command=out.get("command") or out.get("restart_cmd", ""),
            stop_cmd=out.get("stop_cmd"),
            url=out.get("url"),
            env=env,
        )

    def env_names(self) -> dict[str, str]:
        """Point fields passed whole in [target.env], by field: {"pool_size": "MYAPP_POOL_SIZE"}."""
        names: dict[str, str] = {}
        for name, template in self.env.items():
            parsed = list(string.Formatter().parse(template))
            if len(parsed) == 1 and parsed[0][0] == "" and parsed[0][1] and not parsed[0][2]:
                names.setdefault(parsed[0][1], name)
        return names

    def _templates(self) -> dict[str, str]:
        fields = {"command": self.command, "restart_cmd": self.restart_cmd}
        fields |= {"stop_cmd": self.stop_cmd, "url": self.url}
        templates = {k: v for k, v in fields.items() if v is not None}
        return templates | {f"env.{k}": v for k, v in self.env.items()}


@dataclass(frozen=True)
class Expanded:
    """A [target]'s templates filled in for one run."""

    command: str
    stop_cmd: str | None
    url: str | None
    env: dict[str, str]
