"""One workload of a sweep: its optimum, USL fit, reference run and every model's error."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import pandas as pd

from poolbench.analysis.aggregate import (
    CONFIG_COLUMNS,
    SHAPE_DEFAULTS,
    WORKLOAD_COLUMNS,
    untrusted,
)
from poolbench.analysis.inputs import (
    CONCURRENCY,
    HOLD_TIME,
    HOLD_TIME_CV,
    QUERIES,
    Measured,
    MeasuredInputs,
    SizingOptions,
    StandIn,
    measured_inputs,
)
from poolbench.analysis.models import (
    ModelResult,
    SizingInputs,
    UslFit,
    fit_usl,
    seed_formula_explanation,
)
from poolbench.analysis.noise import NoiseVerdict, noise_verdict
from poolbench.analysis.optimum import (
    Optimum,
    find_optimum,
    find_slo_optimum,
    measured_rps_at,
    throughput_curve,
    usl_series,
)
from poolbench.fmt import opt_float
from poolbench.objectives import Demand, Fleet, Slo
from poolbench.spec import SLO

# The USL needs a throughput curve in which every point saturates: a closed loop.
CAPACITY_NEEDED = (
    "needs a capacity sweep (kind = capacity or both: closed loop, users well above the pool); "
    "an SLO sweep's throughput plateaus at the offered rate, which is not contention"
)


@dataclass(frozen=True, kw_only=True)
class ModelComparison:
    """A model's recommendation next to what was measured."""

    model: ModelResult
    size_error: float | None
    measured_rps: float | None
    rps_error_pct: float | None
    fits_fleet: bool | None


@dataclass(frozen=True, kw_only=True)
class WorkloadAnalysis:
    """One workload (scenario, queries, latency, target load): its optimum, fit and models.

    `experiment` says where the optimum comes from: `slo` (open model at the target rate) or
    `capacity` (closed loop). `capacity_table` holds the workload's capacity points, the only
    ones the USL is fitted to. The models are fed from `reference`, one run a user could observe
    in production without knowing the answer, and judged against the measured optimum.
    """

    key: dict[str, Any]
    label: str
    experiment: str
    table: pd.DataFrame
    capacity_table: pd.DataFrame
    optimum: Optimum
    inputs: SizingInputs | None
    reference: dict[str, Any] | None
    inputs_note: str
    usl: UslFit | None
    usl_note: str
    usl_overflow: float | None
    models: list[ModelComparison]
    seed_explanation: str
    # The optimum against its neighbour, from the repetitions' spread (None: no optimum).
    noise: NoiseVerdict | None = None


def workload_label(key: Mapping[str, Any]) -> str:
    """`scenario=single_query users=40 ...`: the workload axes that have a value."""
    parts = []
    for column in WORKLOAD_COLUMNS:
        value = key.get(column)
        if value is None or (isinstance(value, float) and math.isnan(value)) or value == "":
            continue
        if SHAPE_DEFAULTS.get(column) == value:
            continue
        parts.append(f"{column}={value:g}" if isinstance(value, float) else f"{column}={value}")
    return " ".join(parts) or "all runs"


def uses_database(table: pd.DataFrame) -> bool:
    """False when telemetry shows the workload never checked out a pooled DB connection.

    Then the pool models do not apply (a fan-out handler holds no connection), and the request
    time is no stand-in for a hold time. Without telemetry we cannot tell, so assume it does.
    """
    peaks = pd.to_numeric(table["peak_checked_out"], errors="coerce").dropna()
    return peaks.empty or bool((peaks > 0).any())


def reference_run(runs: pd.DataFrame) -> dict[str, Any] | None:
    """The run a user could observe in production: trusted, not pool-bound, the most connections.

    An ample pool at the target load: its concurrency, statements, hold time and rate are what
    production telemetry shows, measured without knowing the optimum.
    """
    candidates = runs[~untrusted(runs) & (runs["bottleneck"] != "pool") & runs["rps"].notna()]
    if candidates.empty:
        return None
    ordered = candidates.sort_values(
        ["connections", "p95_ms", "repetition"], ascending=[False, True, False], kind="stable"
    )
    return {str(k): v for k, v in ordered.iloc[0].to_dict().items()}


def _fit_usl(capacity: pd.DataFrame) -> tuple[UslFit | None, str, float | None]:
    if capacity.empty:
        return None, CAPACITY_NEEDED, None
    if capacity["pool_size"].isna().all():
        return None, "pool size unknown", None
    series, overflow = usl_series(capacity, None)
    try:
        return fit_usl(series["connections"].to_numpy(), series["rps"].to_numpy()), "", overflow
    except ValueError as exc:
        return None, str(exc), None


def reference_figures(reference: Mapping[str, Any]) -> Measured:
    """What the reference run measured, with the sweep's own design as the stand-ins."""
    offered = opt_float(reference.get("offered_rps"))
    users = opt_float(reference.get("users"))
    return Measured(
        concurrency=opt_float(reference.get("app_inflight_mean")),
        peak_concurrency=opt_float(reference.get("app_inflight_peak")),
        queries_per_request=opt_float(reference.get("statements_per_request")),
        hold_time_ms=opt_float(reference.get("hold_time_mean_ms")),
        target_rps=offered if offered else opt_float(reference.get("rps")),
        hold_time_cv=opt_float(reference.get("hold_time_cv")),
        service_p95_ms=opt_float(reference.get("p95_ms")),
        workers=Demand.of(reference).app_workers,
        stand_ins={
            CONCURRENCY: StandIn(
                value=users if users else None,
                note="concurrency is the spec's users (the target serves no in-flight gauge)",
            ),
            QUERIES: StandIn(
                value=opt_float(reference.get("queries_per_request")),
                note="queries per request from the spec (no statement count)",
            ),
            # No app telemetry: with a session per request, hold time ~ request time.
            HOLD_TIME: StandIn(
                value=opt_float(reference.get("mean_ms")),
                note="hold time is the mean request time (no pool telemetry)",
            ),
        },
    )


def _inputs_note(built: MeasuredInputs) -> str:
    missing = sorted(built.missing)
    return "; ".join([*built.notes, *([f"not measured: {', '.join(missing)}"] if missing else [])])


def analyse_workload(
    key: dict[str, Any],
    table: pd.DataFrame,
    capacity: pd.DataFrame,
    runs: pd.DataFrame,
    *,
    experiment: str,
    slo: Slo,
    fleet: Fleet | None,
    tolerance: float,
    options: SizingOptions,
    endpoints: Callable[[str], Mapping[str, Mapping[str, Any]]],
) -> WorkloadAnalysis:
    """Find one workload's optimum, fit the USL and judge every model against the optimum."""
    if experiment == SLO:
        optimum = find_slo_optimum(table, runs, slo, fleet, CONFIG_COLUMNS, endpoints)
    else:
        optimum = find_optimum(table, slo, fleet, tolerance)
    usl, usl_note, usl_overflow = _fit_usl(capacity)
    pools_known = table["pool_size"].notna().any()
    reference = reference_run(runs) if pools_known and uses_database(table) else None
    inputs: SizingInputs | None = None
    inputs_note = ""
    models: list[ModelComparison] = []
    explanation = ""
    row = optimum.row
    if reference is not None and row is not None:
        built = measured_inputs(reference_figures(reference), options, slo_p95_ms=slo.p95_ms)
        inputs_note = _inputs_note(built)
        opt_connections = float(row["connections"])
        # A model sizes pool_size + max_overflow; the other pools and the pooler stay the optimum's.
        demand = replace(Demand.of(row), measured_peak=None)
        extra = demand.pools - opt_connections
        curve = throughput_curve(table)
        for model in built.models(usl, usl_note, tolerance):
            models.append(_compare(model, table, curve, opt_connections, fleet, extra, demand))
        if not built.missing - {HOLD_TIME_CV}:
            # Every figure shown as measured was measured (or a stand-in the note names).
            inputs = built.inputs
            explanation = seed_formula_explanation(
                inputs.concurrency,
                inputs.queries_per_request,
                inputs.hold_time_ms,
                inputs.offered_rps,
            )
    elif pools_known and uses_database(table):
        inputs_note = (
            "no reference run: every trusted run was pool-bound; add a larger pool_size so the "
            "models can be fed from an ample pool"
        )
    return WorkloadAnalysis(
        key=key,
        label=workload_label(key),
        experiment=experiment,
        table=table,
        capacity_table=capacity,
        optimum=optimum,
        inputs=inputs,
        reference=reference,
        inputs_note=inputs_note,
        usl=usl,
        usl_note=usl_note,
        usl_overflow=usl_overflow,
        models=models,
        seed_explanation=explanation,
        noise=noise_verdict(table, row, slo),
    )


def _compare(
    model: ModelResult,
    table: pd.DataFrame,
    curve: pd.Series,
    opt_connections: float,
    fleet: Fleet | None,
    other_pools: float,
    demand: Demand,
) -> ModelComparison:
    if model.pool_size is None:
        return ModelComparison(
            model=model, size_error=None, measured_rps=None, rps_error_pct=None, fits_fleet=None
        )
    measured = measured_rps_at(table, model.pool_size, curve)
    error = None
    if measured and model.predicted_rps is not None and math.isfinite(model.predicted_rps):
        error = 100.0 * (model.predicted_rps - measured) / measured
    return ModelComparison(
        model=model,
        size_error=model.pool_size - opt_connections,
        measured_rps=measured,
        rps_error_pct=error,
        fits_fleet=None
        if fleet is None
        else fleet.fits(replace(demand, pools=model.pool_size + other_pools)),
    )
