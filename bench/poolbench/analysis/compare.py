"""Before and after: two sweeps compared config by config, with Welch's t-test verdicts."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from poolbench.analysis.aggregate import mode, t_quantiles, untrusted
from poolbench.analysis.analyse import Analysis
from poolbench.fmt import pct, signed_pct
from poolbench.results import UNTRUSTED_BOTTLENECKS

# Columns a before/after comparison matches configs on: not duration_s or spawn_rate, so sweeps
# of different lengths still match.
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
# A significant change smaller than this is still too small to call (Locust percentiles alone
# are bucketed to within ~5%).
DEFAULT_DELTA_PCT = 5.0
# Significance level of each config's Welch's t-test.
DEFAULT_ALPHA = 0.05
# A t-test needs a sample variance on each side.
MIN_TESTED_REPS = 2
SHOWN_COLUMNS = ("rps", "p95_ms", "p99_ms", "error_rate")


@dataclass(frozen=True)
class Metric:
    """A tested figure: its prefix in the deltas frame, its runs.csv column, its good direction."""

    prefix: str
    column: str
    higher_is_better: bool


TESTED = (
    Metric("rps", "rps", higher_is_better=True),
    Metric("p95", "p95_ms", higher_is_better=False),
    Metric("error", "error_rate", higher_is_better=False),
)


def p_text(p_value: Any) -> str:
    """A p-value as tables show it: `0.004`, `<0.001`, or `-` when there is none."""
    if p_value is None or pd.isna(p_value):
        return "-"
    return "<0.001" if p_value < 0.001 else f"{p_value:.3f}"


def side_stats(runs: pd.DataFrame) -> pd.DataFrame:
    """Per matched config: means, spreads and count of the trusted repetitions, and the rest."""
    keys = list(MATCH_COLUMNS)
    runs = runs.assign(trusted=~untrusted(runs))
    has_trusted = runs.groupby(keys, dropna=False)["trusted"].transform("any")
    # As aggregate() does, a config with no trusted run shows its untrusted ones (then untested).
    grouped = runs[runs["trusted"] | ~has_trusted].groupby(keys, dropna=False, sort=True)
    figures = [m.column for m in TESTED]
    out = pd.concat(
        [
            grouped[list(SHOWN_COLUMNS)].mean(),
            grouped[figures].std(ddof=1).add_suffix("_std"),
            # Sample sizes: trusted repetitions with the figure (an empty window has no p95).
            grouped[figures].count().add_suffix("_n"),
            grouped["trusted"].sum().rename("reps"),
            grouped.size().rename("shown_reps"),
            grouped["bottleneck"].agg(mode),
        ],
        axis=1,
    ).reset_index()
    untrusted_reps = runs.groupby(keys, dropna=False, sort=True)["trusted"].agg(
        lambda trusted: int((~trusted).sum())
    )
    out["excluded_reps"] = untrusted_reps.to_numpy()
    sizes = [f"{column}_n" for column in figures]
    out[sizes] = out[sizes].where(out["reps"] > 0, 0)
    factor = t_quantiles(out["shown_reps"]) / np.sqrt(out["shown_reps"])
    out["rps_ci"] = out["rps_std"] * factor
    return out.drop(columns="shown_reps")


def testable(merged: pd.DataFrame, column: str) -> pd.Series:
    """True where both sides have enough trusted repetitions of `column` for a t-test."""
    sizes = merged[[f"{column}_n_before", f"{column}_n_after"]]
    return sizes.ge(MIN_TESTED_REPS).all(axis=1)


def welch_p(merged: pd.DataFrame, column: str, tested: pd.Series) -> pd.Series:
    """Welch's t-test p-value of `column` per matched config; NaN where not `tested`."""
    from scipy import stats  # imported on use: scipy.stats alone costs ~0.5 s of CLI start-up

    sides = [
        f"{column}{part}_{side}" for side in ("before", "after") for part in ("", "_std", "_n")
    ]
    frame = merged[sides].astype(float)
    # NaN sizes keep the untestable rows out without a division-by-zero warning.
    frame.loc[~tested, [f"{column}_n_before", f"{column}_n_after"]] = np.nan
    # In scipy's order (mean, std, nobs) x 2, as arrays: its array API takes no pandas Series.
    result = stats.ttest_ind_from_stats(*frame.to_numpy().T, equal_var=False)
    return pd.Series(result.pvalue, index=merged.index, dtype=float)


def verdicts(
    delta_pct: pd.Series,
    p_value: pd.Series,
    tested: pd.Series,
    *,
    higher_is_better: bool,
    threshold_pct: float,
    alpha: float,
) -> np.ndarray:
    """better/worse when significant and at least `threshold_pct`; else same, or untested."""
    significant = p_value < alpha  # NaN (equal means, no spread on either side) is False
    up = significant & (delta_pct >= threshold_pct)
    down = significant & (delta_pct <= -threshold_pct)
    better, worse = (up, down) if higher_is_better else (down, up)
    return np.select([~tested, better, worse], ["untested", "better", "worse"], "same")


def compare_tables(
    before_runs: pd.DataFrame,
    after_runs: pd.DataFrame,
    threshold_pct: float = DEFAULT_DELTA_PCT,
    alpha: float = DEFAULT_ALPHA,
) -> pd.DataFrame:
    """Configs run in both sweeps: means, deltas, Welch p-values and verdicts per figure."""
    keys = list(MATCH_COLUMNS)
    merged = side_stats(before_runs).merge(
        side_stats(after_runs), on=keys, how="inner", suffixes=("_before", "_after")
    )
    for metric in TESTED:
        before, after = merged[f"{metric.column}_before"], merged[f"{metric.column}_after"]
        delta_pct = 100 * (after / before - 1)
        tested = testable(merged, metric.column)
        p_value = welch_p(merged, metric.column, tested)
        merged[f"{metric.prefix}_delta_pct"] = delta_pct
        merged[f"{metric.prefix}_p"] = p_value
        merged[f"{metric.prefix}_change"] = verdicts(
            delta_pct,
            p_value,
            tested,
            higher_is_better=metric.higher_is_better,
            threshold_pct=threshold_pct,
            alpha=alpha,
        )
    merged["error_delta"] = merged["error_rate_after"].fillna(0) - merged[
        "error_rate_before"
    ].fillna(0)
    return merged.sort_values(keys, kind="stable").reset_index(drop=True)


def _value_text(value: Any) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "-"
    return f"{value:g}" if isinstance(value, float) else str(value)


def config_label(row: Mapping[Any, Any], columns: Sequence[str]) -> str:
    """`pool_size=4 max_overflow=0 users=24` for the given columns of a deltas row."""
    return " ".join(f"{column}={_value_text(row[column])}" for column in columns)


def _change_text(metric: Metric, row: Mapping[Any, Any]) -> str:
    if metric.prefix == "error":  # relative to zero errors a change has no percentage
        change = f"{pct(row['error_rate_before'])} -> {pct(row['error_rate_after'])}"
    else:
        change = signed_pct(row[f"{metric.prefix}_delta_pct"])
    p_value = p_text(row[f"{metric.prefix}_p"])
    return f"{metric.prefix} {change} (p{'' if p_value.startswith('<') else '='}{p_value})"


@dataclass(frozen=True, kw_only=True)
class Comparison:
    """Two analysed sweeps and their per-config deltas and verdicts, computed once."""

    before: Analysis
    after: Analysis
    deltas: pd.DataFrame
    threshold_pct: float
    alpha: float

    def label_columns(self) -> list[str]:
        """pool_size, max_overflow and every other match column that differs between configs."""
        return [
            column
            for column in MATCH_COLUMNS
            if column in ("pool_size", "max_overflow")
            or self.deltas[column].nunique(dropna=False) > 1
        ]

    def regressions(self) -> list[str]:
        """One line per config that got significantly worse: its label and the worse figures."""
        columns = self.label_columns()
        lines = []
        for row in self.deltas.to_dict("records"):
            worse = [_change_text(m, row) for m in TESTED if row[f"{m.prefix}_change"] == "worse"]
            if worse:
                lines.append(f"{config_label(row, columns)}: {', '.join(worse)}")
        return lines

    def untrusted_note(self) -> str | None:
        """How many untrusted runs of the matched configs the tests left out, if any."""
        before = int(self.deltas["excluded_reps_before"].sum())
        after = int(self.deltas["excluded_reps_after"].sum())
        if not before and not after:
            return None
        return (
            f"Untrusted runs (bottleneck {', '.join(UNTRUSTED_BOTTLENECKS)}) left out of the "
            f"tests: {before} before, {after} after."
        )


def compare(
    before: Analysis,
    after: Analysis,
    threshold_pct: float = DEFAULT_DELTA_PCT,
    alpha: float = DEFAULT_ALPHA,
) -> Comparison:
    """Compare two analysed sweeps repetition by repetition."""
    deltas = compare_tables(before.sweep.runs, after.sweep.runs, threshold_pct, alpha)
    return Comparison(
        before=before, after=after, deltas=deltas, threshold_pct=threshold_pct, alpha=alpha
    )
