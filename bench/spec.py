"""Sweep specs: a TOML file (plus command-line overrides) resolved to frozen value objects."""

from __future__ import annotations

import itertools
import math
import re
import tomllib
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, TypeGuard

from bench.errors import UsageError
from sample_app.config import settings_env

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS_DIR = ROOT / "scenarios"
SHAPES = ("constant", "step", "spike")

# Every default of the spec, in one place.
DEFAULT_SHAPE = "constant"
DEFAULT_OPEN_MODEL_RPS = 0.0
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

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


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
class Slo:
    """The service level a recommended configuration must meet (None: that part is not set)."""

    p95_ms: float | None = DEFAULT_SLO_P95_MS
    max_error_rate: float | None = DEFAULT_SLO_MAX_ERROR_RATE

    @classmethod
    def unset(cls) -> Slo:
        """No objective at all (plain Locust output has no spec)."""
        return cls(p95_ms=None, max_error_rate=None)

    @property
    def is_set(self) -> bool:
        """True when there is anything to check."""
        return self.p95_ms is not None or self.max_error_rate is not None

    def passes(self, p95_ms: float, error_rate: float | None) -> bool:
        """True when both figures are within the objective (a missing p95 fails)."""
        if self.p95_ms is not None and not (p95_ms <= self.p95_ms):
            return False
        err = 0.0 if error_rate is None or math.isnan(error_rate) else error_rate
        return self.max_error_rate is None or err <= self.max_error_rate

    def describe(self) -> str:
        """Human summary, e.g. `p95 <= 250 ms, errors <= 1.00%`."""
        parts = []
        if self.p95_ms is not None:
            parts.append(f"p95 <= {self.p95_ms:g} ms")
        if self.max_error_rate is not None:
            parts.append(f"errors <= {self.max_error_rate:.2%}")
        return ", ".join(parts) or "no SLO set"


@dataclass(frozen=True, kw_only=True)
class Fleet:
    """The production fleet sharing one database's connection budget.

    Every worker process of every instance opens its own pool, so the budget is
    `instances x workers x (pool_size + max_overflow) <= max_connections - reserved`.
    """

    instances: int = DEFAULT_INSTANCES
    workers_per_instance: int = DEFAULT_WORKERS_PER_INSTANCE
    max_connections: int = DEFAULT_FLEET_MAX_CONNECTIONS
    reserved_connections: int = DEFAULT_RESERVED_CONNECTIONS

    def with_overrides(self, **overrides: int | None) -> Fleet:
        """Return the fleet with the given (non-None) fields replaced and checked."""
        fleet = replace(self, **{k: v for k, v in overrides.items() if v is not None})
        if fleet.instances < 1 or fleet.workers_per_instance < 1:
            raise UsageError("fleet: instances and workers per instance must be >= 1")
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

    def total(self, connections: float) -> float:
        """Connections the whole fleet opens at `connections` per process."""
        return self.processes * connections

    def fits(self, connections: float) -> bool:
        """instances x workers x (pool_size + max_overflow) <= max_connections - reserved."""
        return self.total(connections) <= self.budget

    def describe(self, connections: float) -> str:
        """The budget arithmetic for one config."""
        verb = "<=" if self.fits(connections) else ">"
        return (
            f"{self.instances} instances x {self.workers_per_instance} workers x "
            f"{connections:g} connections = {self.total(connections):g} {verb} "
            f"{self.max_connections} - {self.reserved_connections} reserved = {self.budget}"
        )


@dataclass(frozen=True, kw_only=True)
class Target:
    """Bring your own app: restart it per point with `restart_cmd`, then load `url`."""

    url: str
    restart_cmd: str
    health_path: str = DEFAULT_HEALTH_PATH


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
    open_model_rps: float
    spawn_rate: float
    warmup_s: float
    duration_s: float

    def app_env(self) -> dict[str, str]:
        """Return the sample app's settings for this point as env vars."""
        return settings_env(
            db_pool_size=self.pool_size,
            db_max_overflow=self.max_overflow,
            http_concurrency_limit=self.http_concurrency_limit,
            pg_pool_max_size=self.pg_max_size,
            sim_query_latency_ms=float(self.sim_latency_ms),
        )

    def as_dict(self) -> dict[str, Any]:
        """Return the point as plain JSON-able values."""
        return asdict(self)


@dataclass(frozen=True, kw_only=True)
class SweepSpec:
    """A whole sweep, resolved: every default filled in and every override applied."""

    name: str
    scenario: str
    shape: str = DEFAULT_SHAPE
    open_model_rps: float = DEFAULT_OPEN_MODEL_RPS
    description: str = ""
    grid: Grid = field(default_factory=Grid)
    workload: Workload = field(default_factory=Workload)
    timing: Timing = field(default_factory=Timing)
    slo: Slo = field(default_factory=Slo)
    fleet: Fleet = field(default_factory=Fleet)
    target: Target | None = None
    app_env: Mapping[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Return the spec in its TOML layout (what manifest.json stores)."""
        raw = asdict(self)
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
        points = [
            self._point(dict(zip(axes, combo, strict=True)), rep, varying)
            for rep in range(1, self.timing.repetitions + 1)
            for combo in itertools.product(*axes.values())
        ]
        return sorted(points, key=lambda p: p.pg_max_connections)

    def _point(self, values: dict[str, Any], rep: int, varying: set[str]) -> Point:
        run_id = (
            f"p{values['pool_size']}-o{values['max_overflow']}"
            f"-s{values['http_concurrency_limit']}-u{values['users']}"
            f"-q{values['queries_per_request']}"
        )
        for axis, tag in _EXTRA_RUN_ID_TAGS.items():
            if axis in varying:
                run_id += f"-{tag}{_fmt(values[axis])}"
        return Point(
            run_id=f"{run_id}-r{rep}",
            scenario=self.scenario,
            shape=self.shape,
            repetition=rep,
            open_model_rps=self.open_model_rps,
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
}


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
    }


def _fmt(value: float) -> str:
    """Format a number without a trailing `.0` (run ids and env vars)."""
    return f"{value:g}" if isinstance(value, float) else str(value)


# --- validation -----------------------------------------------------------------------------


class _Invalid(Exception):
    """A field failed validation; carries the dotted field name."""

    def __init__(self, where: str, message: str) -> None:
        super().__init__(f"{where}: {message}")


def _is_number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _int(value: object, where: str, minimum: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise _Invalid(where, f"must be an integer >= {minimum}")
    return value


def _num(value: object, where: str, minimum: float, *, strict: bool = False) -> float:
    if _is_number(value):
        number = float(value)
        if number > minimum or (number == minimum and not strict):
            return number
    raise _Invalid(where, f"must be a number {'>' if strict else '>='} {minimum:g}")


def _str(value: object, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _Invalid(where, "must be a non-empty string")
    return value


def _int_list(value: object, where: str, minimum: int) -> tuple[int, ...]:
    values = value if isinstance(value, list) else [value]
    if not values:
        raise _Invalid(where, "must not be empty (give at least one value)")
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= minimum for v in values):
        raise _Invalid(where, f"must be a list of integers >= {minimum}")
    return tuple(values)


def _num_list(value: object, where: str, minimum: float) -> tuple[float, ...]:
    values = value if isinstance(value, list) else [value]
    if not values:
        raise _Invalid(where, "must not be empty (give at least one value)")
    numbers = [float(v) for v in values if _is_number(v)]
    if len(numbers) != len(values) or min(numbers) < minimum:
        raise _Invalid(where, f"must be a list of numbers >= {minimum:g}")
    return tuple(numbers)


def _table(raw: Mapping[str, Any], key: str) -> dict[str, Any]:
    value = raw.get(key, {})
    if not isinstance(value, dict):
        raise _Invalid(key, "must be a table")
    return dict(value)


def _reject_unknown(table: Mapping[str, Any], allowed: set[str], prefix: str = "") -> None:
    for key in table:
        if key not in allowed:
            where = f"{prefix}{key}"
            raise _Invalid(where, f"unknown key (expected one of: {', '.join(sorted(allowed))})")


def _names(cls: type) -> set[str]:
    return {f.name for f in fields(cls)}


_GRID_INT_MINIMUMS = {
    "pool_size": 1,
    "max_overflow": 0,
    "http_concurrency_limit": 1,
    "users": 1,
    "pg_max_size": 1,
    "pg_max_connections": 1,
    "queries_per_request": 1,
    "fanout_calls": 1,
}


def _grid(raw: dict[str, Any], workload_raw: Mapping[str, Any]) -> Grid:
    _reject_unknown(raw, _names(Grid), "grid.")
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if key in workload_raw:
            raise _Invalid(f"grid.{key}", "also set in [workload]: give it in one place")
        if key in _GRID_INT_MINIMUMS:
            values[key] = _int_list(value, f"grid.{key}", _GRID_INT_MINIMUMS[key])
        else:
            values[key] = _num_list(value, f"grid.{key}", 0)
    return Grid(**values)


def _workload(raw: dict[str, Any]) -> Workload:
    _reject_unknown(raw, _names(Workload), "workload.")
    checks: dict[str, Any] = {
        "sim_latency_ms": lambda v, w: _num(v, w, 0),
        "think_time_s": lambda v, w: _num(v, w, 0),
        "fanout_calls": lambda v, w: _int(v, w, 1),
        "downstream_latency_ms": lambda v, w: _num(v, w, 0),
        "seed_users": lambda v, w: _int(v, w, 1),
    }
    return Workload(**{k: checks[k](v, f"workload.{k}") for k, v in raw.items()})


def _timing(raw: dict[str, Any]) -> Timing:
    _reject_unknown(raw, _names(Timing), "timing.")
    checks: dict[str, Any] = {
        "repetitions": lambda v, w: _int(v, w, 1),
        "warmup_s": lambda v, w: _num(v, w, 0),
        "duration_s": lambda v, w: _num(v, w, 0, strict=True),
        "spawn_rate": lambda v, w: _num(v, w, 0, strict=True),
    }
    return Timing(**{k: checks[k](v, f"timing.{k}") for k, v in raw.items()})


def _slo(raw: dict[str, Any]) -> Slo:
    _reject_unknown(raw, _names(Slo), "slo.")
    values: dict[str, float] = {}
    if "p95_ms" in raw:
        values["p95_ms"] = _num(raw["p95_ms"], "slo.p95_ms", 0, strict=True)
    if "max_error_rate" in raw:
        rate = _num(raw["max_error_rate"], "slo.max_error_rate", 0)
        if rate > 1:
            raise _Invalid("slo.max_error_rate", "must be a fraction between 0 and 1")
        values["max_error_rate"] = rate
    return Slo(**values)


def _fleet(raw: dict[str, Any]) -> Fleet:
    _reject_unknown(raw, _names(Fleet), "fleet.")
    minimums = {
        "instances": 1,
        "workers_per_instance": 1,
        "max_connections": 1,
        "reserved_connections": 0,
    }
    fleet = Fleet(**{k: _int(v, f"fleet.{k}", minimums[k]) for k, v in raw.items()})
    if fleet.reserved_connections >= fleet.max_connections:
        raise _Invalid("fleet.reserved_connections", "must be below fleet.max_connections")
    return fleet


def _target(raw: dict[str, Any] | None) -> Target | None:
    if raw is None:
        return None
    _reject_unknown(raw, _names(Target), "target.")
    for key in ("url", "restart_cmd"):
        if key not in raw:
            raise _Invalid(f"target.{key}", "missing (a [target] needs url and restart_cmd)")
    url = _str(raw["url"], "target.url").rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise _Invalid("target.url", "must start with http:// or https://")
    health = _str(raw.get("health_path", DEFAULT_HEALTH_PATH), "target.health_path")
    if not health.startswith("/"):
        raise _Invalid("target.health_path", "must start with /")
    restart_cmd = _str(raw["restart_cmd"], "target.restart_cmd")
    return Target(url=url, restart_cmd=restart_cmd, health_path=health)


def _app_env(raw: dict[str, Any]) -> dict[str, str]:
    env: dict[str, str] = {}
    for key, value in raw.items():
        if not re.fullmatch(r"[A-Z_][A-Z0-9_]*", key):
            raise _Invalid(f"app_env.{key}", "must be an UPPER_CASE environment variable name")
        if isinstance(value, bool):
            env[key] = "true" if value else "false"
        elif isinstance(value, str | int | float):
            env[key] = str(value)
        else:
            raise _Invalid(f"app_env.{key}", "must be a string, number or boolean")
    return env


_TOP_LEVEL = {
    "name",
    "scenario",
    "shape",
    "open_model_rps",
    "description",
    "grid",
    "workload",
    "timing",
    "slo",
    "fleet",
    "target",
    "app_env",
}


def _build(raw: Mapping[str, Any], default_name: str, *, check_files: bool) -> SweepSpec:
    _reject_unknown(raw, _TOP_LEVEL)
    name = _str(raw.get("name", default_name), "name")
    if not _NAME.match(name):
        raise _Invalid("name", "must be letters, digits, '.', '_' or '-' (it names a directory)")
    if "scenario" not in raw:
        raise _Invalid("scenario", "missing (the name of a file in scenarios/, e.g. single_query)")
    scenario = _str(raw["scenario"], "scenario")
    exists = (SCENARIOS_DIR / f"{scenario}.py").is_file() or not check_files
    if not _NAME.match(scenario) or not exists:
        known = sorted(
            p.stem for p in SCENARIOS_DIR.glob("*.py") if p.stem not in {"common", "shapes"}
        )
        raise _Invalid("scenario", f"no file scenarios/{scenario}.py (known: {', '.join(known)})")
    shape = raw.get("shape", DEFAULT_SHAPE)
    if shape not in SHAPES:
        raise _Invalid("shape", f"must be one of {', '.join(SHAPES)}")
    workload_raw = _table(raw, "workload")
    target_raw = _table(raw, "target") if "target" in raw else None
    description = raw.get("description", "")
    if not isinstance(description, str):
        raise _Invalid("description", "must be a string")
    spec = SweepSpec(
        name=name,
        scenario=scenario,
        shape=shape,
        open_model_rps=_num(raw.get("open_model_rps", DEFAULT_OPEN_MODEL_RPS), "open_model_rps", 0),
        description=description,
        grid=_grid(_table(raw, "grid"), workload_raw),
        workload=_workload(workload_raw),
        timing=_timing(_table(raw, "timing")),
        slo=_slo(_table(raw, "slo")),
        fleet=_fleet(_table(raw, "fleet")),
        target=_target(target_raw),
        app_env=_app_env(_table(raw, "app_env")),
    )
    if spec.target is not None:
        _check_placeholders(spec.target.restart_cmd, spec.points()[0])
    return spec


def _check_placeholders(restart_cmd: str, point: Point) -> None:
    """Fail at load time, not mid-sweep, on a restart_cmd that str.format cannot fill."""
    try:
        restart_cmd.format(**point.as_dict())
    except (KeyError, IndexError, ValueError) as exc:
        raise _Invalid(
            "target.restart_cmd",
            f"bad placeholder {exc} (use point fields such as {{pool_size}}; "
            "double literal braces: ${VAR} becomes ${{VAR}})",
        ) from None


# --- loading and overrides ------------------------------------------------------------------


def parse_override(text: str) -> tuple[str, Any]:
    """Parse `KEY=VALUE` (VALUE in TOML syntax, else a bare string) from `--set`."""
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise UsageError(f"--set {text!r}: expected KEY=VALUE, e.g. timing.duration_s=5")
    try:
        return key, tomllib.loads(f"v = {value.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        return key, value.strip()  # `--set scenario=write_heavy` without quotes


def apply_overrides(raw: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Return a copy of the raw spec with dotted-key overrides set (validated afterwards)."""
    merged: dict[str, Any] = {k: dict(v) if isinstance(v, dict) else v for k, v in raw.items()}
    for dotted, value in overrides.items():
        head, _, rest = dotted.partition(".")
        if not rest:
            merged[head] = value
            continue
        if "." in rest:
            raise UsageError(f"--set {dotted}: keys have at most one dot (table.key)")
        table = merged.setdefault(head, {})
        if not isinstance(table, dict):
            raise UsageError(f"--set {dotted}: {head} is not a table")
        table[rest] = value
    return merged


def spec_from_dict(
    raw: Mapping[str, Any],
    *,
    source: str,
    overrides: Mapping[str, Any] | None = None,
    check_files: bool = True,
) -> SweepSpec:
    """Validate a raw spec (from TOML or a manifest); errors name `source` and the field.

    `check_files=False` reads a stored spec leniently: its scenario file need not exist here.
    """
    try:
        merged = apply_overrides(raw, overrides or {})
        return _build(merged, Path(source).stem, check_files=check_files)
    except _Invalid as exc:
        raise UsageError(f"spec {source}: {exc}") from None


def load_spec(path: Path, overrides: Mapping[str, Any] | None = None) -> SweepSpec:
    """Read a TOML spec and apply overrides; any problem is one UsageError line."""
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"spec {path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"spec {path}: cannot read: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"spec {path}: not valid TOML: {exc}") from None
    return spec_from_dict(raw, source=str(path), overrides=overrides)


def spec_from_manifest(manifest: Mapping[str, Any], source: str) -> SweepSpec:
    """Load the spec a sweep stored in its manifest back into a SweepSpec (leniently)."""
    raw = manifest.get("spec")
    if not isinstance(raw, dict):
        raise UsageError(f"{source}: no spec in the manifest")
    return spec_from_dict(raw, source=source, check_files=False)
