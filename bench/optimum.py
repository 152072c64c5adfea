"""From measured configs to a verdict: SLO, fleet budget, optimum, model errors, thresholds."""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from bench.errors import UsageError
from bench.load import UNTRUSTED_BOTTLENECKS, WORKLOAD_COLUMNS, Sweep, aggregate
from bench.models import (
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
from bench.spec import Fleet as SpecFleet

# The columns that identify a config in the tables (the recommended row is marked by them).
RECOMMENDED_KEY = (
    "scenario",
    "pool_size",
    "max_overflow",
    "http_concurrency_limit",
    "users",
    "queries_per_request",
)
# The spec's own [fleet] defaults, so a manifest without some keys reads as the runner would.
DEFAULT_FLEET = asdict(SpecFleet())
# Scenarios whose handlers may hold a DB session while awaiting downstream calls.
_CONTENDING_SCENARIO_RE = re.compile(r"fan.?out|mixed|downstream", re.IGNORECASE)


@dataclass(frozen=True, kw_only=True)
class Slo:
    """Service level objective from the spec's [slo] table (None: not set)."""

    p95_ms: float | None = None
    max_error_rate: float | None = None

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> Slo:
        """Read [slo] from a resolved spec dict."""
        table = spec.get("slo") or {}
        return cls(
            p95_ms=_opt_float(table.get("p95_ms")),
            max_error_rate=_opt_float(table.get("max_error_rate")),
        )

    @property
    def is_set(self) -> bool:
        """True when there is anything to check."""
        return self.p95_ms is not None or self.max_error_rate is not None

    def passes(self, p95_ms: float, error_rate: float) -> bool:
        """True when both figures are within the objective (a missing figure fails)."""
        if self.p95_ms is not None and not (p95_ms <= self.p95_ms):
            return False
        err = 0.0 if error_rate is None or math.isnan(error_rate) else error_rate
        return self.max_error_rate is None or err <= self.max_error_rate

    def describe(self) -> str:
        """Human summary, e.g. `p95 <= 250 ms, errors <= 1.00%`."""
        parts = []
        if self.p95_ms is not None:
            parts.append(f"p95 <= {self.p95_ms:g} ms")
        if self.max_error_rate is not None:
            parts.append(f"errors <= {self.max_error_rate:.2%}")
        return ", ".join(parts) or "no SLO set"


@dataclass(frozen=True, kw_only=True)
class Fleet:
    """Production connection budget: every worker of every instance opens its own pool."""

    instances: int
    workers_per_instance: int
    max_connections: int
    reserved_connections: int

    @classmethod
    def resolve(cls, spec: Mapping[str, Any], **overrides: int | None) -> Fleet | None:
        """[fleet] from the spec with CLI overrides on top; None when neither says anything."""
        table = dict(spec.get("fleet") or {})
        given = {k: v for k, v in overrides.items() if v is not None}
        if not table and not given:
            return None
        values = {**DEFAULT_FLEET, **table, **given}
        fleet = cls(**{k: int(values[k]) for k in DEFAULT_FLEET})
        if fleet.instances < 1 or fleet.workers_per_instance < 1:
            raise UsageError("fleet: instances and workers per instance must be >= 1")
        if fleet.budget < 1:
            raise UsageError(
                f"fleet: max_connections {fleet.max_connections} minus reserved "
                f"{fleet.reserved_connections} leaves no connections"
            )
        return fleet

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

    def total(self, connections: float) -> float:
        """Connections the whole fleet opens at `connections` per process."""
        return self.processes * connections

    def fits(self, connections: float) -> bool:
        """instances x workers x (pool_size + max_overflow) <= max_connections - reserved."""
        return self.total(connections) <= self.budget

    def describe(self, connections: float) -> str:
        """The budget arithmetic for one config."""
        verb = "<=" if self.fits(connections) else ">"
        return (
            f"{self.instances} instances x {self.workers_per_instance} workers x "
            f"{connections:g} connections = {self.total(connections):g} {verb} "
            f"{self.max_connections} - {self.reserved_connections} reserved = {self.budget}"
        )


@dataclass(frozen=True, kw_only=True)
class Optimum:
    """The chosen config of one workload and why."""

    row: dict[str, Any] | None
    slo_met: bool
    fits_fleet: bool | None
    best_rps: float
    reason: str
    excluded_configs: int = 0


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
        values = {name: _opt_float(row.get(name)) for name in THRESHOLD_METRICS}
        return {name: math.nan if v is None else v for name, v in values.items()}

    def verdict(self) -> str:
        """One line: does the recommended config meet the SLO, with its numbers."""
        row = self.recommended
        if row is None:
            return "no usable runs"
        figures = f"p95 {_fmt(row['p95_ms'])} ms, errors {_pct(row['error_rate'])}"
        if not self.slo.is_set:
            return f"no SLO set ({figures})"
        status = "PASS" if self.headline.optimum.slo_met else "FAIL"
        return f"{status}: {figures} against {self.slo.describe()}"


def _same(a: Any, b: Any) -> bool:
    return bool(a == b) or (pd.isna(a) and pd.isna(b))


def _opt_float(value: Any) -> float | None:
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else number


def _fmt(value: Any, digits: int = 1) -> str:
    number = _opt_float(value)
    return "-" if number is None else f"{number:.{digits}f}"


def _pct(value: Any) -> str:
    number = _opt_float(value)
    return "-" if number is None else f"{number:.2%}"


def find_optimum(
    table: pd.DataFrame,
    slo: Slo,
    fleet: Fleet | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
) -> Optimum:
    """Smallest config (fewest connections) meeting the SLO within `tolerance` of the best rps."""
    if table.empty:
        return Optimum(
            row=None, slo_met=False, fits_fleet=None, best_rps=math.nan, reason="no runs"
        )
    untrusted = table["bottleneck"].isin(UNTRUSTED_BOTTLENECKS)
    eligible = table[~untrusted & table["rps"].notna()]
    notes: list[str] = []
    if eligible.empty:
        eligible = table[table["rps"].notna()]
        notes.append("every config is CPU- or load-generator-bound: not a pool conclusion")
    if eligible.empty:
        return Optimum(
            row=None, slo_met=False, fits_fleet=None, best_rps=math.nan, reason="no throughput"
        )
    passing = eligible[
        [slo.passes(p, e) for p, e in zip(eligible["p95_ms"], eligible["error_rate"], strict=True)]
    ]
    slo_met = not passing.empty
    pool = passing if slo_met else eligible
    if not slo_met and slo.is_set:
        notes.append(f"no config meets the SLO ({slo.describe()}); showing the best throughput")
    best_rps = float(pool["rps"].max())
    near = pool[pool["rps"] >= (1 - tolerance) * best_rps]
    fits: bool | None = None
    if fleet is not None:
        fitting = pool[[fleet.fits(c) for c in pool["connections"]]]
        near_fitting = near[[fleet.fits(c) for c in near["connections"]]]
        if not near_fitting.empty:
            near, fits = near_fitting, True
        elif not fitting.empty:
            # Nothing near the best fits the budget: the best that fits beats one that can't run.
            near = fitting[fitting["rps"] == fitting["rps"].max()]
            fits = True
            notes.append(
                f"the fastest configs break the fleet budget ({fleet.per_process} connections "
                f"per process); chose the best that fits"
            )
        else:
            fits = False
            notes.append(f"no measured config fits the fleet budget ({fleet.budget} connections)")
    chosen = near.sort_values(
        ["connections", "rps", "p95_ms"], ascending=[True, False, True], kind="stable"
    ).iloc[0]
    within = (1 - chosen["rps"] / best_rps) if best_rps > 0 else 0.0
    reason = (
        f"fewest connections ({chosen['connections']:g}) within {tolerance:.0%} of the best "
        f"throughput {best_rps:.1f} rps ({within:.1%} below)"
    )
    if slo_met and slo.is_set:
        reason += f", meeting the SLO ({slo.describe()})"
    return Optimum(
        row={str(k): v for k, v in chosen.to_dict().items()},
        slo_met=slo_met if slo.is_set else True,
        fits_fleet=fits,
        best_rps=best_rps,
        reason="; ".join([reason, *notes]),
        excluded_configs=int(untrusted.sum()),
    )


def _workload_label(key: Mapping[str, Any]) -> str:
    parts = []
    for column in WORKLOAD_COLUMNS:
        value = key.get(column)
        if value is None or (isinstance(value, float) and math.isnan(value)) or value == "":
            continue
        parts.append(f"{column}={value:g}" if isinstance(value, float) else f"{column}={value}")
    return " ".join(parts) or "all runs"


def _measured_rps_at(table: pd.DataFrame, connections: float) -> float | None:
    """Measured throughput at a pool size, interpolated between measured sizes (None outside)."""
    eligible = table[~table["bottleneck"].isin(UNTRUSTED_BOTTLENECKS) & table["rps"].notna()]
    if eligible.empty:
        return None
    curve = eligible.groupby("connections")["rps"].max().sort_index()
    xs = curve.index.to_numpy(dtype=float)
    if connections < xs.min() or connections > xs.max():
        return None
    return float(np.interp(connections, xs, curve.to_numpy(dtype=float)))


def _usl_series(table: pd.DataFrame, optimum: Mapping[str, Any] | None) -> tuple[pd.DataFrame, Any]:
    """The throughput-vs-pool-size series to fit: one max_overflow, other pool axes fixed."""
    eligible = table[~table["bottleneck"].isin(UNTRUSTED_BOTTLENECKS) & table["rps"].notna()]
    if optimum is not None:
        for column in ("http_concurrency_limit", "pg_max_size"):
            value = optimum.get(column)
            if value is not None and not pd.isna(value):
                eligible = eligible[eligible[column] == value]
    if eligible.empty:
        return eligible, None
    sizes = eligible.groupby("max_overflow", dropna=False)["pool_size"].nunique()
    preferred = None if optimum is None else optimum.get("max_overflow")
    if preferred is not None and preferred in sizes.index and sizes.loc[preferred] >= sizes.max():
        overflow = preferred
    else:
        overflow = sizes.idxmax()
    series = eligible[eligible["max_overflow"] == overflow]
    return series, overflow


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
    series, overflow = _usl_series(table, row)
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
    concurrency = _opt_float(key.get("users"))
    if row is not None and concurrency is not None and uses_database(table):
        hold_time_ms = (
            _opt_float(row.get("hold_time_mean_ms"))
            or _opt_float(table["hold_time_mean_ms"].median())
            # No app telemetry: with a session per request, hold time ~ request time.
            or _opt_float(row.get("mean_ms"))
        )
        if hold_time_ms:
            inputs = SizingInputs(
                concurrency=concurrency,
                queries_per_request=_opt_float(key.get("queries_per_request")) or 1.0,
                hold_time_ms=hold_time_ms,
                target_rps=_opt_float(row.get("rps")),
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
        label=_workload_label(key),
        table=table,
        optimum=optimum,
        inputs=inputs,
        usl=usl,
        usl_note=usl_note,
        usl_overflow=usl_overflow,
        models=models,
        seed_explanation=explanation,
    )


def uses_database(table: pd.DataFrame) -> bool:
    """False when telemetry shows the workload never checked out a pooled DB connection.

    Then the pool models do not apply (a fan-out handler holds no connection), and the request
    time is no stand-in for a hold time. Without telemetry we cannot tell, so assume it does.
    """
    peaks = pd.to_numeric(table["peak_checked_out"], errors="coerce").dropna()
    return peaks.empty or bool((peaks > 0).any())


def _compare(
    model: ModelResult, table: pd.DataFrame, opt_connections: float, fleet: Fleet | None
) -> ModelComparison:
    if model.pool_size is None:
        return ModelComparison(
            model=model, size_error=None, measured_rps=None, rps_error_pct=None, fits_fleet=None
        )
    measured = _measured_rps_at(table, model.pool_size)
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
    for key in ("host_cores", "cores", "cpu_count"):
        value = _opt_float(sweep.manifest.get(key))
        if value:
            return max(1, int(value))
    host = sweep.manifest.get("host")
    if isinstance(host, dict) and (value := _opt_float(host.get("cores"))):
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
    """Aggregate a sweep and find the optimum and model errors for each workload."""
    if not 0 <= tolerance < 1:
        raise UsageError(f"tolerance must be in [0, 1), got {tolerance}")
    table = aggregate(sweep.runs)
    slo = Slo.from_spec(sweep.spec)
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


def _ids(frame: pd.DataFrame, limit: int = 4) -> str:
    ids = [str(v) for v in frame["run_id"].head(limit)]
    more = len(frame) - len(ids)
    return ", ".join(ids) + (f" and {more} more" if more > 0 else "")


def collect_warnings(analysis: Analysis) -> list[str]:
    """Everything a reader must know before trusting the recommendation."""
    runs = analysis.sweep.runs
    out: list[str] = []
    if analysis.sweep.source == "locust":
        out.append(
            "plain Locust output: the pool config is unknown, so only latency, errors and "
            "thresholds are checked; run a sweep for sizing conclusions"
        )
    for label, what in (
        ("load_generator", "load-generator-bound (Locust CPU saturated)"),
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
    fleet = analysis.fleet
    for workload in analysis.workloads:
        optimum = workload.optimum
        prefix = f"[{workload.label}] " if len(analysis.workloads) > 1 else ""
        if optimum.row is None:
            out.append(f"{prefix}no usable runs")
            continue
        if analysis.slo.is_set and not optimum.slo_met:
            out.append(f"{prefix}no config meets the SLO ({analysis.slo.describe()})")
        if not uses_database(workload.table):
            out.append(
                f"{prefix}no run checked out a database connection: the pool sizing models do "
                "not apply to this workload (see the semaphore and latency charts instead)"
            )
        if fleet is not None and not fleet.fits(optimum.row["connections"]):
            out.append(
                f"{prefix}recommendation breaks the fleet budget: "
                f"{fleet.describe(optimum.row['connections'])}"
            )
        if fleet is not None:
            broken = workload.table[[not fleet.fits(c) for c in workload.table["connections"]]]
            if not broken.empty and len(broken) < len(workload.table):
                out.append(
                    f"{prefix}{len(broken)} of {len(workload.table)} configs exceed the fleet "
                    f"budget of {fleet.per_process} connections per process"
                )
        if not uses_database(workload.table):
            continue  # neither the USL nor the semaphore-vs-pool check is about this workload
        if not workload.usl and workload.usl_note and analysis.sweep.source != "locust":
            out.append(f"{prefix}USL fit skipped: {workload.usl_note}")
        out.extend(prefix + w for w in semaphore_warnings(optimum.row))
    return out


def semaphore_warnings(row: Mapping[str, Any]) -> list[str]:
    """Flag a semaphore limit above pool capacity where fan-out and DB paths contend."""
    limit = _opt_float(row.get("http_concurrency_limit"))
    connections = _opt_float(row.get("connections"))
    if limit is None or connections is None or limit <= connections:
        return []
    scenario = str(row.get("scenario") or "")
    if _CONTENDING_SCENARIO_RE.search(scenario):
        return [
            f"http_concurrency_limit {limit:g} > pool capacity {connections:g}: a handler that "
            f"holds a DB session while awaiting downstream calls queues on the pool, not the "
            f"semaphore; release the session before fanning out or keep the limit <= "
            f"{connections:g}"
        ]
    return []


# --- k6-style thresholds -------------------------------------------------------------------

THRESHOLD_METRICS = ("p50_ms", "p95_ms", "p99_ms", "error_rate", "rps")
_OPERATORS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge,
    "<=": operator.le,
    "==": operator.eq,
    ">": operator.gt,
    "<": operator.lt,
}
_THRESHOLD_RE = re.compile(
    r"^\s*(?P<metric>[a-z0-9_]+)\s*(?P<op>>=|<=|==|>|<)\s*"
    r"(?P<value>[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?)\s*$"
)


@dataclass(frozen=True, kw_only=True)
class Threshold:
    """`metric op value`: the run fails when the condition is true (`--fail-on`)."""

    metric: str
    op: str
    value: float

    def __str__(self) -> str:
        return f"{self.metric}{self.op}{self.value:g}"

    def triggered(self, actual: float) -> bool:
        """True when the measured value matches the failure condition (NaN always fails)."""
        return math.isnan(actual) or _OPERATORS[self.op](actual, self.value)


def parse_threshold(text: str) -> Threshold:
    """Parse `p95_ms>200` style text; bad syntax raises UsageError."""
    match = _THRESHOLD_RE.match(text)
    if not match:
        raise UsageError(
            f"bad threshold {text!r}: expected METRIC OP NUMBER, e.g. 'p95_ms>200' "
            f"(operators > >= < <= ==)"
        )
    metric = match["metric"]
    if metric not in THRESHOLD_METRICS:
        raise UsageError(
            f"bad threshold {text!r}: unknown metric {metric!r} "
            f"(one of {', '.join(THRESHOLD_METRICS)})"
        )
    return Threshold(metric=metric, op=match["op"], value=float(match["value"]))


def check_thresholds(
    thresholds: list[Threshold], metrics: Mapping[str, float]
) -> list[tuple[Threshold, float]]:
    """The thresholds that were triggered, with the measured value."""
    return [(t, metrics[t.metric]) for t in thresholds if t.triggered(metrics[t.metric])]


# --- machine-readable summary --------------------------------------------------------------


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def summary(
    analysis: Analysis, thresholds: list[Threshold], failed: list[tuple[Threshold, float]]
) -> dict[str, Any]:
    """The `--json` document: recommendation, models, SLO verdict and thresholds."""
    failed_names = {str(t) for t, _ in failed}
    metrics = analysis.metrics()
    workloads = []
    for w in analysis.workloads:
        workloads.append(
            {
                "workload": w.label,
                "optimum": w.optimum.row,
                "reason": w.optimum.reason,
                "slo_met": w.optimum.slo_met,
                "fits_fleet": w.optimum.fits_fleet,
                "usl": None
                if w.usl is None
                else {
                    "sigma": w.usl.sigma,
                    "kappa": w.usl.kappa,
                    "lambda": w.usl.lam,
                    "peak_n": w.usl.peak_n,
                    "peak_rps": w.usl.peak_rps,
                    "r2": w.usl.r2,
                },
                "usl_note": w.usl_note,
                "models": [
                    {
                        "name": c.model.name,
                        "pool_size": c.model.pool_size,
                        "predicted_rps": c.model.predicted_rps,
                        "formula": c.model.formula,
                        "size_error": c.size_error,
                        "measured_rps": c.measured_rps,
                        "rps_error_pct": c.rps_error_pct,
                        "fits_fleet": c.fits_fleet,
                    }
                    for c in w.models
                ],
            }
        )
    fleet = analysis.fleet
    return _jsonable(
        {
            "sweep": analysis.sweep.name,
            "source": analysis.sweep.source,
            "recommendation": analysis.recommended,
            "slo": {
                "p95_ms": analysis.slo.p95_ms,
                "max_error_rate": analysis.slo.max_error_rate,
                "met": analysis.headline.optimum.slo_met if analysis.slo.is_set else None,
                "verdict": analysis.verdict(),
            },
            "fleet": None
            if fleet is None
            else {
                "instances": fleet.instances,
                "workers_per_instance": fleet.workers_per_instance,
                "max_connections": fleet.max_connections,
                "reserved_connections": fleet.reserved_connections,
                "per_process": fleet.per_process,
                "fits": analysis.headline.optimum.fits_fleet,
            },
            "workloads": workloads,
            "warnings": analysis.warnings,
            "thresholds": [
                {
                    "threshold": str(t),
                    "actual": metrics[t.metric],
                    "failed": str(t) in failed_names,
                }
                for t in thresholds
            ],
        }
    )
