"""Reading a sweep spec: TOML plus `--set` overrides, validated into a SweepSpec.

Any problem is one UsageError line that names the file and the field.
"""

from __future__ import annotations

import json
import math
import re
import tomllib
from collections.abc import Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any, TypeGuard

from poolbench.errors import UsageError
from poolbench.locustfiles import (
    OPEN_MODEL_USER,
    defines_user,
    known_scenarios,
    scenario_path,
    user_classes,
)
from poolbench.objectives import PGBOUNCER, EndpointSlo, Fleet, Slo
from poolbench.spec import (
    CAPACITY,
    DEFAULT_HEALTH_PATH,
    DEFAULT_OPEN_MODEL_MAX_INFLIGHT,
    DEFAULT_OPEN_MODEL_RPS,
    DEFAULT_SHAPE,
    GRID,
    KINDS,
    POOLERS,
    SEARCHES,
    SHAPES,
    SLO,
    Grid,
    Point,
    SweepSpec,
    Target,
    Timing,
    Workload,
)

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
# Upper bounds keep a typo (or `inf`) from starting Postgres and failing an hour later.
MAX_SECONDS = 86_400.0  # one run's warm-up, window or think time: a day
MAX_MS = 600_000.0  # a latency, an objective: ten minutes
MAX_RATE = 100_000.0  # arrivals or spawns per second
MAX_COUNT = 1_000_000  # users, pool sizes, connections, queries
MAX_REPETITIONS = 1_000
MAX_POINTS = 10_000  # runs in one sweep: weeks of measurement already
# Worker processes of the app: on a 2-core host shared with Postgres and Locust more than a few
# only time-share the same cores (and each holds its own pools), so the bound stays small.
MAX_APP_WORKERS = 4
_ENDPOINT = re.compile(r"^\S+ \S.*$")  # Locust's request_type and name: `POST /orders`


# --- validation -----------------------------------------------------------------------------


class _Invalid(Exception):
    """A field failed validation; carries the dotted field name."""

    def __init__(self, where: str, message: str) -> None:
        super().__init__(f"{where}: {message}")


def _is_number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_int(value: object, minimum: int, maximum: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and minimum <= value <= maximum


def _int(value: object, where: str, minimum: int, maximum: int = MAX_COUNT) -> int:
    if not _is_int(value, minimum, maximum):
        raise _Invalid(where, f"must be an integer from {minimum} to {maximum:,}")
    assert isinstance(value, int)
    return value


def _num(
    value: object, where: str, minimum: float, maximum: float, *, strict: bool = False
) -> float:
    if _is_number(value):
        number = float(value)
        above = number > minimum or (number == minimum and not strict)
        if above and number <= maximum and math.isfinite(number):
            return number
    low = f"{'>' if strict else '>='} {minimum:g}"
    raise _Invalid(where, f"must be a finite number {low} and <= {maximum:,g}")


def _str(value: object, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _Invalid(where, "must be a non-empty string")
    return value


def _int_list(value: object, where: str, minimum: int) -> tuple[int, ...]:
    values = value if isinstance(value, list) else [value]
    if not values:
        raise _Invalid(where, "must not be empty (give at least one value)")
    if not all(_is_int(v, minimum, MAX_COUNT) for v in values):
        raise _Invalid(where, f"must be a list of integers from {minimum} to {MAX_COUNT:,}")
    return tuple(values)


def _num_list(value: object, where: str, minimum: float, maximum: float) -> tuple[float, ...]:
    values = value if isinstance(value, list) else [value]
    if not values:
        raise _Invalid(where, "must not be empty (give at least one value)")
    numbers = [float(v) for v in values if _is_number(v)]
    if len(numbers) != len(values) or not all(
        minimum <= n <= maximum and math.isfinite(n) for n in numbers
    ):
        raise _Invalid(where, f"must be a list of finite numbers from {minimum:g} to {maximum:,g}")
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
    "pgbouncer_pool_size": 1,
}
_GRID_NUM_MAXIMUMS = {"sim_latency_ms": MAX_MS, "think_time_s": MAX_SECONDS}


def _grid(raw: dict[str, Any], workload_raw: Mapping[str, Any]) -> Grid:
    _reject_unknown(raw, _names(Grid), "grid.")
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if key in workload_raw:
            raise _Invalid(f"grid.{key}", "also set in [workload]: give it in one place")
        if key == "app_workers":
            values[key] = _app_workers(value)
        elif key == "pooler":
            values[key] = _poolers(value)
        elif key in _GRID_INT_MINIMUMS:
            values[key] = _int_list(value, f"grid.{key}", _GRID_INT_MINIMUMS[key])
        else:
            values[key] = _num_list(value, f"grid.{key}", 0, _GRID_NUM_MAXIMUMS[key])
    return Grid(**values)


def _app_workers(value: object) -> tuple[int, ...]:
    values = value if isinstance(value, list) else [value]
    if not values or not all(_is_int(v, 1, MAX_APP_WORKERS) for v in values):
        raise _Invalid(
            "grid.app_workers",
            f"must be a list of integers from 1 to {MAX_APP_WORKERS}: more worker processes "
            "than that only time-share this host's cores with Postgres and Locust, which "
            "measures the host rather than the pools",
        )
    return tuple(v for v in values if isinstance(v, int))


def _poolers(value: object) -> tuple[str, ...]:
    values = value if isinstance(value, list) else [value]
    if not values or not all(isinstance(v, str) and v in POOLERS for v in values):
        raise _Invalid("grid.pooler", f"must be a list of {' and/or '.join(map(repr, POOLERS))}")
    if len(set(values)) != len(values):
        raise _Invalid("grid.pooler", "names a pooler twice")
    return tuple(values)


def _workload(raw: dict[str, Any]) -> Workload:
    _reject_unknown(raw, _names(Workload), "workload.")
    checks: dict[str, Any] = {
        "sim_latency_ms": lambda v, w: _num(v, w, 0, MAX_MS),
        "think_time_s": lambda v, w: _num(v, w, 0, MAX_SECONDS),
        "fanout_calls": lambda v, w: _int(v, w, 1),
        "downstream_latency_ms": lambda v, w: _num(v, w, 0, MAX_MS),
        "seed_users": lambda v, w: _int(v, w, 1),
    }
    return Workload(**{k: checks[k](v, f"workload.{k}") for k, v in raw.items()})


def _timing(raw: dict[str, Any]) -> Timing:
    _reject_unknown(raw, _names(Timing), "timing.")
    checks: dict[str, Any] = {
        "repetitions": lambda v, w: _int(v, w, 1, MAX_REPETITIONS),
        "warmup_s": lambda v, w: _num(v, w, 0, MAX_SECONDS),
        "duration_s": lambda v, w: _num(v, w, 0, MAX_SECONDS, strict=True),
        "spawn_rate": lambda v, w: _num(v, w, 0, MAX_RATE, strict=True),
    }
    return Timing(**{k: checks[k](v, f"timing.{k}") for k, v in raw.items()})


def _objectives(raw: Mapping[str, Any], prefix: str) -> dict[str, float]:
    """The p95_ms and max_error_rate of an SLO table, checked."""
    values: dict[str, float] = {}
    if "p95_ms" in raw:
        values["p95_ms"] = _num(raw["p95_ms"], f"{prefix}p95_ms", 0, MAX_MS, strict=True)
    if "max_error_rate" in raw:
        rate = raw["max_error_rate"]
        if not (_is_number(rate) and 0 <= rate <= 1):
            raise _Invalid(f"{prefix}max_error_rate", "must be a fraction between 0 and 1")
        values["max_error_rate"] = float(rate)
    return values


def _slo(raw: dict[str, Any]) -> Slo:
    _reject_unknown(raw, _names(Slo), "slo.")
    values: dict[str, Any] = _objectives(raw, "slo.")
    if "endpoints" in raw:
        values["endpoints"] = _endpoint_slos(raw["endpoints"])
    return Slo(**values)


def _endpoint_slos(raw: object) -> dict[str, EndpointSlo]:
    """`[slo.endpoints."POST /orders"]` tables: each sets p95_ms and/or max_error_rate."""
    if not isinstance(raw, dict):
        raise _Invalid("slo.endpoints", 'must be a table, e.g. [slo.endpoints."POST /orders"]')
    endpoints: dict[str, EndpointSlo] = {}
    for name, entry in raw.items():
        where = f"slo.endpoints.{json.dumps(name, ensure_ascii=False)}"
        if not _ENDPOINT.match(name):
            raise _Invalid(where, 'must be a request type and name, e.g. "POST /orders"')
        if not isinstance(entry, dict):
            raise _Invalid(where, "must be a table with p95_ms and/or max_error_rate")
        _reject_unknown(entry, _names(EndpointSlo), f"{where}.")
        # A manifest stores an unset part as null.
        values = _objectives({k: v for k, v in entry.items() if v is not None}, f"{where}.")
        if not values:
            raise _Invalid(where, "must set p95_ms and/or max_error_rate")
        endpoints[name] = EndpointSlo(**values)
    return endpoints


def _fleet(raw: dict[str, Any]) -> Fleet:
    _reject_unknown(raw, _names(Fleet), "fleet.")
    minimums = {
        "instances": 1,
        "workers_per_instance": 1,
        "max_connections": 1,
        "reserved_connections": 0,
        "pgbouncer_instances": 1,
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
    paths = {
        key: _absolute(raw[key], f"target.{key}") for key in ("pid_file", "cgroup") if key in raw
    }
    if "cgroup" in paths and not paths["cgroup"].startswith("/sys/fs/cgroup/"):
        raise _Invalid("target.cgroup", "must be a cgroup directory under /sys/fs/cgroup/")
    return Target(url=url, restart_cmd=restart_cmd, health_path=health, **paths)


def _absolute(value: object, where: str) -> str:
    path = _str(value, where)
    if not Path(path).is_absolute():
        raise _Invalid(where, "must be an absolute path")
    return path


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
    "locustfile",
    "shape",
    "kind",
    "search",
    "capacity_users",
    "open_model_rps",
    "open_model_max_inflight",
    "description",
    "grid",
    "workload",
    "timing",
    "slo",
    "fleet",
    "target",
    "app_env",
}


def _kind(value: object, open_model_rps: float) -> str:
    """The experiment: given, or implied by the load model (open model: slo, closed: capacity)."""
    if value is None:
        return SLO if open_model_rps > 0 else CAPACITY
    if value not in KINDS:
        raise _Invalid("kind", f"must be one of {', '.join(KINDS)}")
    if value in (SLO, "both") and open_model_rps <= 0:
        raise _Invalid(
            "kind", f"{value} needs open_model_rps > 0 (the per-user arrival rate of the target)"
        )
    if value == CAPACITY and open_model_rps > 0:
        raise _Invalid(
            "kind",
            "capacity is a closed loop: drop open_model_rps, or use kind = both for an SLO sweep "
            "at that rate as well",
        )
    return str(value)


def _search(value: object) -> str:
    """How the sweep picks its runs (adaptive searches SLO points; capacity points run in full)."""
    if value not in SEARCHES:
        raise _Invalid("search", f"must be one of {', '.join(SEARCHES)}")
    return str(value)


def _build(
    raw: Mapping[str, Any], default_name: str, base_dir: Path, *, check_files: bool
) -> SweepSpec:
    _reject_unknown(raw, _TOP_LEVEL)
    name = _str(raw.get("name", default_name), "name")
    if not _NAME.match(name):
        raise _Invalid("name", "must be letters, digits, '.', '_' or '-' (it names a directory)")
    scenario, locustfile = _load(raw, base_dir, check_files=check_files)
    shape = raw.get("shape", DEFAULT_SHAPE)
    if shape not in SHAPES:
        raise _Invalid("shape", f"must be one of {', '.join(SHAPES)}")
    workload_raw = _table(raw, "workload")
    target_raw = _table(raw, "target") if "target" in raw else None
    description = raw.get("description", "")
    if not isinstance(description, str):
        raise _Invalid("description", "must be a string")
    rps = raw.get("open_model_rps", DEFAULT_OPEN_MODEL_RPS)
    open_model_rps = _num(rps, "open_model_rps", 0, MAX_RATE)
    if open_model_rps > 0 and locustfile and check_files and not _open_model_ready(locustfile):
        raise _Invalid(
            "open_model_rps",
            f"the open model needs users derived from scenarios/common.py's {OPEN_MODEL_USER}; "
            f"{locustfile} runs its users' own loop (a closed loop: kind = capacity)",
        )
    kind = _kind(raw.get("kind"), open_model_rps)
    search = _search(raw.get("search", GRID))
    capacity_users = raw.get("capacity_users")
    spec = SweepSpec(
        name=name,
        scenario=scenario,
        locustfile=locustfile,
        kind=kind,
        search=search,
        shape=shape,
        open_model_rps=open_model_rps,
        capacity_users=None
        if capacity_users is None
        else _int(capacity_users, "capacity_users", 1),
        open_model_max_inflight=_int(
            raw.get("open_model_max_inflight", DEFAULT_OPEN_MODEL_MAX_INFLIGHT),
            "open_model_max_inflight",
            1,
        ),
        description=description,
        grid=_grid(_table(raw, "grid"), workload_raw),
        workload=_workload(workload_raw),
        timing=_timing(_table(raw, "timing")),
        slo=_slo(_table(raw, "slo")),
        fleet=_fleet(_table(raw, "fleet")),
        target=_target(target_raw),
        app_env=_app_env(_table(raw, "app_env")),
    )
    grid = spec.grid
    shapes = sum(len(grid.pgbouncer_pool_size) if p == PGBOUNCER else 1 for p in grid.pooler)
    runs = shapes * math.prod(
        len(values) or 1
        for name, values in vars(grid).items()
        if name not in ("pooler", "pgbouncer_pool_size")
    )
    runs *= spec.timing.repetitions * (2 if kind == "both" else 1)
    if runs > MAX_POINTS:
        raise _Invalid("grid", f"{runs:,} runs (grid x repetitions); at most {MAX_POINTS:,}")
    if spec.target is not None:
        if grid.app_workers != (1,) or grid.pooler != ("direct",):
            raise _Invalid(
                "target",
                "grid.app_workers and grid.pooler shape the sample app the sweep starts; with a "
                "[target] your restart_cmd decides its workers and pooler",
            )
        _check_placeholders(spec.target.restart_cmd, spec.points()[0])
    return spec


def _load(raw: Mapping[str, Any], base_dir: Path, *, check_files: bool) -> tuple[str, str | None]:
    """The scenario's name and, for a locustfile of the user's own, its absolute path."""
    if "locustfile" in raw:
        if "scenario" in raw:
            raise _Invalid("locustfile", "give scenario or locustfile, not both")
        path = base_dir / Path(_str(raw["locustfile"], "locustfile")).expanduser()
        path = path.resolve()
        if check_files and not defines_user(path):
            raise _Invalid(
                "locustfile", f"{path}: no such file, or it defines no Locust user class"
            )
        return path.stem, str(path)
    if "scenario" not in raw:
        raise _Invalid(
            "scenario",
            "missing (a file in scenarios/, e.g. single_query; or locustfile = your own file)",
        )
    scenario = _str(raw["scenario"], "scenario")
    if not _NAME.match(scenario) or (check_files and not defines_user(scenario_path(scenario))):
        raise _Invalid(
            "scenario",
            f"scenarios/{scenario}.py is not a scenario: no such file, or it defines no "
            f"Locust user class (known: {', '.join(known_scenarios())})",
        )
    return scenario, None


def _open_model_ready(locustfile: str) -> bool:
    """Whether every user class of a locustfile derives from the open model's user class."""
    return all(OPEN_MODEL_USER in bases for bases in user_classes(Path(locustfile)))


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
    """Return a copy of the raw spec with dotted-key overrides set (validated afterwards).

    A top-level override of None removes the key (TOML has no null, so `--set` never gives one).
    """
    merged: dict[str, Any] = {k: dict(v) if isinstance(v, dict) else v for k, v in raw.items()}
    for dotted, value in overrides.items():
        head, _, rest = dotted.partition(".")
        if not rest:
            merged[head] = value
            if value is None:
                del merged[head]
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
        # A relative locustfile is relative to the spec file, not to the working directory.
        return _build(merged, Path(source).stem, Path(source).parent, check_files=check_files)
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
