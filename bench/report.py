"""Render a self-contained HTML report (inline PNG charts, no external assets)."""

from __future__ import annotations

import base64
import contextlib
import io
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jinja2
import numpy as np
import pandas as pd

from bench.load import (
    CONFIG_COLUMNS,
    UNTRUSTED_BOTTLENECKS,
    Sweep,
    load_sweep,
    read_history,
    scrub_secrets,
    scrub_tree,
)
from bench.models import throughput_ceiling_rps
from bench.optimum import Analysis, Fleet, WorkloadAnalysis, analyse

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

DEFAULT_REPORTS_DIR = Path("reports")
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
MAX_TIME_SERIES_RUNS = 4
_PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2")

_env = jinja2.Environment(
    loader=jinja2.PackageLoader("bench", "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


@dataclass(frozen=True, kw_only=True)
class Chart:
    """One rendered chart: a title, a data: URI and a caption."""

    key: str
    title: str
    uri: str
    caption: str = ""


# --- formatting ----------------------------------------------------------------------------


def _num(value: Any, digits: int = 1) -> str:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return "-" if value is None or value == "" else str(value)
    if math.isnan(number):
        return "-"
    if math.isinf(number):
        return "inf"
    if digits == 0 or number.is_integer() and abs(number) >= 1000:
        return f"{number:,.0f}"
    return f"{number:,.{digits}f}"


def _pct(value: Any, digits: int = 2) -> str:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return "-"
    return "-" if math.isnan(number) else f"{number:.{digits}%}"


def _int(value: Any) -> str:
    return _num(value, 0)


_env.filters.update(num=_num, pct=_pct, whole=_int)


# --- charts --------------------------------------------------------------------------------


def _png(fig: Figure) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _new_figure(width: float, height: float) -> Figure:
    """A pyplot-free figure (no global state, no GUI backend), imported on first use."""
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def _figure(width: float = 6.4, height: float = 3.6) -> tuple[Figure, Axes]:
    fig = _new_figure(width, height)
    ax = fig.add_subplot()
    ax.grid(True, alpha=0.3)
    return fig, ax


def _swept(table: pd.DataFrame, column: str) -> bool:
    return table[column].nunique(dropna=True) > 1


def _series_by(table: pd.DataFrame, column: str) -> list[tuple[Any, pd.DataFrame]]:
    return [
        (value, group.sort_values("pool_size"))
        for value, group in table.groupby(column, dropna=False, sort=True)
    ]


def _pool_slice(workload: WorkloadAnalysis) -> pd.DataFrame:
    """Configs of the headline workload with non-pool axes fixed at the optimum's values."""
    table = workload.table
    row = workload.optimum.row
    if row is not None:
        for column in ("http_concurrency_limit", "pg_max_size"):
            value = row.get(column)
            if value is not None and not pd.isna(value):
                table = table[table[column] == value]
    return table


def _repetitions(runs: pd.DataFrame, configs: pd.DataFrame) -> pd.DataFrame:
    """The individual runs behind the aggregated configs in `configs`."""
    keys = list(CONFIG_COLUMNS)
    return runs.merge(configs[keys].drop_duplicates(), on=keys, how="inner")


def _chart_throughput(analysis: Analysis) -> Chart | None:
    workload = analysis.headline
    table = _pool_slice(workload)
    if not _swept(table, "pool_size"):
        return None
    fig, ax = _figure()
    plotted = [table["rps"]]
    excluded: list[pd.DataFrame] = []
    for i, (overflow, group) in enumerate(_series_by(table, "max_overflow")):
        color = _PALETTE[i % len(_PALETTE)]
        # Mean line, each repetition as a dot, the 95% CI as a light band: with two repetitions
        # the t quantile is 12.7, and error bars that size would hide everything else.
        ax.fill_between(
            group["pool_size"],
            group["rps"] - group["rps_ci"],
            group["rps"] + group["rps_ci"],
            color=color,
            alpha=0.12,
            lw=0,
            label="95% CI of the mean" if i == 0 else None,
        )
        ax.plot(
            group["pool_size"],
            group["rps"],
            color=color,
            label=f"max_overflow={_int(overflow)} (mean)",
        )
        reps = _repetitions(analysis.sweep.runs, group)
        plotted.append(reps["rps"])
        untrusted = reps["bottleneck"].isin(UNTRUSTED_BOTTLENECKS)
        ax.scatter(
            reps.loc[~untrusted, "pool_size"],
            reps.loc[~untrusted, "rps"],
            s=14,
            color=color,
            alpha=0.8,
            zorder=3,
            label="each repetition" if i == 0 else None,
        )
        excluded.append(reps[untrusted])
    crosses = pd.concat(excluded)
    if not crosses.empty:
        ax.scatter(
            crosses["pool_size"],
            crosses["rps"],
            marker="x",
            s=40,
            color="black",
            zorder=3,
            label="CPU- or load-generator-bound run",
        )
    xs = np.linspace(1, float(table["pool_size"].max()), 200)
    if workload.usl is not None and workload.usl_overflow is not None:
        overflow = float(workload.usl_overflow)
        ax.plot(
            xs,
            workload.usl.throughput(xs + overflow),
            "--",
            color="#555",
            label=f"USL fit (max_overflow={_int(overflow)}, R²={workload.usl.r2:.3f})",
        )
    if workload.inputs is not None:
        ceiling = [throughput_ceiling_rps(x, workload.inputs.hold_time_ms) for x in xs]
        ax.plot(xs, ceiling, ":", color="#b00", label="Little's-law ceiling pool_size / hold_time")
    if workload.optimum.row is not None:
        ax.axvline(
            float(workload.optimum.row["pool_size"]), color="green", alpha=0.4, lw=6, zorder=1
        )
    # The data sets the scale; the CI band and the model lines are clipped to it.
    top = pd.concat(plotted).max()
    if pd.notna(top) and top > 0:
        ax.set_ylim(0, float(top) * 1.15)
    ax.set_xlabel("pool_size")
    ax.set_ylabel("throughput (requests/s)")
    ax.legend(fontsize=8, loc="best")
    reps_text = _reps_text(table)
    return Chart(
        key="throughput",
        title="Throughput vs pool_size",
        uri=_png(fig),
        caption=(
            f"Line: mean of repetitions; dots: each repetition; shaded: 95% CI of the mean "
            f"(t-distribution{reps_text}: wide when repetitions are few; clipped to the plotted "
            "range). Green band: recommended pool_size. Crosses: CPU- or load-generator-bound "
            "runs (excluded from conclusions)."
        ),
    )


def _reps_text(table: pd.DataFrame) -> str:
    """`, n=2 per config` (or `, n=2-3 per config`): the repetitions behind each mean."""
    counts = table["reps"].dropna()
    if counts.empty:
        return ""
    low, high = int(counts.min()), int(counts.max())
    return f", n={low} per config" if low == high else f", n={low}-{high} per config"


def _overflow_slice(workload: WorkloadAnalysis) -> pd.DataFrame:
    table = _pool_slice(workload)
    row = workload.optimum.row
    if row is not None and not pd.isna(row.get("max_overflow")):
        table = table[table["max_overflow"] == row["max_overflow"]]
    return table.sort_values("pool_size")


def _overflow_label(table: pd.DataFrame) -> str:
    """Caption prefix naming the max_overflow slice a chart shows, when there is one."""
    overflows = table["max_overflow"].dropna().unique()
    return f"max_overflow={overflows[0]:g}; " if len(overflows) == 1 else ""


def _chart_latency(analysis: Analysis) -> Chart | None:
    table = _overflow_slice(analysis.headline)
    if not _swept(table, "pool_size"):
        return None
    fig, ax = _figure()
    for column, color in (("p50_ms", "#2ca02c"), ("p95_ms", "#ff7f0e"), ("p99_ms", "#d62728")):
        ax.plot(table["pool_size"], table[column], marker="o", ms=4, color=color, label=column)
    if analysis.slo.p95_ms is not None:
        ax.axhline(analysis.slo.p95_ms, color="#ff7f0e", ls="--", lw=1, label="SLO p95")
    ax.set_yscale("log")
    ax.set_xlabel("pool_size")
    ax.set_ylabel("response time (ms, log)")
    ax.legend(fontsize=8)
    overflow = table["max_overflow"].iloc[0] if not table.empty else math.nan
    return Chart(
        key="latency",
        title="Latency percentiles vs pool_size",
        uri=_png(fig),
        caption=f"max_overflow={_int(overflow)}; client-side (Locust) percentiles.",
    )


def _chart_heatmap(analysis: Analysis) -> Chart | None:
    table = _pool_slice(analysis.headline)
    if not (_swept(table, "pool_size") and _swept(table, "max_overflow")):
        return None
    grid = table.pivot_table(
        index="max_overflow", columns="pool_size", values="rps", aggfunc="mean"
    )
    untrusted = (
        table.assign(flag=table["bottleneck"].isin(UNTRUSTED_BOTTLENECKS))
        .pivot_table(index="max_overflow", columns="pool_size", values="flag", aggfunc="max")
        .reindex_like(grid)
        .fillna(False)
        .to_numpy(dtype=bool)
    )
    fig, ax = _figure(6.4, 2.2 + 0.35 * len(grid.index))
    ax.grid(False)
    image = ax.imshow(grid.to_numpy(dtype=float), aspect="auto", cmap="viridis", origin="lower")
    ax.set_xticks(range(len(grid.columns)), [_int(c) for c in grid.columns])
    ax.set_yticks(range(len(grid.index)), [_int(i) for i in grid.index])
    if grid.size <= 120:
        values = grid.to_numpy(dtype=float)
        top = np.nanmax(values)
        for (r, c), value in np.ndenumerate(values):
            if not math.isnan(value):
                ax.text(
                    c,
                    r,
                    f"{value:.0f}{'*' if untrusted[r, c] else ''}",
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="black" if value > 0.6 * top else "white",
                )
    ax.set_xlabel("pool_size")
    ax.set_ylabel("max_overflow")
    fig.colorbar(image, ax=ax, label="requests/s")
    return Chart(
        key="heatmap",
        title="Throughput: pool_size x max_overflow",
        uri=_png(fig),
        caption="Mean requests/s per config; * marks CPU- or load-generator-bound configs.",
    )


def _chart_pool_telemetry(analysis: Analysis) -> Chart | None:
    table = _overflow_slice(analysis.headline)
    if not _swept(table, "pool_size") or table["hold_time_mean_ms"].isna().all():
        return None
    fig, ax = _figure()
    ax.plot(
        table["pool_size"],
        table["acquire_wait_p95_ms"],
        marker="o",
        ms=4,
        label="acquire wait p95 (ms)",
        color="#d62728",
    )
    ax.plot(
        table["pool_size"],
        table["hold_time_mean_ms"],
        marker="s",
        ms=4,
        label="hold time mean (ms)",
        color="#1f77b4",
    )
    ax.set_xlabel("pool_size")
    ax.set_ylabel("ms")
    ax.legend(fontsize=8)
    return Chart(
        key="pool",
        title="Acquire wait and hold time vs pool_size",
        uri=_png(fig),
        caption=(
            f"{_overflow_label(table)}App telemetry: waiting for a connection vs holding one "
            "(checkout to checkin)."
        ),
    )


def _chart_errors(analysis: Analysis) -> Chart | None:
    table = _pool_slice(analysis.headline)
    if not _swept(table, "pool_size"):
        return None
    fig, ax = _figure()
    for i, (overflow, group) in enumerate(_series_by(table, "max_overflow")):
        ax.plot(
            group["pool_size"],
            group["error_rate"].fillna(0) * 100,
            marker="o",
            ms=4,
            color=_PALETTE[i % len(_PALETTE)],
            label=f"max_overflow={_int(overflow)}",
        )
    if analysis.slo.max_error_rate is not None:
        ax.axhline(
            analysis.slo.max_error_rate * 100,
            color="#d62728",
            ls="--",
            lw=1,
            label="SLO max error rate",
        )
    ax.set_xlabel("pool_size")
    ax.set_ylabel("error rate (%)")
    ax.legend(fontsize=8)
    return Chart(key="errors", title="Error rate vs pool_size", uri=_png(fig))


def _chart_models(analysis: Analysis) -> Chart | None:
    workload = analysis.headline
    models = [c for c in workload.models if c.model.pool_size is not None]
    if not models or workload.optimum.row is None:
        return None
    fig, ax = _figure()
    names = [c.model.name for c in models]
    sizes = [float(c.model.pool_size or 0) for c in models]
    colors = ["#d62728" if c.model.name == "seed formula" else "#1f77b4" for c in models]
    ax.barh(names, sizes, color=colors)
    optimum = float(workload.optimum.row["connections"])
    ax.axvline(optimum, color="green", lw=2, label=f"measured optimum ({optimum:g})")
    if analysis.fleet is not None:
        ax.axvline(
            analysis.fleet.per_process,
            color="black",
            ls="--",
            lw=1,
            label=f"fleet budget per process ({analysis.fleet.per_process})",
        )
    for y, size in enumerate(sizes):
        ax.text(size, y, f" {size:g}", va="center", fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("connections (pool_size + max_overflow)")
    ax.legend(fontsize=8, loc="lower right")
    return Chart(key="models", title="Model recommendations vs measured optimum", uri=_png(fig))


def _chart_axis_curves(analysis: Analysis, axis: str, title: str) -> Chart | None:
    """Throughput vs pool_size with one line per value of another swept axis."""
    table = analysis.table
    if not (_swept(table, axis) and _swept(table, "pool_size")):
        return None
    row = analysis.recommended or {}
    if axis != "max_overflow" and not pd.isna(row.get("max_overflow", math.nan)):
        table = table[table["max_overflow"] == row["max_overflow"]]
    fig, ax = _figure()
    for i, (value, group) in enumerate(_series_by(table, axis)):
        curve = group.groupby("pool_size")["rps"].mean()
        color = _PALETTE[i % len(_PALETTE)]
        ax.plot(
            curve.index,
            curve.to_numpy(),
            marker="o",
            ms=4,
            color=color,
            label=f"{axis}={_num(value, 0)}",
        )
    ax.set_xlabel("pool_size")
    ax.set_ylabel("throughput (requests/s)")
    ax.legend(fontsize=8)
    caption = ""
    if axis == "queries_per_request":
        caption = (
            "Each workload's measured optimum is in the models table below; the seed formula "
            "shrinks the pool as queries per request grow, while these curves need more."
        )
    return Chart(key=f"axis-{axis}", title=title, uri=_png(fig), caption=caption)


def _chart_semaphore(analysis: Analysis) -> Chart | None:
    table = analysis.headline.table
    if not _swept(table, "http_concurrency_limit"):
        return None
    fig, ax = _figure()
    sizes = np.sort(table["connections"].dropna().unique())
    # A handful of pool sizes spread over the range keeps the chart readable.
    picks = np.unique(np.linspace(0, len(sizes) - 1, min(len(sizes), 6)).round().astype(int))
    for i, pool in enumerate(sizes[picks]):
        group = table[table["connections"] == pool]
        curve = group.groupby("http_concurrency_limit")["rps"].mean()
        ax.plot(
            curve.index,
            curve.to_numpy(),
            marker="o",
            ms=4,
            color=_PALETTE[i],
            label=f"{_int(pool)} connections",
        )
    ax.set_xlabel("http_concurrency_limit (semaphore)")
    ax.set_ylabel("throughput (requests/s)")
    ax.legend(fontsize=8)
    return Chart(key="semaphore", title="Semaphore limit sweep", uri=_png(fig))


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


def _exact_history(history_path: Path) -> pd.DataFrame:
    """Locust's history, with rate and percentiles replaced by the run's exact timeseries.csv.

    Locust's own columns are rolling, bucketed figures that restart at the stats reset; the
    runner bins the raw samples per second instead. Users still come from Locust's history.
    """
    history = read_history(history_path)
    path = history_path.parent / "timeseries.csv"
    if history.empty or not path.is_file():
        return history
    try:
        exact = pd.read_csv(path)
        stamp = exact["epoch_s"] + 0.5  # the middle of each one-second bin
        t_s = stamp - float(history["Timestamp"].min())
        users = np.interp(t_s, history["t_s"], history["User Count"])
    except (OSError, ValueError, KeyError, pd.errors.ParserError):
        return history
    return pd.DataFrame(
        {
            "Timestamp": stamp,
            "t_s": t_s,
            "User Count": users,
            "Requests/s": exact["requests"],
            "Failures/s": exact["failures"],
            "50%": exact["p50_ms"],
            "95%": exact["p95_ms"],
            "99%": exact["p99_ms"],
            "exact": True,
        }
    )


def _window_span(history_path: Path, history: pd.DataFrame) -> tuple[float, float] | None:
    """The measured window in the history's seconds (`t_s`), from the run's window.jsonl.

    scenarios/common.py appends `{"event": "start"|"end", "epoch": ...}` lines there (the master's
    markers; workers write `worker_*`), and Locust stamps each history row with the whole epoch
    second it was written, so both share a clock. None when there is no such file (synthetic
    data, plain Locust output) or its markers do not fall inside this history.
    """
    try:
        text = (history_path.parent / "window.jsonl").read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    markers: dict[str, float] = {}
    for line in text.splitlines():
        with contextlib.suppress(ValueError, KeyError, TypeError):
            entry = json.loads(line)
            markers[str(entry["event"])] = float(entry["epoch"])
    t0 = float((history["Timestamp"] - history["t_s"]).min())  # the history's first stamp
    last = float(history["t_s"].max())
    start = markers.get("start", math.nan) - t0
    end = markers.get("end", t0 + last) - t0  # no `end`: the run was cut short
    if not (math.isfinite(start) and math.isfinite(end) and start < end):
        return None
    if end <= 0 or start > last + 1:
        return None
    return start, end


def _latency(values: pd.Series) -> pd.Series:
    """A history percentile column with Locust's "no requests" zeros blanked out.

    Locust's history percentiles cover its last ~10 s; when that holds no requests (just after
    the stats reset that opens the window) it writes 0 or N/A: a gap, not a 0 ms response.
    """
    return values.where(values > 0)


def _set_top(ax: Axes, values: list[float], headroom: float = 1.15) -> None:
    """Scale `ax` from 0 to the largest finite value times `headroom` (unchanged if none)."""
    finite = [v for v in values if math.isfinite(v) and v > 0]
    if finite:
        ax.set_ylim(0, max(finite) * headroom)


def _chart_time_series(analysis: Analysis) -> Chart | None:
    picks = [
        (run_id, _exact_history(analysis.sweep.history_paths[run_id]))
        for run_id in _representative_runs(analysis)
    ]
    picks = [(run_id, h) for run_id, h in picks if not h.empty]
    if not picks:
        return None
    runs = analysis.sweep.runs
    window_rps = dict(zip(runs["run_id"], runs["rps"], strict=True))
    fig = _new_figure(11, 2.1 * len(picks))
    axes = fig.subplots(len(picks), 2, squeeze=False)
    windows = 0
    legend: dict[str, Any] = {}
    for (run_id, history), (ax_rps, ax_lat) in zip(picks, axes, strict=True):
        t = history["t_s"]
        span = _window_span(analysis.sweep.history_paths[run_id], history)
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
                    _latency(history[column]),
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
    exact = all("exact" in history for _, history in picks)
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
        uri=_png(fig),
        caption=caption,
    )


def build_charts(analysis: Analysis) -> list[Chart]:
    """Every chart whose axes were swept; the others are skipped."""
    builders: list[Callable[[Analysis], Chart | None]] = [
        _chart_throughput,
        _chart_latency,
        _chart_heatmap,
        _chart_pool_telemetry,
        _chart_errors,
        _chart_models,
        _chart_semaphore,
        lambda a: _chart_axis_curves(a, "queries_per_request", "Queries per request"),
        lambda a: _chart_axis_curves(a, "users", "Users (concurrency)"),
        _chart_time_series,
    ]
    return [chart for build in builders if (chart := build(analysis)) is not None]


# --- context -------------------------------------------------------------------------------


def _environment(sweep: Sweep) -> list[tuple[str, str]]:
    """Flattened manifest (spec excluded), secrets already scrubbed, as (key, value) pairs."""
    items: list[tuple[str, str]] = []

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, Mapping):
            for key, sub in value.items():
                walk(f"{prefix}.{key}" if prefix else str(key), sub)
        else:
            text = value if isinstance(value, str) else json.dumps(value)
            items.append((prefix, scrub_secrets(text)))

    walk("", {k: v for k, v in sweep.manifest.items() if k != "spec"})
    return items


def spec_as_toml(spec: Mapping[str, Any]) -> str:
    """A compact TOML-like view of the resolved spec (values as JSON literals)."""

    def literal(value: Any) -> str:
        return json.dumps(value, default=str, ensure_ascii=False)

    lines = [f"{k} = {literal(v)}" for k, v in spec.items() if not isinstance(v, Mapping)]
    for key, table in spec.items():
        if isinstance(table, Mapping):
            lines += ["", f"[{key}]"]
            lines += [f"{k} = {literal(v)}" for k, v in table.items()]
    return "\n".join(lines)


def _row_flags(analysis: Analysis, row: Mapping[str, Any]) -> dict[str, Any]:
    fleet = analysis.fleet
    return {
        "slo": analysis.slo.passes(row["p95_ms"], row["error_rate"])
        if analysis.slo.is_set
        else None,
        "fleet": None
        if fleet is None or pd.isna(row["connections"])
        else fleet.fits(row["connections"]),
    }


def _context(analysis: Analysis, charts: list[Chart]) -> dict[str, Any]:
    sweep = analysis.sweep
    recommended = analysis.recommended
    records: list[dict[str, Any]] = [
        {str(k): v for k, v in r.items()} for r in analysis.table.to_dict("records")
    ]
    configs = [
        {**row, **_row_flags(analysis, row), "recommended": analysis.is_recommended(row)}
        for row in records
    ]
    return {
        "title": f"poolbench report: {sweep.name}",
        "sweep": sweep,
        "analysis": analysis,
        "recommended": recommended,
        "headline": analysis.headline,
        "charts": charts,
        "configs": configs,
        "runs": sweep.runs.to_dict("records"),
        "environment": _environment(sweep),
        "spec_text": spec_as_toml(scrub_tree(sweep.spec)),
        "generated": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "untrusted": UNTRUSTED_BOTTLENECKS,
    }


def default_report_path(sweep_dir: Path, reports_dir: Path = DEFAULT_REPORTS_DIR) -> Path:
    """`reports/<sweep dir name>.html`."""
    name = Path(sweep_dir).resolve().name or "sweep"
    if name.endswith("_stats.csv"):
        name = name[: -len("_stats.csv")]
    return reports_dir / f"{name}.html"


def _write(html: str, out: Path) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    # Last line of defence: no `scheme://user:password@` survives into the file.
    out.write_text(scrub_secrets(html), encoding="utf-8")
    return out


def render_analysis(analysis: Analysis, out: Path) -> Path:
    """Write the HTML report of an analysed sweep to `out`."""
    html = _env.get_template("report.html.j2").render(
        mode="report", **_context(analysis, build_charts(analysis))
    )
    return _write(html, out)


def render_report(sweep_dir: Path, out: Path | None = None, fleet: Fleet | None = None) -> Path:
    """Load, analyse and render a sweep; default output `reports/<sweep dir name>.html`."""
    sweep = load_sweep(Path(sweep_dir))
    resolved_fleet = fleet if fleet is not None else Fleet.resolve(sweep.spec)
    analysis = analyse(sweep, fleet=resolved_fleet)
    return render_analysis(analysis, out or default_report_path(Path(sweep_dir)))


# --- before/after --------------------------------------------------------------------------


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


def _chart_compare(before: Analysis, after: Analysis) -> Chart | None:
    fig, ax = _figure()
    drawn = False
    for label, analysis, style in (("before", before, "--"), ("after", after, "-")):
        table = _overflow_slice(analysis.headline)
        if _swept(table, "pool_size"):
            ax.plot(
                table["pool_size"],
                table["rps"],
                style,
                marker="o",
                ms=4,
                label=f"{label}: {analysis.sweep.name}",
            )
            drawn = True
    if not drawn:
        return None
    ax.set_xlabel("pool_size")
    ax.set_ylabel("throughput (requests/s)")
    ax.legend(fontsize=8)
    return Chart(key="compare", title="Throughput vs pool_size, before and after", uri=_png(fig))


def render_comparison(
    before: Analysis, after: Analysis, out: Path, threshold_pct: float = DEFAULT_DELTA_PCT
) -> Path:
    """Write a before/after HTML report of two analysed sweeps."""
    deltas = compare_tables(before.table, after.table, threshold_pct)
    charts = [c for c in (_chart_compare(before, after),) if c is not None]
    html = _env.get_template("report.html.j2").render(
        mode="compare",
        title=f"poolbench comparison: {before.sweep.name} -> {after.sweep.name}",
        before=before,
        after=after,
        deltas=deltas.to_dict("records"),
        threshold_pct=threshold_pct,
        charts=charts,
        generated=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
    )
    return _write(html, out)
