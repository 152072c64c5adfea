"""Before and after: two sweeps compared config by config, with better/worse verdicts."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from bench.analysis.analyse import Analysis

# Columns a before/after comparison matches configs on.
MATCH_COLUMNS = (
    "scenario",
    "pool_size",
    "max_overflow",
    "http_concurrency_limit",
    "users",
    "pg_max_size",
    "queries_per_request",
    "sim_latency_ms",
    "think_time_s",
)
# A change smaller than this is noise for highlighting purposes (Locust percentiles alone are
# bucketed to within ~5%).
DEFAULT_DELTA_PCT = 5.0


def compare_tables(
    before: pd.DataFrame, after: pd.DataFrame, threshold_pct: float = DEFAULT_DELTA_PCT
) -> pd.DataFrame:
    """Configs present in both sweeps with rps/p95/error deltas and a better/worse verdict."""
    keys = list(MATCH_COLUMNS)
    columns = [*keys, "rps", "p95_ms", "p99_ms", "error_rate", "rps_ci", "bottleneck"]
    merged = before[columns].merge(
        after[columns], on=keys, how="inner", suffixes=("_before", "_after")
    )
    merged["rps_delta_pct"] = 100 * (merged["rps_after"] / merged["rps_before"] - 1)
    merged["p95_delta_pct"] = 100 * (merged["p95_ms_after"] / merged["p95_ms_before"] - 1)
    merged["error_delta"] = merged["error_rate_after"].fillna(0) - merged[
        "error_rate_before"
    ].fillna(0)
    # Throughput up is good, latency up is bad.
    merged["rps_change"] = np.select(
        [merged["rps_delta_pct"] >= threshold_pct, merged["rps_delta_pct"] <= -threshold_pct],
        ["better", "worse"],
        "same",
    )
    merged["p95_change"] = np.select(
        [merged["p95_delta_pct"] <= -threshold_pct, merged["p95_delta_pct"] >= threshold_pct],
        ["better", "worse"],
        "same",
    )
    return merged.sort_values(keys, kind="stable").reset_index(drop=True)


@dataclass(frozen=True, kw_only=True)
class Comparison:
    """Two analysed sweeps and their per-config deltas, computed once."""

    before: Analysis
    after: Analysis
    deltas: pd.DataFrame
    threshold_pct: float


def compare(
    before: Analysis, after: Analysis, threshold_pct: float = DEFAULT_DELTA_PCT
) -> Comparison:
    """Compare two analysed sweeps."""
    deltas = compare_tables(before.table, after.table, threshold_pct)
    return Comparison(before=before, after=after, deltas=deltas, threshold_pct=threshold_pct)
