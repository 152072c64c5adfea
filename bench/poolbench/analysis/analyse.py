"""From a loaded sweep to an Analysis: per-workload optimum, USL fit and every model's error."""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from poolbench.analysis.aggregate import (
    BASE_WORKLOAD_COLUMNS,
    CONFIG_COLUMNS,
    SHAPE_DEFAULTS,
    WORKLOAD_COLUMNS,
    aggregate,
    matching,
    untrusted,
)
from poolbench.analysis.load import Sweep, endpoint_figures
from poolbench.analysis.models import (
    DEFAULT_HEADROOM,
    DEFAULT_P99_WAIT_MS,
    DEFAULT_TOLERANCE,
    ModelResult,
    SizingInputs,
    UslFit,
    fit_usl,
    seed_formula_explanation,
    size_all,
)
from poolbench.analysis.noise import NoiseVerdict, noise_verdict
from poolbench.analysis.optimum import (
    Optimum,
    find_optimum,
    find_slo_optimum,
    measured_rps_at,
    row_process_connections,
    throughput_curve,
    usl_series,
)
from poolbench.analysis.thresholds import THRESHOLD_METRICS
from poolbench.errors import UsageError
from poolbench.fmt import num, opt_float, pct
from poolbench.objectives import Demand, Fleet, Slo
from poolbench.spec import CAPACITY, SLO

# The USL needs a throughput curve in which every point saturates: a closed loop.
CAPACITY_NEEDED = (
    "needs a capacity sweep (kind = capacity or both: closed loop, users well above the pool); "
    "an SLO sweep's throughput plateaus at the offered rate, which is not contention"
)

# The columns that identify a config in the tables (the recommended row is marked by them).
RECOMMENDED_KEY = (
    "scenario",
    "pool_size",
    "max_overflow",
    "http_concurrency_limit",
    "users",
    "queries_per_request",
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


@dataclass(frozen=True, kw_only=True)
class Analysis:
    """Everything the terminal, HTML and JSON outputs show."""

    sweep: Sweep
    table: pd.DataFrame
    slo: Slo
    fleet: Fleet | None
    tolerance: float
    workloads: list[WorkloadAnalysis]
    headline: WorkloadAnalysis
    warnings: list[str] = field(default_factory=list)

    @property
    def recommended(self) -> dict[str, Any] | None:
        """The recommended config's aggregated row."""
        return self.headline.optimum.row

    def is_recommended(self, row: Mapping[Any, Any]) -> bool:
        """True for the aggregated row of the recommended config (blank columns match blank)."""
        rec = self.recommended
        return rec is not None and all(
            _same(row.get(column), rec.get(column)) for column in RECOMMENDED_KEY
        )

    def metrics(self) -> dict[str, float]:
        """Threshold metrics of the recommended config."""
        row = self.recommended or {}
        values = {name: opt_float(row.get(name)) for name in THRESHOLD_METRICS}
        return {name: math.nan if v is None else v for name, v in values.items()}

    def verdict(self) -> str:
        """One line: does the recommended config meet the SLO, with its numbers."""
        row = self.recommended
        if self.headline.optimum.inconclusive:
            return "INCONCLUSIVE: no trusted run (see the warnings for what to change)"
        if row is None:
            return "no usable runs"
        figures = f"p95 {num(row['p95_ms'])} ms, errors {pct(row['error_rate'])}"
        if not self.slo.is_set:
            return f"no SLO set ({figures})"
        status = "PASS" if self.headline.optimum.slo_met else "FAIL"
        return f"{status}: {figures} against {self.slo.describe()}"


def _same(a: Any, b: Any) -> bool:
    return bool(a == b) or (pd.isna(a) and pd.isna(b))


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


def sizing_inputs(
    reference: Mapping[str, Any],
    slo: Slo,
    *,
    db_cores: int,
    headroom: float,
    p99_wait_ms: float = DEFAULT_P99_WAIT_MS,
) -> tuple[SizingInputs | None, str]:
    """Every model input measured in the reference run, and a note on any stand-in used."""
    notes = []
    concurrency = opt_float(reference.get("app_inflight_mean"))
    if concurrency is None:
        concurrency = opt_float(reference.get("users")) or 1.0
        notes.append("concurrency is the spec's users (the target serves no in-flight gauge)")
    queries = opt_float(reference.get("statements_per_request"))
    if queries is None or queries <= 0:
        queries = opt_float(reference.get("queries_per_request")) or 1.0
        notes.append("queries per request from the spec (no statement count)")
    hold_time_ms = opt_float(reference.get("hold_time_mean_ms"))
    if hold_time_ms is None:
        # No app telemetry: with a session per request, hold time ~ request time.
        hold_time_ms = opt_float(reference.get("mean_ms"))
        notes.append("hold time is the mean request time (no pool telemetry)")
    if not hold_time_ms:
        return None, "no hold time measured"
    offered = opt_float(reference.get("offered_rps"))
    target_rps = offered if offered else opt_float(reference.get("rps"))
    service_p95 = opt_float(reference.get("p95_ms"))
    budget, quantile = p99_wait_ms, 0.99
    if slo.p95_ms is not None and service_p95 is not None:
        # The SLO's wait budget: what the p95 allows beyond the service time at an ample pool.
        budget, quantile = max(slo.p95_ms - service_p95, 0.1), 0.95
    peak_concurrency = opt_float(reference.get("app_inflight_peak"))
    workers = Demand.of(reference).app_workers
    if workers > 1:
        # Pools are per process and the workers share the load: size one worker's pool.
        concurrency /= workers
        peak_concurrency = None if peak_concurrency is None else peak_concurrency / workers
        target_rps = None if target_rps is None else target_rps / workers
        notes.append(f"rate and concurrency per worker process ({workers} workers share them)")
    inputs = SizingInputs(
        concurrency=concurrency,
        peak_concurrency=peak_concurrency,
        queries_per_request=queries,
        hold_time_ms=hold_time_ms,
        target_rps=target_rps,
        db_cores=db_cores,
        headroom=headroom,
        wait_budget_ms=budget,
        wait_quantile=quantile,
        hold_time_cv=opt_float(reference.get("hold_time_cv")),
    )
    return inputs, "; ".join(notes)


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


def _analyse_workload(
    key: dict[str, Any],
    table: pd.DataFrame,
    capacity: pd.DataFrame,
    runs: pd.DataFrame,
    *,
    experiment: str,
    slo: Slo,
    fleet: Fleet | None,
    tolerance: float,
    db_cores: int,
    p99_wait_ms: float,
    headroom: float,
    endpoints: Callable[[str], Mapping[str, Mapping[str, Any]]],
) -> WorkloadAnalysis:
    if experiment == SLO:
        optimum = find_slo_optimum(table, runs, slo, fleet, CONFIG_COLUMNS, endpoints)
    else:
        optimum = find_optimum(table, slo, fleet, tolerance)
    usl, usl_note, usl_overflow = _fit_usl(capacity)
    pools_known = table["pool_size"].notna().any()
    reference = reference_run(runs) if pools_known and uses_database(table) else None
    inputs, inputs_note = None, ""
    models: list[ModelComparison] = []
    explanation = ""
    row = optimum.row
    if reference is not None and row is not None:
        inputs, inputs_note = sizing_inputs(
            reference, slo, db_cores=db_cores, headroom=headroom, p99_wait_ms=p99_wait_ms
        )
    elif pools_known and uses_database(table):
        inputs_note = (
            "no reference run: every trusted run was pool-bound; add a larger pool_size so the "
            "models can be fed from an ample pool"
        )
    if inputs is not None and row is not None:
        opt_connections = float(row["connections"])
        # A model sizes pool_size + max_overflow; the other pools and the pooler stay the optimum's.
        extra = row_process_connections(row) - opt_connections
        demand = dataclasses.replace(Demand.of(row), measured_peak=None)
        curve = throughput_curve(table)
        for model in size_all(inputs, usl, usl_note, tolerance):
            models.append(_compare(model, table, curve, opt_connections, fleet, extra, demand))
        explanation = seed_formula_explanation(
            inputs.concurrency, inputs.queries_per_request, inputs.hold_time_ms, inputs.offered_rps
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
        else fleet.fits(dataclasses.replace(demand, pools=model.pool_size + other_pools)),
    )


def _db_cores(sweep: Sweep) -> int:
    cores = sweep.runs["host_cores"].dropna()
    if not cores.empty:
        return max(1, int(cores.median()))
    host = sweep.manifest.get("host")
    if isinstance(host, dict) and (value := opt_float(host.get("cores"))):
        return max(1, int(value))
    return 1


def analyse(
    sweep: Sweep,
    *,
    fleet: Fleet | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
    db_cores: int | None = None,
    p99_wait_ms: float = DEFAULT_P99_WAIT_MS,
    headroom: float = DEFAULT_HEADROOM,
) -> Analysis:
    """Aggregate a sweep and find the optimum and model errors for each workload.

    `fleet` defaults to the spec's (`sweep.fleet()`, which also takes overrides).
    """
    from poolbench.analysis.warnings import collect_warnings

    if not 0 <= tolerance < 1:
        raise UsageError(f"tolerance must be in [0, 1), got {tolerance}")
    fleet = fleet if fleet is not None else sweep.fleet()
    table = aggregate(sweep.runs)
    slo = sweep.slo
    settings: dict[str, Any] = {
        "slo": slo,
        "fleet": fleet,
        "tolerance": tolerance,
        "db_cores": db_cores or _db_cores(sweep),
        "p99_wait_ms": p99_wait_ms,
        "headroom": headroom,
        "endpoints": functools.partial(endpoint_figures, sweep),
    }
    workloads = []
    base = list(BASE_WORKLOAD_COLUMNS)
    for base_values, group in table.groupby(base, dropna=False, sort=True):
        key = dict(zip(base, base_values, strict=True))
        is_slo = group["experiment"] == SLO
        capacity = group[~is_slo]
        if is_slo.any():
            # The USL describes the capacity curve: one users value, the largest, per workload.
            curve = capacity[capacity["users"] == capacity["users"].max()]
            for (users, offered), rows in group[is_slo].groupby(
                ["users", "offered_rps"], dropna=False, sort=True
            ):
                target = key | {"users": users, "offered_rps": offered}
                runs = sweep.runs[matching(sweep.runs, target | {"experiment": SLO})]
                workloads.append(
                    _analyse_workload(target, rows, curve, runs, experiment=SLO, **settings)
                )
            continue
        for users, rows in capacity.groupby("users", dropna=False, sort=True):
            target = key | {"users": users}
            runs = sweep.runs[matching(sweep.runs, target)]
            runs = runs[runs["experiment"] != SLO]
            workloads.append(
                _analyse_workload(target, rows, rows, runs, experiment=CAPACITY, **settings)
            )
    # One setting must serve every workload measured: size for the most demanding one.
    headline = max(
        workloads,
        key=lambda w: (w.optimum.row is not None, (w.optimum.row or {}).get("connections", 0)),
    )
    analysis = Analysis(
        sweep=sweep,
        table=table,
        slo=slo,
        fleet=fleet,
        tolerance=tolerance,
        workloads=workloads,
        headline=headline,
    )
    analysis.warnings.extend(collect_warnings(analysis))
    return analysis
