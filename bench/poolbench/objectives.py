"""What a config must meet and fit: the SLO (whole sweep and per endpoint) and the fleet budget.

`Demand` is what one config asks of Postgres (configured pools, app workers, the measured peak,
or PgBouncer's server pool); `Fleet` says whether the whole fleet's demand fits max_connections.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Self

from pydantic import AfterValidator, Field, model_validator

from poolbench.checks import MAX_MS, FieldError, SpecModel, fraction, integer, number
from poolbench.defaults import (
    DEFAULT_APP_WORKERS,
    DEFAULT_FLEET_MAX_CONNECTIONS,
    DEFAULT_INSTANCES,
    DEFAULT_PGBOUNCER_INSTANCES,
    DEFAULT_RESERVED_CONNECTIONS,
    DEFAULT_SLO_MAX_ERROR_RATE,
    DEFAULT_SLO_P95_MS,
    DEFAULT_WORKERS_PER_INSTANCE,
)
from poolbench.fmt import opt_float

# How the app reaches Postgres: its own pools straight to the server, or through a PgBouncer in
# transaction mode whose server pool (default_pool_size) is what Postgres sees.
DIRECT, PGBOUNCER = "direct", "pgbouncer"
_ENDPOINT = re.compile(r"^\S+ \S.*$")  # Locust's request_type and name: `POST /orders`
P95Ms = Annotated[float | None, number(0, MAX_MS, strict=True, optional=True)]
ErrorRate = Annotated[float | None, fraction(optional=True)]


def _endpoint_name(name: str) -> str:
    if not _ENDPOINT.match(name):
        raise ValueError('must be a request type and name, e.g. "POST /orders"')
    return name


class EndpointSlo(SpecModel):
    """One endpoint's objective, `[slo.endpoints."POST /orders"]` (None: that part is not set)."""

    p95_ms: P95Ms = None
    max_error_rate: ErrorRate = None

    @model_validator(mode="after")
    def _sets_something(self) -> Self:
        if self.p95_ms is None and self.max_error_rate is None:
            raise FieldError((), "must set p95_ms and/or max_error_rate")
        return self

    def failure(self, figures: Mapping[str, Any]) -> str | None:
        """Why one run's figures of the endpoint (an endpoints.csv row) miss it, or None.

        An endpoint that completed no request in the window fails, as an empty window does.
        """
        if not (opt_float(figures.get("requests")) or 0.0) > 0:
            return "no request completed"
        return Slo(p95_ms=self.p95_ms, max_error_rate=self.max_error_rate).failure(figures)

    def describe(self) -> str:
        """Human summary, e.g. `p95 <= 300 ms`."""
        return Slo(p95_ms=self.p95_ms, max_error_rate=self.max_error_rate).describe()


class Slo(SpecModel):
    """The service level a recommended configuration must meet (None: that part is not set).

    `p95_ms` and `max_error_rate` hold for all requests together; `endpoints` adds objectives
    for single endpoints (Locust's request_type and name, e.g. `POST /orders`), because a mix
    can pass on the aggregate while one of its endpoints misses.
    """

    table = "slo"
    p95_ms: P95Ms = DEFAULT_SLO_P95_MS
    max_error_rate: ErrorRate = DEFAULT_SLO_MAX_ERROR_RATE
    endpoints: Mapping[Annotated[str, AfterValidator(_endpoint_name)], EndpointSlo] = Field(
        default_factory=dict
    )

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
        if opt_float(row.get("requests")) == 0 or (opt_float(row.get("empty_windows")) or 0) > 0:
            return "no request completed in the measured window"
        p95 = opt_float(row.get("p95_ms"))
        errors = opt_float(row.get("error_rate"))
        if p95 is None:
            return "p95 unknown"
        if self.p95_ms is not None and not p95 <= self.p95_ms:
            return f"p95 {p95:.1f} ms > {self.p95_ms:g} ms"
        if self.max_error_rate is not None:
            if errors is None:
                return "error rate unknown"
            if not errors <= self.max_error_rate:
                return f"errors {errors:.2%} > {self.max_error_rate:.2%}"
        return None

    def passes(self, row: Mapping[Any, Any]) -> bool:
        """True when the row meets the objective (see `failure`)."""
        return self.failure(row) is None

    def endpoint_failure(self, endpoints: Mapping[str, Mapping[str, Any]]) -> str | None:
        """Why one run misses an endpoint's objective (the first, in the spec's order), or None.

        `endpoints` is the run's figures by endpoint name
        (`poolbench.analysis.load.endpoint_figures`: requests, error_rate, p95_ms, ...). An
        endpoint with an objective but no completed request in the run fails: e.g.
        `POST /orders: no request completed`.
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
    # Whether each process has an asyncpg pool besides SQLAlchemy's (a service of the user's own
    # may report none: then pg_max_size is blank and only its one pool counts).
    asyncpg_pool: bool = True

    @classmethod
    def of(cls, row: Mapping[Any, Any]) -> Demand:
        """The demand of a runs.csv row or aggregated config (older sweeps: direct, 1 worker)."""
        # Missing pool_size stays NaN (an unknown config); a missing overflow or asyncpg pool is 0.
        pool_size = opt_float(row.get("pool_size"))
        pools = (
            (math.nan if pool_size is None else pool_size)
            + (opt_float(row.get("max_overflow")) or 0.0)
            + (opt_float(row.get("pg_max_size")) or 0.0)
        )
        workers = opt_float(row.get("app_workers")) or 0.0
        pgbouncer = opt_float(row.get("pgbouncer_pool_size"))
        return cls(
            pools=pools,
            app_workers=int(workers) if workers >= 1 else DEFAULT_APP_WORKERS,
            measured_peak=opt_float(row.get("pg_peak_connections")),
            pgbouncer_pool_size=pgbouncer if row.get("pooler") == PGBOUNCER else None,
            asyncpg_pool=opt_float(row.get("pg_max_size")) is not None,
        )

    @property
    def pools_named(self) -> str:
        """What `pools` counts, in words: both pools, or the one the service has."""
        return "both pools" if self.asyncpg_pool else "the pool"

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


class Fleet(SpecModel):
    """The production fleet sharing one database's connection budget.

    Every worker process of every instance opens its own pools, so with the apps connecting
    directly the budget is `instances x workers x (pool_size + max_overflow + pg_max_size) <=
    max_connections - reserved`; behind PgBouncer it is `pgbouncer_instances x
    default_pool_size` instead (see `Demand`).
    """

    table = "fleet"
    instances: Annotated[int, integer(1)] = DEFAULT_INSTANCES
    workers_per_instance: Annotated[int, integer(1)] = DEFAULT_WORKERS_PER_INSTANCE
    max_connections: Annotated[int, integer(1)] = DEFAULT_FLEET_MAX_CONNECTIONS
    reserved_connections: Annotated[int, integer(0)] = DEFAULT_RESERVED_CONNECTIONS
    pgbouncer_instances: Annotated[int, integer(1)] = DEFAULT_PGBOUNCER_INSTANCES

    @model_validator(mode="after")
    def _leaves_connections(self) -> Self:
        if self.reserved_connections >= self.max_connections:
            raise FieldError("reserved_connections", "must be below fleet.max_connections")
        return self

    def with_overrides(self, **overrides: int | None) -> Fleet:
        """Return the fleet with the given (non-None) fields replaced, checked as in a spec."""
        return Fleet(**(self.model_dump() | {k: v for k, v in overrides.items() if v is not None}))

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
