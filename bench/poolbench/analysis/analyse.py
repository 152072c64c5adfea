"""From a loaded sweep to an Analysis: every workload's optimum, models and the warnings."""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd

from poolbench.analysis.aggregate import BASE_WORKLOAD_COLUMNS, aggregate, matching
from poolbench.analysis.inputs import SizingOptions
from poolbench.analysis.load import Sweep, endpoint_figures
from poolbench.analysis.models import DEFAULT_HEADROOM, DEFAULT_P99_WAIT_MS, DEFAULT_TOLERANCE
from poolbench.analysis.thresholds import THRESHOLD_METRICS
from poolbench.analysis.warnings import collect_warnings
from poolbench.analysis.workload import WorkloadAnalysis, analyse_workload
from poolbench.errors import UsageError
from poolbench.fmt import num, opt_float, pct
from poolbench.objectives import Fleet, Slo
from poolbench.spec import CAPACITY, SLO

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
class Analysis:
    """Everything the terminal, HTML and JSON outputs show."""

    sweep: Sweep
    table: pd.DataFrame
    slo: Slo
    fleet: Fleet | None
    tolerance: float
    workloads: list[WorkloadAnalysis]
    headline: WorkloadAnalysis
    # Everything a reader must know before trusting the recommendation (analysis.warnings).
    warnings: tuple[str, ...] = ()

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
    if not 0 <= tolerance < 1:
        raise UsageError(f"tolerance must be in [0, 1), got {tolerance}")
    fleet = fleet if fleet is not None else sweep.fleet()
    table = aggregate(sweep.runs)
    slo = sweep.slo
    settings: dict[str, Any] = {
        "slo": slo,
        "fleet": fleet,
        "tolerance": tolerance,
        "options": SizingOptions(
            db_cores=db_cores or _db_cores(sweep), headroom=headroom, p99_wait_ms=p99_wait_ms
        ),
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
                    analyse_workload(target, rows, curve, runs, experiment=SLO, **settings)
                )
            continue
        for users, rows in capacity.groupby("users", dropna=False, sort=True):
            target = key | {"users": users}
            runs = sweep.runs[matching(sweep.runs, target)]
            runs = runs[runs["experiment"] != SLO]
            workloads.append(
                analyse_workload(target, rows, rows, runs, experiment=CAPACITY, **settings)
            )
    # One setting must serve every workload measured: size for the most demanding one.
    headline = max(
        workloads,
        key=lambda w: (w.optimum.row is not None, (w.optimum.row or {}).get("connections", 0)),
    )
    return Analysis(
        sweep=sweep,
        table=table,
        slo=slo,
        fleet=fleet,
        tolerance=tolerance,
        workloads=workloads,
        headline=headline,
        warnings=tuple(collect_warnings(sweep, workloads, slo, fleet)),
    )
