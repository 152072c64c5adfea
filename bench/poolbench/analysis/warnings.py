"""Everything a reader must know before trusting a recommendation, as plain sentences."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from poolbench.analysis.load import Sweep
from poolbench.analysis.optimum import demands
from poolbench.analysis.semaphore import semaphore_warnings
from poolbench.analysis.workload import WorkloadAnalysis, uses_database
from poolbench.fmt import opt_float
from poolbench.objectives import Demand, Fleet, Slo
from poolbench.spec import ADAPTIVE


def _ids(frame: pd.DataFrame, limit: int = 4) -> str:
    ids = [str(v) for v in frame["run_id"].head(limit)]
    more = len(frame) - len(ids)
    return ", ".join(ids) + (f" and {more} more" if more > 0 else "")


def collect_warnings(
    sweep: Sweep, workloads: Sequence[WorkloadAnalysis], slo: Slo, fleet: Fleet | None
) -> list[str]:
    """Everything a reader must know before trusting the recommendation."""
    runs = sweep.runs
    out: list[str] = list(sweep.problems)
    spec = sweep.spec
    if spec is not None and spec.search == ADAPTIVE and len(runs) < len(spec.points()):
        out.append(
            f"an adaptive search (bench/sweep/search.py) ran {len(runs)} of the grid's "
            f"{len(spec.points())} runs: sizes away from the SLO boundary ran once or not at all, "
            "so the fitted models rest on fewer points (search = grid measures every point)"
        )
    if sweep.source == "locust":
        out.append(
            "plain Locust output: the pool config is unknown, so only latency, errors and "
            "thresholds are checked; run a sweep for sizing conclusions"
        )
    for label, what in (
        ("load_generator", "load-generator-bound (Locust CPU saturated)"),
        ("host_cpu", "host-CPU-bound (all cores busy together)"),
        ("app_cpu", "app-CPU-bound"),
    ):
        hit = runs[runs["bottleneck"] == label]
        if not hit.empty:
            out.append(f"{len(hit)} run(s) {what}, excluded from pool conclusions: {_ids(hit)}")
    warned = runs[runs["locust_cpu_warning"] & (runs["bottleneck"] != "load_generator")]
    if not warned.empty:
        out.append(f"Locust reported high CPU in {len(warned)} run(s): {_ids(warned)}")
    errors = runs[runs["error_rate"].fillna(0) > 0]
    if not errors.empty:
        out.append(
            f"{len(errors)} run(s) had errors (worst {errors['error_rate'].max():.2%}): "
            f"{_ids(errors.sort_values('error_rate', ascending=False))}"
        )
    timeouts = runs[runs["pool_timeouts"].fillna(0) > 0]
    if not timeouts.empty:
        out.append(
            f"{len(timeouts)} run(s) hit pool timeouts ({int(timeouts['pool_timeouts'].sum())} "
            f"in total): {_ids(timeouts)}"
        )
    out.extend(load_generator_warnings(runs))
    for workload in workloads:
        optimum = workload.optimum
        prefix = f"[{workload.label}] " if len(workloads) > 1 else ""
        if optimum.row is None:
            out.append(f"{prefix}no usable runs")
            continue
        if slo.is_set and not optimum.slo_met:
            out.append(f"{prefix}no config meets the SLO ({slo.describe()})")
        if not uses_database(workload.table):
            out.append(
                f"{prefix}no run checked out a database connection: the pool sizing models do "
                "not apply to this workload (see the semaphore and latency charts instead)"
            )
        demand = Demand.of(optimum.row)
        if fleet is not None and not fleet.fits(demand):
            out.append(
                f"{prefix}recommendation breaks the fleet budget ({demand.pools_named}): "
                f"{fleet.describe(demand)}"
            )
        out.extend(prefix + w for w in connection_warnings(optimum.row))
        if fleet is not None:
            broken = workload.table[[not fleet.fits(d) for d in demands(workload.table)]]
            if not broken.empty and len(broken) < len(workload.table):
                out.append(
                    f"{prefix}{len(broken)} of {len(workload.table)} configs exceed the fleet "
                    f"budget of {fleet.per_process} connections per process"
                )
        # Measured, so it holds for fan-out workloads that never touch the database too.
        out.extend(prefix + w for w in semaphore_warnings(optimum.row))
        if not uses_database(workload.table):
            continue  # the USL is not about this workload
        if not workload.usl and workload.usl_note and sweep.source != "locust":
            out.append(f"{prefix}USL fit skipped: {workload.usl_note}")
    return out


# A load generator sending this late (p95) is no longer keeping the offered schedule.
DEFAULT_LAG_WARN_MS = 10.0


def load_generator_warnings(runs: pd.DataFrame) -> list[str]:
    """Windows that measured nothing, arrivals the load generator dropped or sent late."""
    out: list[str] = []
    empty = runs[runs["requests"] == 0]
    if not empty.empty:
        out.append(
            f"{len(empty)} run(s) completed no request in the measured window, so they fail the "
            f"SLO ({int(empty['inflight_at_end'].fillna(0).sum())} requests still in flight at "
            f"the end): {_ids(empty)}"
        )
    dropped = runs[runs["dropped_arrivals"].fillna(0) > 0]
    if not dropped.empty:
        out.append(
            f"{len(dropped)} run(s) reached the open model's in-flight cap and dropped "
            f"{int(dropped['dropped_arrivals'].sum())} scheduled arrivals (the offered rate was "
            f"not sent; raise open_model_max_inflight or treat them as overloaded): "
            f"{_ids(dropped)}"
        )
    late = runs[runs["schedule_lag_p95_ms"].fillna(0) > DEFAULT_LAG_WARN_MS]
    if not late.empty:
        out.append(
            f"{len(late)} run(s) sent requests late (schedule lag p95 up to "
            f"{late['schedule_lag_p95_ms'].max():.1f} ms; their latency still counts from the "
            f"intended start): {_ids(late)}"
        )
    return out


def connection_warnings(row: Mapping[str, Any]) -> list[str]:
    """Cross-check the pools' sizes with the connections Postgres actually saw."""
    measured = opt_float(row.get("pg_peak_connections"))
    demand = Demand.of(row)
    if demand.pgbouncer_pool_size is not None:
        declared, whose = demand.pgbouncer_pool_size, "PgBouncer's default_pool_size allows"
    else:
        declared = demand.app_workers * demand.pools
        whose = f"{demand.pools_named} allow" + (
            f" in {demand.app_workers} workers" if demand.app_workers > 1 else ""
        )
    if measured is None or measured <= declared:
        return []
    return [
        f"Postgres saw {measured:g} connections from the app, more than {whose} "
        f"({declared:g}): something else opens connections; the fleet budget counts what "
        "Postgres saw"
    ]
