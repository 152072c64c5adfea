"""The recommendation as a ready-to-paste config: env vars, engine kwargs, reasons and risks."""

from __future__ import annotations

import math

from bench.analysis.analyse import Analysis
from bench.errors import UsageError
from bench.fmt import num, pct

# SQLAlchemy's default; kept when there is no SLO to derive a fail-fast timeout from.
DEFAULT_POOL_TIMEOUT_S = 30
DEFAULT_POOL_RECYCLE_S = 1800


def pool_timeout_s(analysis: Analysis) -> int:
    """Fail fast: a request that waits ~4x its p95 budget for a connection has already failed."""
    if analysis.slo.p95_ms is None:
        return DEFAULT_POOL_TIMEOUT_S
    return max(1, math.ceil(4 * analysis.slo.p95_ms / 1000))


def recommend_snippet(analysis: Analysis, idle_timeout_s: float | None = None) -> str:
    """The env vars, engine kwargs, reasons and risk flags for the recommended config."""
    rec = analysis.recommended
    if rec is None or math.isnan(float(rec.get("pool_size", math.nan))):
        raise UsageError(
            f"{analysis.sweep.name}: no pool config to recommend (the input has no pool_size)"
        )
    pool = int(rec["pool_size"])
    overflow = int(rec["max_overflow"])
    timeout = pool_timeout_s(analysis)
    recycle = DEFAULT_POOL_RECYCLE_S
    if idle_timeout_s is not None:
        # Recycling below the shortest idle cutoff means no connection idle past it is reused.
        recycle = max(1, min(recycle, math.floor(idle_timeout_s * 0.8)))
    lines = [
        f"# poolbench recommendation from {analysis.sweep.name}",
        f"# {analysis.headline.label}: {analysis.headline.optimum.reason}",
        f"# measured: {num(rec['rps'])} rps, p50 {num(rec['p50_ms'])} ms, "
        f"p95 {num(rec['p95_ms'])} ms, p99 {num(rec['p99_ms'])} ms, "
        f"errors {pct(rec['error_rate'])}",
        f"# SLO: {analysis.verdict()}",
    ]
    if analysis.fleet is not None:
        lines.append(f"# fleet: {analysis.fleet.describe(rec['connections'])}")
    lines += [
        "",
        f"DB_POOL_SIZE={pool}",
        f"DB_MAX_OVERFLOW={overflow}",
        f"DB_POOL_TIMEOUT_S={timeout}",
        f"DB_POOL_RECYCLE_S={recycle}",
        "DB_POOL_PRE_PING=true",
    ]
    limit = rec.get("http_concurrency_limit")
    if limit is not None and not math.isnan(float(limit)):
        lines.append(f"HTTP_CONCURRENCY_LIMIT={int(limit)}")
    lines += [
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
        f"# - pool_size + max_overflow = {pool + overflow}: {analysis.headline.optimum.reason}.",
        f"# - pool_timeout={timeout} s: "
        + (
            f"~4x the p95 SLO ({analysis.slo.p95_ms:g} ms); a request waiting longer for a "
            "connection has already missed its SLO, so fail it fast instead of queueing."
            if analysis.slo.p95_ms is not None
            else "SQLAlchemy's default; set an SLO to derive a fail-fast timeout."
        ),
        f"# - pool_recycle={recycle} s and pool_pre_ping=True: connections that a server or "
        "network idle cutoff closed are replaced at checkout instead of failing a request.",
        "",
        "# Risks to check:",
        "# - Idle cutoffs between app and database close pooled connections: Postgres "
        "idle_session_timeout (off by default), PgBouncer server_idle_timeout (600 s default), "
        "cloud load balancers (e.g. AWS NLB 350 s, Azure LB 4 min). Keep pool_recycle below the "
        "shortest one (--idle-timeout-s) and keep pool_pre_ping=True (one round trip per "
        "checkout).",
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
    if analysis.fleet is not None and not analysis.fleet.fits(rec["connections"]):
        lines.append(
            f"# - FLEET BUDGET BROKEN: {analysis.fleet.describe(rec['connections'])}. "
            f"At most {analysis.fleet.per_process} connections per process fit."
        )
    lines += [f"# - {w}" for w in analysis.warnings]
    return "\n".join(lines)
