"""Collapse repetitions into one row per config, with means, 95% CIs and the modal bottleneck."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from poolbench.analysis.load import connections
from poolbench.objectives import Slo
from poolbench.results import POINT_COLUMNS, UNTRUSTED_BOTTLENECKS

# A config is everything that defines a point except the repetition.
CONFIG_COLUMNS = tuple(c for c in POINT_COLUMNS if c not in ("run_id", "repetition"))
# Axes that change the work of a request rather than the pool.
# The production shape (worker processes, pooler) is part of it: each shape has its own optimum,
# its pool sizes being per process (and PgBouncer's pool in front, when there is one).
BASE_WORKLOAD_COLUMNS = (
    "scenario", "queries_per_request", "sim_latency_ms", "think_time_s", "app_workers", "pooler",
)  # fmt: skip
# Shown in a workload's label only when not the default shape.
SHAPE_DEFAULTS = {"app_workers": 1.0, "pooler": "direct"}
# A workload is that work at one load (users, and the offered rate of an open model): optima
# are found per workload.
WORKLOAD_COLUMNS = (*BASE_WORKLOAD_COLUMNS, "users", "offered_rps")
# Pool axes other than pool_size and max_overflow: fixed at the optimum's values for curves.
OTHER_POOL_AXES = ("http_concurrency_limit", "pg_max_size", "pgbouncer_pool_size")
CONFIDENCE = 0.95
MEAN_COLUMNS = (
    "rps", "p50_ms", "p95_ms", "p99_ms", "mean_ms", "error_rate", "acquire_wait_p95_ms",
    "acquire_wait_p99_ms", "hold_time_mean_ms", "hold_time_p95_ms", "hold_time_cv", "app_cpu_pct",
    "locust_cpu_pct", "pg_cpu_pct", "host_cpu_pct", "downstream_cpu_pct", "schedule_lag_p95_ms",
    "app_inflight_mean", "statements_per_request", "pg_pool_acquire_wait_p95_ms",
    "pg_pool_hold_time_mean_ms", "http_semaphore_wait_p95_ms", "littles_efficiency",
    "handoff_share", "ping_mean_ms",
)  # fmt: skip
MAX_COLUMNS = (
    "peak_checked_out", "pg_peak_connections", "app_inflight_peak", "pg_pool_peak_checked_out",
    "http_peak_in_flight",
)  # fmt: skip
SUM_COLUMNS = (
    "pool_timeouts", "requests", "failures", "dropped_arrivals", "inflight_at_end",
    "pg_pool_timeouts", "http_waits_holding_connection",
)  # fmt: skip


def untrusted(frame: pd.DataFrame) -> pd.Series:
    """True for runs (or configs) that a CPU or the load generator limited."""
    return frame["bottleneck"].isin(UNTRUSTED_BOTTLENECKS)


def matching(frame: pd.DataFrame, values: Mapping[str, Any]) -> pd.Series:
    """True for rows equal to `values` in every column given (a blank matches a blank)."""
    # On the columns' arrays: a pandas operation per column cost ~0.3 ms, called thousands of times.
    mask = np.ones(len(frame), dtype=bool)
    for column, value in values.items():
        cells = frame[column].to_numpy()
        mask &= pd.isna(cells) if pd.isna(value) else cells == value
    return pd.Series(mask, index=frame.index)


# The columns `Slo.failure` reads: rows cut to them convert to dicts ~20 times faster.
SLO_COLUMNS = ("requests", "empty_windows", "p95_ms", "error_rate")


def meets_slo(frame: pd.DataFrame, slo: Slo) -> list[bool]:
    """`slo.passes` of each row (a run or an aggregated config)."""
    columns = [c for c in SLO_COLUMNS if c in frame.columns]
    return [slo.passes(row) for row in frame[columns].to_dict("records")]


def eligible(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows fit for pool conclusions: trusted and with a measured throughput."""
    return frame[~untrusted(frame) & frame["rps"].notna()]


def at_optimum(frame: pd.DataFrame, optimum: dict | None) -> pd.DataFrame:
    """Rows with the non-pool-size axes fixed at the optimum's values (a throughput curve)."""
    if optimum is not None:
        for column in OTHER_POOL_AXES:
            value = optimum.get(column)
            if value is not None and not pd.isna(value):
                frame = frame[frame[column] == value]
    return frame


def mode(values: pd.Series) -> str:
    """The most common value (a config's modal bottleneck); `none` when there is none."""
    counts = values.value_counts()
    return str(counts.index[0]) if not counts.empty else "none"


def group_mode(values: pd.Series, groups: pd.Series) -> pd.Series:
    """`mode` of each group at once (ties to the value seen first), indexed by group id.

    One sort over all rows instead of a Python call per group: 2,000 configs took ~1 s.
    """
    frame = pd.DataFrame({"group": groups.to_numpy(), "value": values.to_numpy()})
    frame = frame[frame["value"].notna()]
    frame["first"] = np.arange(len(frame))
    counted = frame.groupby(["group", "value"], sort=False).agg(
        count=("first", "size"), first=("first", "min")
    )
    ranked = counted.reset_index().sort_values(
        ["group", "count", "first"], ascending=[True, False, True], kind="stable"
    )
    modal = ranked.drop_duplicates("group").set_index("group")["value"].astype(str)
    return modal.reindex(pd.Index(range(int(groups.max()) + 1))).fillna("none")


def t_quantiles(counts: pd.Series, confidence: float = CONFIDENCE) -> pd.Series:
    """The two-sided t quantile for each sample size (NaN below 2), computed once per size."""
    # scipy.special's stdtrit is the function stats.t.ppf calls (same values), without the
    # ~1 s import of scipy.stats.
    from scipy.special import stdtrit

    quantiles = {
        n: float(stdtrit(n - 1, (1 + confidence) / 2)) if n >= 2 else math.nan
        for n in counts.unique()
    }
    return counts.map(quantiles)


def aggregate(runs: pd.DataFrame) -> pd.DataFrame:
    """Collapse repetitions: one row per config with means, 95% CIs and the modal bottleneck."""
    keys = list(CONFIG_COLUMNS)
    # An untrusted repetition (CPU- or load-generator-bound) would drag its config's mean; drop it
    # when the config has trusted repetitions, keep it (and its label) when it has none.
    bad = untrusted(runs)
    config_id = runs.groupby(keys, dropna=False, sort=False).ngroup()
    has_trusted = (~bad).groupby(config_id).transform("any")
    kept = runs[~bad | ~has_trusted]
    excluded = bad & has_trusted
    # Runs whose window completed no request: such a config fails any SLO.
    kept = kept.assign(empty_windows=(kept["requests"] == 0).astype(int))
    grouped = kept.groupby(keys, dropna=False, sort=True)
    spread = grouped[["rps", "p95_ms"]].std(ddof=1)
    out = pd.concat(
        [
            grouped[list(MEAN_COLUMNS)].mean(),
            grouped[list(MAX_COLUMNS)].max(),
            grouped[list(SUM_COLUMNS)].sum(min_count=1),
            spread.add_suffix("_std"),
            grouped.size().rename("reps"),
            grouped["locust_cpu_warning"].any(),
            grouped["empty_windows"].sum(),
        ],
        axis=1,
    ).reset_index()
    # ngroup numbers the groups in the sorted order of `out`'s rows.
    modal = group_mode(kept["bottleneck"], grouped.ngroup())
    out.insert(list(out.columns).index("locust_cpu_warning"), "bottleneck", modal.to_numpy())
    excluded_by_config = (
        runs.assign(_excluded=excluded.to_numpy())
        .groupby(keys, dropna=False, sort=True)["_excluded"]
        .sum()
        .to_numpy()
    )
    out["excluded_reps"] = excluded_by_config.astype(int)
    factor = t_quantiles(out["reps"]) / np.sqrt(out["reps"])
    out["rps_ci"] = out["rps_std"] * factor
    out["p95_ms_ci"] = out["p95_ms_std"] * factor
    out["connections"] = connections(out)
    return out
