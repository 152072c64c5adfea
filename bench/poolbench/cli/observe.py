"""`poolbench observe URL`: every model's pool size from a live service's telemetry."""

from __future__ import annotations

import os
from typing import Annotated

import typer
from rich.table import Table

from poolbench.analysis.inputs import SizingOptions
from poolbench.analysis.models import DEFAULT_HEADROOM, DEFAULT_P99_WAIT_MS
from poolbench.analysis.summary import jsonable
from poolbench.cli.common import (
    DbCoresOpt,
    HeadroomOpt,
    IdleTimeoutOpt,
    InstancesOpt,
    JsonOpt,
    MaxConnectionsOpt,
    P99WaitOpt,
    ReservedOpt,
    SpindlesOpt,
    WorkersOpt,
    console,
    models_table,
    usage_errors,
    write_json,
)
from poolbench.fmt import num
from poolbench.instrumentation.readings import PoolWindow
from poolbench.objectives import Fleet
from poolbench.observe import (
    DEFAULT_POLL_S,
    Observation,
    observation_json,
    observe_snippet,
    parse_duration,
    pool_bound,
    size_pool,
    warnings,
)
from poolbench.observe import observe as observe_service

MISSING = "missing"


def _inputs_table(observation: Observation, options: SizingOptions, cores_given: bool) -> Table:
    window = observation.window
    where = f"{window.source}, difference over {window.window_s:.1f} s"
    sampled = f"{window.source}, {observation.polls} polls {observation.poll_s:g} s apart"
    table = Table(title=f"Inputs measured at {observation.url}")
    for header in ("input", "value", "source"):
        table.add_column(header, justify="right" if header == "value" else "left")

    def row(name: str, value: float | None, source: str, digits: int = 1) -> None:
        table.add_row(name, MISSING if value is None else num(value, digits), source)

    def per_lease(name: str, pool: PoolWindow, value: float | None, source: str) -> None:
        if pool.leases == 0:  # undefined, not missing: nothing was leased
            table.add_row(name, "-", "no leases in the window")
        else:
            row(name, value, source, 2)

    row("request rate (rps)", window.rps, f"{where}: completed requests / window")
    row("mean in flight", window.inflight_mean, f"{where}: request-seconds / window", 2)
    row("peak in flight", observation.peak_in_flight, f"{sampled} (a lower bound)", 0)
    row("statements per request", window.statements_per_request, where, 2)
    for name, pool in window.pools.items():
        row(f"{name}: size + overflow", pool_bound(pool), "configured", 0)
        row(f"{name}: leases/s", pool.lease_rps, f"{where}: checkouts / window", 2)
        per_lease(f"{name}: hold time mean (ms)", pool, pool.hold_time_mean_ms, where)
        cv_source = f"{where}: from the sum of squares"
        per_lease(f"{name}: hold time cv", pool, pool.hold_time_cv, cv_source)
        per_lease(f"{name}: acquire wait mean (ms)", pool, pool.acquire_wait_mean_ms, where)
        p95_source = f"{where}, bucketed"
        per_lease(f"{name}: acquire wait p95 (ms)", pool, pool.acquire_wait_p95_ms, p95_source)
        row(f"{name}: timeouts", pool.timeouts, where, 0)
        peak = observation.peak_checked_out.get(name)
        row(f"{name}: peak checked out", peak, f"{sampled} (a lower bound)", 0)
    cores = "--db-cores" if cores_given else "this host's cores (give --db-cores: the database's)"
    row("db cores", options.db_cores, cores, 0)
    row("Erlang C wait budget (ms, p99)", options.p99_wait_ms, "--p99-wait-ms", 1)
    row("headroom", options.headroom, "--headroom", 2)
    return table


@usage_errors
def observe(
    url: Annotated[str, typer.Argument(help="The instrumented service, e.g. http://host:8000.")],
    duration: Annotated[
        str, typer.Option("--for", help="How long to watch: 60s, 90 (seconds), 2m.")
    ] = "60s",
    poll_s: Annotated[
        float, typer.Option(help="Seconds between polls (peaks are sampled).", min=0.1, max=60)
    ] = DEFAULT_POLL_S,
    db_cores: DbCoresOpt = None,
    spindles: SpindlesOpt = 0,
    p99_wait_ms: P99WaitOpt = DEFAULT_P99_WAIT_MS,
    headroom: HeadroomOpt = DEFAULT_HEADROOM,
    slo_p95_ms: Annotated[
        float | None,
        typer.Option(
            "--slo-p95-ms", help="Your p95 objective: sets a fail-fast pool_timeout.", min=1
        ),
    ] = None,
    idle_timeout_s: IdleTimeoutOpt = None,
    instances: InstancesOpt = None,
    workers_per_instance: WorkersOpt = None,
    max_connections: MaxConnectionsOpt = None,
    reserved: ReservedOpt = None,
    json_path: JsonOpt = None,
) -> None:
    """Watch a live instrumented service (never resetting it) and size its pools by every model."""
    duration_s = parse_duration(duration)
    given = {
        "instances": instances,
        "workers_per_instance": workers_per_instance,
        "max_connections": max_connections,
        "reserved_connections": reserved,
    }
    fleet = Fleet().with_overrides(**given) if any(v is not None for v in given.values()) else None
    options = SizingOptions(
        db_cores=db_cores or os.cpu_count() or 1,
        spindles=spindles,
        headroom=headroom,
        p99_wait_ms=p99_wait_ms,
    )
    observation = observe_service(url, duration_s, poll_s=poll_s)
    window = observation.window
    console.print(
        f"Observed {observation.url} for {window.window_s:.1f} s ({window.source}, nothing "
        f"reset): {num(window.completed, 0)} requests, {num(window.rps)} rps; pools "
        f"instrumented: {', '.join(window.pools) or 'none'}",
        markup=False,
    )
    console.print(_inputs_table(observation, options, db_cores is not None))
    sizings = {name: size_pool(observation, name, options) for name in window.pools}
    for sizing in sizings.values():
        if sizing.models:
            title = f"{sizing.pool} pool: connections per process by model"
            console.print(models_table(title, sizing.models, fleet))
        console.print(
            f"{sizing.pool}: "
            + (f"use {sizing.size}: {sizing.why}" if sizing.size is not None else sizing.why),
            markup=False,
        )
    missing = list(window.missing) + list(observation.missing_series)
    if missing:
        console.print(f"Missing from {window.source}: {', '.join(missing)}", markup=False)
    snippet = observe_snippet(
        observation, sizings, p95_slo_ms=slo_p95_ms, fleet=fleet, idle_timeout_s=idle_timeout_s
    )
    if snippet is None:
        console.print("No snippet: the sqlalchemy pool has no size (see above).", markup=False)
        for warning in warnings(observation):
            console.print(f"  - {warning}", markup=False)
    else:
        typer.echo("")
        typer.echo(snippet)
    if json_path is not None:
        write_json(json_path, jsonable(observation_json(observation, sizings, snippet)))
