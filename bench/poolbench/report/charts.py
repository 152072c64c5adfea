"""The charts of configs: throughput, latency, pool telemetry, errors, models, semaphore."""

from __future__ import annotations

import base64
import io
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from poolbench.analysis.aggregate import CONFIG_COLUMNS, at_optimum, untrusted
from poolbench.analysis.analyse import Analysis
from poolbench.analysis.models import throughput_ceiling_rps
from poolbench.analysis.workload import WorkloadAnalysis
from poolbench.fmt import num, whole

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2")


@dataclass(frozen=True, kw_only=True)
class Chart:
    """One rendered chart: a title, a data: URI and a caption."""

    key: str
    title: str
    uri: str
    caption: str = ""


def png(fig: Figure) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def new_figure(width: float, height: float) -> Figure:
    """A pyplot-free figure (no global state, no GUI backend), imported on first use."""
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def figure(width: float = 6.4, height: float = 3.6) -> tuple[Figure, Axes]:
    fig = new_figure(width, height)
    ax = fig.add_subplot()
    ax.grid(True, alpha=0.3)
    return fig, ax


def swept(table: pd.DataFrame, column: str) -> bool:
    return table[column].nunique(dropna=True) > 1


def series_by(table: pd.DataFrame, column: str) -> list[tuple[Any, pd.DataFrame]]:
    return [
        (value, group.sort_values("pool_size"))
        for value, group in table.groupby(column, dropna=False, sort=True)
    ]


def pool_slice(workload: WorkloadAnalysis) -> pd.DataFrame:
    """Configs of a workload with the non-pool axes fixed at the optimum's values."""
    return at_optimum(workload.table, workload.optimum.row)


def _repetitions(runs: pd.DataFrame, configs: pd.DataFrame) -> pd.DataFrame:
    """The individual runs behind the aggregated configs in `configs`."""
    keys = list(CONFIG_COLUMNS)
    return runs.merge(configs[keys].drop_duplicates(), on=keys, how="inner")


def experiment_text(workload: WorkloadAnalysis, capacity: bool = False) -> str:
    """Which experiment a chart's points come from, for its caption."""
    if capacity or workload.experiment != "slo":
        users = workload.capacity_table["users"].max() if capacity else workload.key.get("users")
        return f"Capacity sweep (closed loop, {whole(users)} users). "
    return f"SLO sweep (open model, {num(workload.key.get('offered_rps'))} rps offered). "


def chart_throughput(analysis: Analysis) -> Chart | None:
    """Throughput of the headline workload's experiment; the USL only on capacity points."""
    workload = analysis.headline
    return _throughput(analysis, pool_slice(workload), capacity=workload.experiment != "slo")


def chart_capacity(analysis: Analysis) -> Chart | None:
    """The capacity curve of an SLO workload whose spec also ran capacity points (kind both)."""
    workload = analysis.headline
    if workload.experiment != "slo" or workload.capacity_table.empty:
        return None
    return _throughput(analysis, workload.capacity_table, capacity=True, key="capacity")


def _throughput(
    analysis: Analysis, table: pd.DataFrame, *, capacity: bool, key: str = "throughput"
) -> Chart | None:
    workload = analysis.headline
    if not swept(table, "pool_size"):
        return None
    fig, ax = figure()
    plotted = [table["rps"]]
    excluded: list[pd.DataFrame] = []
    for i, (overflow, group) in enumerate(series_by(table, "max_overflow")):
        color = PALETTE[i % len(PALETTE)]
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
            label=f"max_overflow={whole(overflow)} (mean)",
        )
        reps = _repetitions(analysis.sweep.runs, group)
        plotted.append(reps["rps"])
        bad = untrusted(reps)
        ax.scatter(
            reps.loc[~bad, "pool_size"],
            reps.loc[~bad, "rps"],
            s=14,
            color=color,
            alpha=0.8,
            zorder=3,
            label="each repetition" if i == 0 else None,
        )
        excluded.append(reps[bad])
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
    if capacity and workload.usl is not None and workload.usl_overflow is not None:
        overflow = float(workload.usl_overflow)
        ax.plot(
            xs,
            workload.usl.throughput(xs + overflow),
            "--",
            color="#555",
            label=f"USL fit (max_overflow={whole(overflow)}, R²={workload.usl.r2:.3f})",
        )
    if workload.inputs is not None:
        ceiling = [throughput_ceiling_rps(x, workload.inputs.hold_time_ms) for x in xs]
        ax.plot(xs, ceiling, ":", color="#b00", label="Little's-law ceiling pool_size / hold_time")
    if workload.optimum.row is not None and key == "throughput":
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
        key=key,
        title="Capacity: throughput vs pool_size" if capacity else "Throughput vs pool_size",
        uri=png(fig),
        caption=(
            experiment_text(workload, capacity=key == "capacity")
            + ("" if capacity else "Served rate: it plateaus at the offered rate. ")
            + f"Line: mean of repetitions; dots: each repetition; shaded: 95% CI of the mean "
            f"(t-distribution{reps_text}: wide when repetitions are few; clipped to the plotted "
            "range). Green band: recommended pool_size. Crosses: CPU-, host- or "
            "load-generator-bound runs (excluded from conclusions)."
        ),
    )


def _reps_text(table: pd.DataFrame) -> str:
    """`, n=2 per config` (or `, n=2-3 per config`): the repetitions behind each mean."""
    counts = table["reps"].dropna()
    if counts.empty:
        return ""
    low, high = int(counts.min()), int(counts.max())
    return f", n={low} per config" if low == high else f", n={low}-{high} per config"


def overflow_slice(workload: WorkloadAnalysis) -> pd.DataFrame:
    table = pool_slice(workload)
    row = workload.optimum.row
    if row is not None and not pd.isna(row.get("max_overflow")):
        table = table[table["max_overflow"] == row["max_overflow"]]
    return table.sort_values("pool_size")


def _overflow_label(table: pd.DataFrame) -> str:
    """Caption prefix naming the max_overflow slice a chart shows, when there is one."""
    overflows = table["max_overflow"].dropna().unique()
    return f"max_overflow={overflows[0]:g}; " if len(overflows) == 1 else ""


def chart_latency(analysis: Analysis) -> Chart | None:
    table = overflow_slice(analysis.headline)
    if not swept(table, "pool_size"):
        return None
    fig, ax = figure()
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
        uri=png(fig),
        caption=experiment_text(analysis.headline)
        + f"max_overflow={whole(overflow)}; client-side percentiles (open model: from the "
        "intended start).",
    )


def chart_heatmap(analysis: Analysis) -> Chart | None:
    table = pool_slice(analysis.headline)
    if not (swept(table, "pool_size") and swept(table, "max_overflow")):
        return None
    grid = table.pivot_table(
        index="max_overflow", columns="pool_size", values="rps", aggfunc="mean"
    )
    flagged = (
        table.assign(flag=untrusted(table))
        .pivot_table(index="max_overflow", columns="pool_size", values="flag", aggfunc="max")
        .reindex_like(grid)
        .fillna(False)
        .to_numpy(dtype=bool)
    )
    fig, ax = figure(6.4, 2.2 + 0.35 * len(grid.index))
    ax.grid(False)
    image = ax.imshow(grid.to_numpy(dtype=float), aspect="auto", cmap="viridis", origin="lower")
    ax.set_xticks(range(len(grid.columns)), [whole(c) for c in grid.columns])
    ax.set_yticks(range(len(grid.index)), [whole(i) for i in grid.index])
    if grid.size <= 120:
        values = grid.to_numpy(dtype=float)
        top = np.nanmax(values)
        for (r, c), value in np.ndenumerate(values):
            if not math.isnan(value):
                ax.text(
                    c,
                    r,
                    f"{value:.0f}{'*' if flagged[r, c] else ''}",
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
        uri=png(fig),
        caption=experiment_text(analysis.headline)
        + "Mean requests/s per config; * marks CPU-, host- or load-generator-bound configs.",
    )


def chart_pool_telemetry(analysis: Analysis) -> Chart | None:
    table = overflow_slice(analysis.headline)
    if not swept(table, "pool_size") or table["hold_time_mean_ms"].isna().all():
        return None
    fig, ax = figure()
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
        uri=png(fig),
        caption=(
            experiment_text(analysis.headline)
            + f"{_overflow_label(table)}App telemetry: waiting for a connection vs holding one "
            "(checkout to checkin)."
        ),
    )


def chart_errors(analysis: Analysis) -> Chart | None:
    table = pool_slice(analysis.headline)
    if not swept(table, "pool_size"):
        return None
    fig, ax = figure()
    for i, (overflow, group) in enumerate(series_by(table, "max_overflow")):
        ax.plot(
            group["pool_size"],
            group["error_rate"].fillna(0) * 100,
            marker="o",
            ms=4,
            color=PALETTE[i % len(PALETTE)],
            label=f"max_overflow={whole(overflow)}",
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
    return Chart(
        key="errors",
        title="Error rate vs pool_size",
        uri=png(fig),
        caption=experiment_text(analysis.headline),
    )


def chart_models(analysis: Analysis) -> Chart | None:
    workload = analysis.headline
    models = [c for c in workload.models if c.model.pool_size is not None]
    if not models or workload.optimum.row is None:
        return None
    fig, ax = figure()
    names = [c.model.name for c in models]
    sizes = [float(c.model.pool_size or 0) for c in models]
    colors = ["#d62728" if c.model.name.startswith("seed") else "#1f77b4" for c in models]
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
    reference = workload.reference["run_id"] if workload.reference else "-"
    return Chart(
        key="models",
        title="Model recommendations vs measured optimum",
        uri=png(fig),
        caption=(
            f"Out of sample: every model fed from run {reference}; the green line is the "
            f"optimum measured by the {experiment_text(workload).split(' (')[0]}."
        ),
    )


def chart_axis_curves(analysis: Analysis, axis: str, title: str) -> Chart | None:
    """Throughput vs pool_size with one line per value of another swept axis."""
    table = analysis.table
    if not (swept(table, axis) and swept(table, "pool_size")):
        return None
    row = analysis.recommended or {}
    if axis != "max_overflow" and not pd.isna(row.get("max_overflow", math.nan)):
        table = table[table["max_overflow"] == row["max_overflow"]]
    fig, ax = figure()
    for i, (value, group) in enumerate(series_by(table, axis)):
        curve = group.groupby("pool_size")["rps"].mean()
        color = PALETTE[i % len(PALETTE)]
        ax.plot(
            curve.index,
            curve.to_numpy(),
            marker="o",
            ms=4,
            color=color,
            label=f"{axis}={num(value, 0)}",
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
    return Chart(key=f"axis-{axis}", title=title, uri=png(fig), caption=caption)


def chart_semaphore(analysis: Analysis) -> Chart | None:
    table = analysis.headline.table
    if not swept(table, "http_concurrency_limit"):
        return None
    fig, ax = figure()
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
            color=PALETTE[i],
            label=f"{whole(pool)} connections",
        )
    ax.set_xlabel("http_concurrency_limit (semaphore)")
    ax.set_ylabel("throughput (requests/s)")
    ax.legend(fontsize=8)
    return Chart(
        key="semaphore",
        title="Semaphore limit sweep",
        uri=png(fig),
        caption=experiment_text(analysis.headline),
    )


def chart_compare(before: Analysis, after: Analysis) -> Chart | None:
    fig, ax = figure()
    drawn = False
    for label, analysis, style in (("before", before, "--"), ("after", after, "-")):
        table = overflow_slice(analysis.headline)
        if swept(table, "pool_size"):
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
    return Chart(key="compare", title="Throughput vs pool_size, before and after", uri=png(fig))
