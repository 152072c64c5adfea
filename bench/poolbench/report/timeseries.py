"""Per-run time series: exact per-second figures of a few representative runs."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import pandas as pd

from poolbench.analysis.analyse import Analysis
from poolbench.analysis.history import RunHistory, latency_gaps
from poolbench.report.charts import Chart, new_figure, png

if TYPE_CHECKING:
    from matplotlib.axes import Axes

MAX_TIME_SERIES_RUNS = 4


def _representative_runs(analysis: Analysis) -> list[str]:
    """A few runs worth a look: the recommended config, the extremes, the worst errors."""
    sweep = analysis.sweep
    runs = sweep.runs[sweep.runs["run_id"].isin(list(sweep.history_paths))]
    if runs.empty:
        return []
    picks: list[str] = []
    row = analysis.recommended
    if row is not None and not pd.isna(row.get("pool_size")):
        same = runs[
            (runs["pool_size"] == row["pool_size"]) & (runs["max_overflow"] == row["max_overflow"])
        ]
        picks += list(same["run_id"].head(1))
    ordered = runs.sort_values(["connections", "repetition"])
    picks += [ordered["run_id"].iloc[0], ordered["run_id"].iloc[-1]]
    worst = runs.sort_values("error_rate", ascending=False)
    if worst["error_rate"].fillna(0).iloc[0] > 0:
        picks.append(worst["run_id"].iloc[0])
    # One run per config: a second repetition of the same point adds nothing to the picture.
    config_of = dict(
        zip(
            runs["run_id"],
            zip(
                runs["pool_size"],
                runs["max_overflow"],
                runs["users"],
                runs["queries_per_request"],
                strict=True,
            ),
            strict=True,
        )
    )
    unique: dict[Any, str] = {}
    for run_id in picks:
        unique.setdefault(config_of[run_id], run_id)
    return list(unique.values())[:MAX_TIME_SERIES_RUNS]


def _set_top(ax: Axes, values: list[float], headroom: float = 1.15) -> None:
    """Scale `ax` from 0 to the largest finite value times `headroom` (unchanged if none)."""
    finite = [v for v in values if math.isfinite(v) and v > 0]
    if finite:
        ax.set_ylim(0, max(finite) * headroom)


def chart_time_series(analysis: Analysis) -> Chart | None:
    read = [(run_id, analysis.sweep.history(run_id)) for run_id in _representative_runs(analysis)]
    picks: list[tuple[str, RunHistory]] = [(r, h) for r, h in read if h is not None]
    if not picks:
        return None
    runs = analysis.sweep.runs
    window_rps = dict(zip(runs["run_id"], runs["rps"], strict=True))
    fig = new_figure(11, 2.1 * len(picks))
    axes = fig.subplots(len(picks), 2, squeeze=False)
    windows = 0
    legend: dict[str, Any] = {}
    for (run_id, run), (ax_rps, ax_lat) in zip(picks, axes, strict=True):
        history, span = run.frame, run.window
        t = history["t_s"]
        rps_top = [float(history["Requests/s"].max())]
        if span is not None:
            windows += 1
            for ax in (ax_rps, ax_lat):
                ax.axvspan(*span, color="#8c8c8c", alpha=0.15, lw=0, label="measured window")
            rps = float(window_rps.get(run_id, math.nan))
            if math.isfinite(rps):
                rps_top.append(rps)
                ax_rps.hlines(
                    rps,
                    *span,
                    colors="#1f77b4",
                    linestyles=":",
                    lw=1.5,
                    label="window req/s (exact)",
                )
        ax_rps.plot(t, history["Requests/s"], color="#1f77b4", label="requests/s")
        if "Failures/s" in history:
            ax_rps.plot(t, history["Failures/s"], color="#d62728", label="failures/s")
        ax_users = ax_rps.twinx()
        ax_users.plot(t, history["User Count"], color="#999", ls="--", label="users (right axis)")
        ax_users.set_ylabel("users", fontsize=8)
        ax_users.tick_params(labelsize=8)
        ax_rps.set_title(run_id, fontsize=9, loc="left")
        ax_rps.set_ylabel("req/s", fontsize=8)
        for column, color in (("50%", "#2ca02c"), ("95%", "#ff7f0e"), ("99%", "#d62728")):
            if column in history:
                ax_lat.plot(
                    t,
                    latency_gaps(history[column]),
                    color=color,
                    marker=".",
                    ms=3,
                    label=f"p{column[:-1]}",
                )
        ax_lat.set_ylabel("ms", fontsize=8)
        # Zero-based scales with headroom: the rps lines stay below the users plateau.
        _set_top(ax_rps, rps_top, 1.3)
        _set_top(ax_users, [float(history["User Count"].max())], 1.1)
        _set_top(ax_lat, [float(history[c].max()) for c in ("50%", "95%", "99%") if c in history])
        right = max(float(t.max()), span[1] if span else 0.0)
        for ax in (ax_rps, ax_lat):
            ax.set_xlim(0, right)
            ax.grid(True, alpha=0.3)
            ax.tick_params(labelsize=8)
        for ax in (ax_rps, ax_users, ax_lat):
            for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
                legend.setdefault(label, handle)
    # One legend for every row, above the panels, so none covers a line.
    fig.legend(
        list(legend.values()),
        list(legend),
        loc="outside upper center",
        ncols=len(legend),
        fontsize=8,
        frameon=False,
    )
    axes[-1][0].set_xlabel("seconds")
    axes[-1][1].set_xlabel("seconds")
    exact = all(run.exact for _, run in picks)
    if exact:
        caption = (
            "Exact per-second figures from every request (runs/<run_id>/timeseries.csv); users "
            "from Locust's history. "
        )
    else:
        caption = "From runs/<run_id>/locust_stats_history.csv (Aggregated rows). "
    if windows and exact:
        caption += (
            "Grey band: the measured window (window.jsonl); the dotted line is the run's exact "
            "window throughput."
        )
    elif windows:
        caption += (
            "Grey band: the measured window (window.jsonl); Locust resets its stats when it "
            "opens. Locust's requests/s and percentiles are rolling figures that restart at the "
            "reset, so they lag inside the window; the dotted line is the run's exact window "
            "throughput. Latency gaps: no requests in Locust's rolling window, not 0 ms."
        )
    else:
        caption += "No window.jsonl: the whole history is shown, warm-up included."
    return Chart(
        key="timeseries",
        title="Per-run time series (representative runs)",
        uri=png(fig),
        caption=caption,
    )
