"""`poolbench size`: every model's pool size without a benchmark, plus the fleet check."""

from __future__ import annotations

import math
import os
from typing import Annotated

import typer

from poolbench.analysis.models import (
    DEFAULT_HEADROOM,
    DEFAULT_P99_WAIT_MS,
    SizingInputs,
    deadlock_floor,
    request_hold_time_ms,
    seed_formula_explanation,
    size_all,
    throughput_ceiling_rps,
)
from poolbench.analysis.summary import size_summary
from poolbench.cli.common import (
    DbCoresOpt,
    HeadroomOpt,
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
from poolbench.errors import UsageError
from poolbench.objectives import Fleet


@usage_errors
def size(
    concurrency: Annotated[
        float, typer.Option(help="Concurrent requests per process (e.g. users).", min=1)
    ],
    queries_per_request: Annotated[
        float, typer.Option(help="Queries per request (one session per request).", min=1)
    ] = 1,
    hold_time_ms: Annotated[
        float | None,
        typer.Option(help="Connection hold time per request (checkout to checkin).", min=0),
    ] = None,
    per_query_ms: Annotated[
        float | None, typer.Option(help="Time per query, if hold time is unknown.", min=0)
    ] = None,
    overhead_ms: Annotated[
        float, typer.Option(help="Work between queries while the session is held.", min=0)
    ] = 0.0,
    target_rps: Annotated[
        float | None,
        typer.Option(
            help="Target requests/s per process (default: concurrency / hold time).", min=0
        ),
    ] = None,
    db_cores: DbCoresOpt = None,
    spindles: SpindlesOpt = 0,
    p99_wait_ms: P99WaitOpt = DEFAULT_P99_WAIT_MS,
    headroom: HeadroomOpt = DEFAULT_HEADROOM,
    connections_per_request: Annotated[
        int, typer.Option(help="Connections one request holds at once (deadlock floor).", min=1)
    ] = 1,
    instances: InstancesOpt = None,
    workers_per_instance: WorkersOpt = None,
    max_connections: MaxConnectionsOpt = None,
    reserved: ReservedOpt = None,
    json_path: JsonOpt = None,
) -> None:
    """Size a pool without a benchmark: every model's answer plus the fleet check."""
    if hold_time_ms is None:
        if per_query_ms is None:
            raise UsageError("give --hold-time-ms or --per-query-ms")
        hold_time_ms = request_hold_time_ms(queries_per_request, per_query_ms, overhead_ms)
    if hold_time_ms <= 0:
        raise UsageError("hold time must be > 0 ms")
    inputs = SizingInputs(
        concurrency=concurrency,
        queries_per_request=queries_per_request,
        hold_time_ms=hold_time_ms,
        target_rps=target_rps,
        db_cores=db_cores or os.cpu_count() or 1,
        spindles=spindles,
        wait_budget_ms=p99_wait_ms,
        headroom=headroom,
    )
    given = {
        "instances": instances,
        "workers_per_instance": workers_per_instance,
        "max_connections": max_connections,
        "reserved_connections": reserved,
    }
    fleet = Fleet().with_overrides(**given) if any(v is not None for v in given.values()) else None
    results = size_all(inputs, usl_note="needs a capacity sweep (>= 6 pool sizes)", corrected=True)
    floor = deadlock_floor(math.ceil(concurrency), connections_per_request)
    title = (
        f"Pool size per process: {concurrency:g} concurrent, {queries_per_request:g} "
        f"queries/request, hold {hold_time_ms:.1f} ms, {inputs.offered_rps:.1f} rps"
    )
    table = models_table(title, results, fleet)
    console.print(table)
    if connections_per_request > 1:
        console.print(
            f"Deadlock floor: {math.ceil(concurrency)} x ({connections_per_request} - 1) + 1 = "
            f"{floor} connections (a smaller pool can deadlock)."
        )
    if fleet is not None:
        console.print(
            f"Fleet: {fleet.processes} processes share {fleet.budget} connections: at most "
            f"{fleet.per_process} per process, a Little's-law ceiling of "
            f"{throughput_ceiling_rps(fleet.per_process, hold_time_ms):.1f} rps per process."
        )
    console.print(
        seed_formula_explanation(
            concurrency, queries_per_request, hold_time_ms, inputs.offered_rps
        ),
        markup=False,
    )
    if json_path is not None:
        write_json(json_path, size_summary(inputs, results, fleet, floor))
