"""The optimum of one workload: the smallest config meeting the SLO near the best throughput."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from bench.analysis.aggregate import at_optimum, eligible, untrusted
from bench.analysis.models import DEFAULT_TOLERANCE
from bench.spec import Fleet, Slo


@dataclass(frozen=True, kw_only=True)
class Optimum:
    """The chosen config of one workload and why."""

    row: dict[str, Any] | None
    slo_met: bool
    fits_fleet: bool | None
    best_rps: float
    reason: str
    excluded_configs: int = 0


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
    bad = untrusted(table)
    candidates = eligible(table)
    notes: list[str] = []
    if candidates.empty:
        candidates = table[table["rps"].notna()]
        notes.append("every config is CPU- or load-generator-bound: not a pool conclusion")
    if candidates.empty:
        return Optimum(
            row=None, slo_met=False, fits_fleet=None, best_rps=math.nan, reason="no throughput"
        )
    passing = candidates[[slo.passes(row) for row in candidates.to_dict("records")]]
    slo_met = not passing.empty
    pool = passing if slo_met else candidates
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
    elif slo.is_set:
        notes.append(f"this config fails because: {slo.failure(chosen.to_dict())}")
    return Optimum(
        row={str(k): v for k, v in chosen.to_dict().items()},
        slo_met=slo_met if slo.is_set else True,
        fits_fleet=fits,
        best_rps=best_rps,
        reason="; ".join([reason, *notes]),
        excluded_configs=int(bad.sum()),
    )


def measured_rps_at(table: pd.DataFrame, connections: float) -> float | None:
    """Measured throughput at a pool size, interpolated between measured sizes (None outside)."""
    candidates = eligible(table)
    if candidates.empty:
        return None
    curve = candidates.groupby("connections")["rps"].max().sort_index()
    xs = curve.index.to_numpy(dtype=float)
    if connections < xs.min() or connections > xs.max():
        return None
    return float(np.interp(connections, xs, curve.to_numpy(dtype=float)))


def usl_series(table: pd.DataFrame, optimum: Mapping[str, Any] | None) -> tuple[pd.DataFrame, Any]:
    """The throughput-vs-pool-size series to fit: one max_overflow, other pool axes fixed."""
    candidates = at_optimum(eligible(table), dict(optimum) if optimum is not None else None)
    if candidates.empty:
        return candidates, None
    sizes = candidates.groupby("max_overflow", dropna=False)["pool_size"].nunique()
    preferred = None if optimum is None else optimum.get("max_overflow")
    if preferred is not None and preferred in sizes.index and sizes.loc[preferred] >= sizes.max():
        overflow = preferred
    else:
        overflow = sizes.idxmax()
    return candidates[candidates["max_overflow"] == overflow], overflow
