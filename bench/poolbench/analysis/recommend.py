"""The recommendation as a ready-to-paste config: env vars, engine kwargs, reasons and risks."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from poolbench.analysis.analyse import Analysis
from poolbench.analysis.models import DEFAULT_HEADROOM
from poolbench.errors import Inconclusive, UsageError
from poolbench.fmt import num, opt_float, pct
from poolbench.objectives import Demand, Fleet

# SQLAlchemy's default; kept when there is no SLO to derive a fail-fast timeout from.
DEFAULT_POOL_TIMEOUT_S = 30
DEFAULT_POOL_RECYCLE_S = 1800
DEFAULT_PG_MIN_SIZE = 1
DEFAULT_UNUSED_PG_POOL = 2  # health checks only
PRE_PING_NOT_MEASURED = "not measured (no run reported a ping figure)"


def fail_fast_timeout_s(p95_slo_ms: float | None) -> int:
    """Fail fast: a request that waits ~4x its p95 budget for a connection has already failed."""
    if p95_slo_ms is None:
        return DEFAULT_POOL_TIMEOUT_S
    return max(1, math.ceil(4 * p95_slo_ms / 1000))


def pool_timeout_s(analysis: Analysis) -> int:
    """The fail-fast pool_timeout for a sweep's SLO."""
    return fail_fast_timeout_s(analysis.slo.p95_ms)


def asyncpg_pool(rec: Mapping[str, Any], headroom: float = DEFAULT_HEADROOM) -> tuple[int, str]:
    """PG_POOL_MAX_SIZE for the direct asyncpg pool, from its own measured peak, and why."""
    peak = opt_float(rec.get("pg_pool_peak_checked_out"))
    if peak:
        # The workers' peaks summed (poolbench.sweep.appworkers): PG_POOL_MAX_SIZE is per process.
        peak = math.ceil(peak / Demand.of(rec).app_workers)
    measured_max = opt_float(rec.get("pg_max_size"))
    if not peak:
        return DEFAULT_UNUSED_PG_POOL, (
            "the direct asyncpg pool was not used by this workload beyond health checks"
        )
    size = max(1, math.ceil(peak * headroom))
    wait = opt_float(rec.get("pg_pool_acquire_wait_p95_ms")) or 0.0
    why = f"its measured peak was {peak:g} connections checked out (x{headroom:g} headroom)"
    if measured_max is not None and peak >= measured_max and wait >= 1:
        why += (
            f"; it was saturated at max_size {measured_max:g} (acquire wait p95 {wait:.1f} ms):"
            " sweep pg_max_size to size it properly"
        )
    return size, why


def pre_ping_cost(rec: Mapping[str, Any], runs: pd.DataFrame) -> str:
    """pool_pre_ping's measured cost per checkout (the recommended config's runs), in words."""
    ping = opt_float(rec.get("ping_mean_ms"))
    hold = opt_float(rec.get("hold_time_mean_ms"))
    if ping and hold:
        # The hold runs from leaving the pool to checkin, so it includes the ping.
        return (
            f"measured {ping:.2f} ms per checkout, {ping / hold:.0%} of the mean hold "
            f"({hold:.1f} ms): the connection stays out of the pool for it"
        )
    if "pings" in runs and (runs["pings"].fillna(-1) == 0).any():
        return "not measured: no checkout pinged in these runs (pre-ping off, or fresh connections)"
    return PRE_PING_NOT_MEASURED


@dataclass(frozen=True, kw_only=True)
class PoolConfig:
    """The values a snippet recommends and why; `pg_max_size` None: no direct asyncpg pool."""

    pool_size: int
    max_overflow: int
    pool_why: str
    pg_max_size: int | None
    pg_why: str = ""
    p95_slo_ms: float | None = None
    http_concurrency_limit: int | None = None
    fleet: Fleet | None = None
    warnings: Sequence[str] = ()
    pre_ping_cost: str = PRE_PING_NOT_MEASURED
    # A service of the user's own: its env names of the point fields ([target] env), and only
    # those are printed as env vars; None: the sample app's settings.
    env_names: Mapping[str, str] | None = None


def config_snippet(
    header: Sequence[str], config: PoolConfig, idle_timeout_s: float | None = None
) -> str:
    """The env vars, engine kwargs, reasons and risk flags for `config`, after `header`."""
    pool, overflow, direct = config.pool_size, config.max_overflow, config.pg_max_size
    per_process = pool + overflow + (direct or 0)
    timeout = fail_fast_timeout_s(config.p95_slo_ms)
    recycle = DEFAULT_POOL_RECYCLE_S
    if idle_timeout_s is not None:
        # Recycling below the shortest idle cutoff means no connection idle past it is reused.
        recycle = max(1, min(recycle, math.floor(idle_timeout_s * 0.8)))
    lines = list(header)
    if config.fleet is not None:
        pools = f"{pool + overflow}" if direct is None else f"{pool + overflow} + {direct}"
        lines.append(
            f"# fleet ({'both pools' if direct is not None else 'the pool'}, {pools} per "
            f"process): {config.fleet.describe(per_process)}"
        )
    lines += [
        "",
        *_env_lines(config, timeout, recycle),
        "",
        "engine = create_async_engine(",
        "    url,",
        f"    pool_size={pool},",
        f"    max_overflow={overflow},",
        f"    pool_timeout={timeout},",
        f"    pool_recycle={recycle},",
        "    pool_pre_ping=True,",
        ")",
        "",
        "# Why these values:",
        f"# - pool_size + max_overflow = {pool + overflow}: {config.pool_why}.",
    ]
    if direct is not None:
        lines.append(f"# - PG_POOL_MAX_SIZE={direct}: {config.pg_why}.")
    lines += [
        f"# - pool_timeout={timeout} s: "
        + (
            f"~4x the p95 SLO ({config.p95_slo_ms:g} ms); a request waiting longer for a "
            "connection has already missed its SLO, so fail it fast instead of queueing."
            if config.p95_slo_ms is not None
            else "SQLAlchemy's default; set an SLO to derive a fail-fast timeout."
        ),
        f"# - pool_recycle={recycle} s and pool_pre_ping=True: connections that a server "
        "restart, failover or network idle cutoff closed are replaced at checkout instead of "
        f"failing a request. Pre-ping's cost: {config.pre_ping_cost}.",
        "",
        "# Risks to check:",
        "# - Idle cutoffs between app and database close pooled connections: Postgres "
        "idle_session_timeout (off by default), PgBouncer server_idle_timeout (600 s default), "
        "cloud load balancers (e.g. AWS NLB 350 s, Azure LB 4 min). Keep pool_recycle below the "
        "shortest one (--idle-timeout-s) and keep pool_pre_ping=True (with asyncpg three "
        "round trips per checkout: BEGIN, the ping, ROLLBACK).",
        "# - PgBouncer in transaction mode breaks asyncpg's prepared statements (\"prepared "
        'statement ... does not exist / already exists"). Workaround: connect_args='
        '{"statement_cache_size": 0, "prepared_statement_cache_size": 0} plus unique '
        "statement names (prepared_statement_name_func), or PgBouncer >= 1.21 with "
        "max_prepared_statements; let PgBouncer do the pooling.",
    ]
    if overflow > 0:
        lines.append(
            "# - Overflow connections are closed on checkin: under steady load they churn "
            "(connect cost per burst). Prefer pool_size when load is steady."
        )
    if config.fleet is not None and not config.fleet.fits(per_process):
        lines.append(
            f"# - FLEET BUDGET BROKEN: {config.fleet.describe(per_process)}. "
            f"At most {config.fleet.per_process} connections per process fit."
        )
    lines += [f"# - {w}" for w in config.warnings]
    return "\n".join(lines)


def _env_lines(config: PoolConfig, timeout: float, recycle: float) -> list[str]:
    """The settings as env vars: the sample app's, or those the service's [target] env named."""
    direct = config.pg_max_size
    if config.env_names is not None:
        values = {
            "pool_size": config.pool_size,
            "max_overflow": config.max_overflow,
            "pg_max_size": direct,
            "http_concurrency_limit": config.http_concurrency_limit,
        }
        named = [
            f"{config.env_names[k]}={v}"
            for k, v in values.items()
            if v is not None and k in config.env_names
        ]
        return ["# your service's settings, by the names in [target] env", *named]
    lines = [
        f"DB_POOL_SIZE={config.pool_size}",
        f"DB_MAX_OVERFLOW={config.max_overflow}",
        f"DB_POOL_TIMEOUT_S={timeout}",
        f"DB_POOL_RECYCLE_S={recycle}",
        "DB_POOL_PRE_PING=true",
    ]
    if direct is not None:
        lines += [
            f"PG_POOL_MIN_SIZE={min(DEFAULT_PG_MIN_SIZE, direct)}",
            f"PG_POOL_MAX_SIZE={direct}",
        ]
    if config.http_concurrency_limit is not None:
        lines.append(f"HTTP_CONCURRENCY_LIMIT={config.http_concurrency_limit}")
    return lines


def recommend_snippet(analysis: Analysis, idle_timeout_s: float | None = None) -> str:
    """The env vars, engine kwargs, reasons and risk flags for the recommended config."""
    if analysis.headline.optimum.inconclusive:
        raise Inconclusive(f"{analysis.sweep.name}: {analysis.headline.optimum.reason}")
    rec = analysis.recommended
    if rec is None or opt_float(rec.get("pool_size")) is None:
        raise UsageError(
            f"{analysis.sweep.name}: no pool config to recommend (the input has no pool_size)"
        )
    direct: int | None = None
    direct_why = ""
    if opt_float(rec.get("pg_max_size")) is not None:  # blank: the service has no asyncpg pool
        direct, direct_why = asyncpg_pool(rec)
    target = analysis.sweep.spec.target if analysis.sweep.spec is not None else None
    limit = opt_float(rec.get("http_concurrency_limit"))
    if target is not None and "http_concurrency_limit" not in target.env_names():
        limit = None  # the sample app's semaphore: the service never saw it
    header = [
        f"# poolbench recommendation from {analysis.sweep.name}",
        f"# {analysis.headline.label}: {analysis.headline.optimum.reason}",
        f"# measured: {num(rec['rps'])} rps, p50 {num(rec['p50_ms'])} ms, "
        f"p95 {num(rec['p95_ms'])} ms, p99 {num(rec['p99_ms'])} ms, "
        f"errors {pct(rec['error_rate'])}",
        f"# SLO: {analysis.verdict()}",
    ]
    config = PoolConfig(
        pool_size=int(rec["pool_size"]),
        max_overflow=int(rec["max_overflow"]),
        pool_why=analysis.headline.optimum.reason,
        pg_max_size=direct,
        pg_why=direct_why,
        p95_slo_ms=analysis.slo.p95_ms,
        http_concurrency_limit=None if limit is None else int(limit),
        fleet=analysis.fleet,
        warnings=analysis.warnings,
        pre_ping_cost=pre_ping_cost(rec, analysis.sweep.runs),
        env_names=target.env_names() if target is not None else None,
    )
    return config_snippet(header, config, idle_timeout_s)
