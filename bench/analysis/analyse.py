"""From a loaded sweep to an Analysis: per-workload optimum, USL fit and every model's error."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from bench.analysis.aggregate import WORKLOAD_COLUMNS, aggregate
from bench.analysis.load import Sweep
from bench.analysis.models import (
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
from bench.analysis.optimum import Optimum, find_optimum, measured_rps_at, usl_series
from bench.analysis.thresholds import THRESHOLD_METRICS
from bench.errors import UsageError
from bench.fmt import num, opt_float, pct
from bench.spec import Fleet, Slo

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
    """Optimum, fit and models for one workload (scenario, users, queries, latency)."""

    key: dict[str, Any]
    label: str
    table: pd.DataFrame
    optimum: Optimum
    inputs: SizingInputs | None
    usl: UslFit | None
    usl_note: str
    usl_overflow: float | None
    models: list[ModelComparison]
    seed_explanation: str


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
        parts.append(f"{column}={value:g}" if isinstance(value, float) else f"{column}={value}")
    return " ".join(parts) or "all runs"


def uses_database(table: pd.DataFrame) -> bool:
    """False when telemetry shows the workload never checked out a pooled DB connection.

    Then the pool models do not apply (a fan-out handler holds no connection), and the request
    time is no stand-in for a hold time. Without telemetry we cannot tell, so assume it does.
    """
    peaks = pd.to_numeric(table["peak_checked_out"], errors="coerce").dropna()
    return peaks.empty or bool((peaks > 0).any())


def _analyse_workload(
    key: dict[str, Any],
    table: pd.DataFrame,
    *,
    slo: Slo,
    fleet: Fleet | None,
    tolerance: float,
    db_cores: int,
    p99_wait_ms: float,
    headroom: float,
) -> WorkloadAnalysis:
    optimum = find_optimum(table, slo, fleet, tolerance)
    row = optimum.row
    usl: UslFit | None = None
    usl_note = ""
    usl_overflow = None
    series, overflow = usl_series(table, row)
    if table["pool_size"].notna().any():
        try:
            usl = fit_usl(series["connections"].to_numpy(), series["rps"].to_numpy())
            usl_overflow = overflow
        except ValueError as exc:
            usl_note = str(exc)
    else:
        usl_note = "pool size unknown"
    inputs = None
    models: list[ModelComparison] = []
    explanation = ""
    concurrency = opt_float(key.get("users"))
    if row is not None and concurrency is not None and uses_database(table):
        hold_time_ms = (
            opt_float(row.get("hold_time_mean_ms"))
            or opt_float(table["hold_time_mean_ms"].median())
            # No app telemetry: with a session per request, hold time ~ request time.
            or opt_float(row.get("mean_ms"))
        )
        if hold_time_ms:
            inputs = SizingInputs(
                concurrency=concurrency,
                queries_per_request=opt_float(key.get("queries_per_request")) or 1.0,
                hold_time_ms=hold_time_ms,
                target_rps=opt_float(row.get("rps")),
                db_cores=db_cores,
                p99_wait_ms=p99_wait_ms,
                headroom=headroom,
            )
            opt_connections = float(row["connections"])
            for model in size_all(inputs, usl, usl_note, tolerance):
                models.append(_compare(model, table, opt_connections, fleet))
            explanation = seed_formula_explanation(
                inputs.concurrency, inputs.queries_per_request, hold_time_ms, inputs.offered_rps
            )
    return WorkloadAnalysis(
        key=key,
        label=workload_label(key),
        table=table,
        optimum=optimum,
        inputs=inputs,
        usl=usl,
        usl_note=usl_note,
        usl_overflow=usl_overflow,
        models=models,
        seed_explanation=explanation,
    )


def _compare(
    model: ModelResult, table: pd.DataFrame, opt_connections: float, fleet: Fleet | None
) -> ModelComparison:
    if model.pool_size is None:
        return ModelComparison(
            model=model, size_error=None, measured_rps=None, rps_error_pct=None, fits_fleet=None
        )
    measured = measured_rps_at(table, model.pool_size)
    error = None
    if measured and model.predicted_rps is not None and math.isfinite(model.predicted_rps):
        error = 100.0 * (model.predicted_rps - measured) / measured
    return ModelComparison(
        model=model,
        size_error=model.pool_size - opt_connections,
        measured_rps=measured,
        rps_error_pct=error,
        fits_fleet=None if fleet is None else fleet.fits(model.pool_size),
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
    from bench.analysis.warnings import collect_warnings

    if not 0 <= tolerance < 1:
        raise UsageError(f"tolerance must be in [0, 1), got {tolerance}")
    fleet = fleet if fleet is not None else sweep.fleet()
    table = aggregate(sweep.runs)
    slo = sweep.slo
    cores = db_cores or _db_cores(sweep)
    workloads = []
    for key_values, group in table.groupby(list(WORKLOAD_COLUMNS), dropna=False, sort=True):
        key = dict(zip(WORKLOAD_COLUMNS, key_values, strict=True))
        workloads.append(
            _analyse_workload(
                key,
                group.reset_index(drop=True),
                slo=slo,
                fleet=fleet,
                tolerance=tolerance,
                db_cores=cores,
                p99_wait_ms=p99_wait_ms,
                headroom=headroom,
            )
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
