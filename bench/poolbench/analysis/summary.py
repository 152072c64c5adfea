"""The machine-readable summary (`--json`): recommendation, models, SLO verdict, thresholds."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from poolbench.analysis.analyse import Analysis
from poolbench.analysis.models import ModelResult, SizingInputs
from poolbench.analysis.thresholds import Threshold
from poolbench.analysis.workload import ModelComparison
from poolbench.objectives import Demand, Fleet


def model_json(result: ModelResult, fleet: Fleet | None) -> dict[str, Any]:
    """One model's answer as JSON (used by `--json` of analyze and of size)."""
    return {
        "name": result.name,
        "pool_size": result.pool_size,
        "predicted_rps": result.predicted_rps,
        "formula": result.formula,
        "inputs": dict(result.inputs),
        "fits_fleet": None
        if fleet is None or result.pool_size is None
        else fleet.fits(result.pool_size),
    }


def comparison_json(
    comparison: ModelComparison, fleet: Fleet | None, reference_run: str | None
) -> dict[str, Any]:
    """A model's answer next to what was measured, as JSON (fits_fleet counts both pools)."""
    return model_json(comparison.model, fleet) | {
        "reference_run": reference_run,
        "fits_fleet": comparison.fits_fleet,
        "size_error": comparison.size_error,
        "measured_rps": comparison.measured_rps,
        "rps_error_pct": comparison.rps_error_pct,
    }


def jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
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
                "experiment": w.experiment,
                "next_smaller": w.optimum.next_smaller,
                # The optimum against its neighbour, from the repetitions' spread.
                "noise": None if w.noise is None else dataclasses.asdict(w.noise),
                "inconclusive": w.optimum.inconclusive,
                "reference_run": None if w.reference is None else w.reference["run_id"],
                "inputs_note": w.inputs_note,
                "models": [
                    comparison_json(
                        c, analysis.fleet, None if w.reference is None else w.reference["run_id"]
                    )
                    for c in w.models
                ],
            }
        )
    fleet = analysis.fleet
    return jsonable(
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
                "pgbouncer_instances": fleet.pgbouncer_instances,
                "per_process": fleet.per_process,
                # Every pool the recommended config's process opens (SQLAlchemy + asyncpg).
                "recommended_per_process": None
                if analysis.recommended is None
                else Demand.of(analysis.recommended).pools,
                "measured_peak_connections": None
                if analysis.recommended is None
                else analysis.recommended.get("pg_peak_connections"),
                # What the fleet opens at the recommended config (poolbench.spec.Demand).
                "server_connections": None
                if analysis.recommended is None
                else fleet.total(Demand.of(analysis.recommended)),
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


def size_summary(
    inputs: SizingInputs, results: list[ModelResult], fleet: Fleet | None, deadlock_floor: int
) -> dict[str, Any]:
    """The `size --json` document: the inputs typed in and every model's answer."""
    return jsonable(
        {
            "inputs": {
                "concurrency": inputs.concurrency,
                "queries_per_request": inputs.queries_per_request,
                "hold_time_ms": inputs.hold_time_ms,
                "target_rps": inputs.offered_rps,
                "db_cores": inputs.db_cores,
                "spindles": inputs.spindles,
                "wait_budget_ms": inputs.wait_budget_ms,
                "wait_quantile": inputs.wait_quantile,
                "headroom": inputs.headroom,
            },
            "models": [model_json(r, fleet) for r in results],
            "deadlock_floor": deadlock_floor,
            "fleet_per_process": None if fleet is None else fleet.per_process,
        }
    )
