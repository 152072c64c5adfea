"""Render an Analysis or a Comparison as one self-contained HTML file (inline charts)."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jinja2
import pandas as pd

from poolbench.analysis.analyse import Analysis
from poolbench.analysis.compare import Comparison, p_text
from poolbench.analysis.load import Sweep
from poolbench.fmt import num, pct, signed_pct, whole
from poolbench.objectives import Demand
from poolbench.report import charts
from poolbench.report.charts import Chart
from poolbench.report.timeseries import chart_time_series
from poolbench.results import UNTRUSTED_BOTTLENECKS
from poolbench.secrets import scrub_secrets, scrub_tree

# A sweep's report, by default inside its directory.
REPORT_FILE = "report.html"
# The runs.csv columns the "Every run" table shows: converting only these keeps a 10,000-run
# report's rendering from copying every column of every run into dicts.
RUN_TABLE_COLUMNS = (
    "run_id", "repetition", "rps", "p50_ms", "p95_ms", "p99_ms", "error_rate",
    "acquire_wait_p95_ms", "hold_time_mean_ms", "peak_checked_out", "pool_timeouts",
    "pg_peak_connections", "app_cpu_pct", "locust_cpu_pct", "locust_cpu_warning", "pg_cpu_pct",
    "bottleneck",
)  # fmt: skip

_env = jinja2.Environment(
    loader=jinja2.PackageLoader("poolbench.report", "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
_env.filters.update(num=lambda v, d=1: num(v, d, grouping=True), pct=pct, whole=whole)
_env.globals["fleet_demand"] = Demand.of


def build_charts(analysis: Analysis) -> list[Chart]:
    """Every chart whose axes were swept; the others are skipped."""
    builders: list[Callable[[Analysis], Chart | None]] = [
        charts.chart_throughput,
        charts.chart_capacity,
        charts.chart_latency,
        charts.chart_heatmap,
        charts.chart_pool_telemetry,
        charts.chart_errors,
        charts.chart_models,
        charts.chart_semaphore,
        lambda a: charts.chart_axis_curves(a, "queries_per_request", "Queries per request"),
        lambda a: charts.chart_axis_curves(a, "users", "Users (concurrency)"),
        chart_time_series,
    ]
    return [chart for build in builders if (chart := build(analysis)) is not None]


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
        "slo": analysis.slo.passes(row) if analysis.slo.is_set else None,
        "fleet": None
        if fleet is None or pd.isna(row["connections"])
        else fleet.fits(Demand.of(row)),
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
        "runs": sweep.runs[[c for c in RUN_TABLE_COLUMNS if c in sweep.runs]].to_dict("records"),
        "environment": _environment(sweep),
        "spec_text": spec_as_toml(scrub_tree(sweep.spec.to_dict())) if sweep.spec else "",
        "generated": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "untrusted": UNTRUSTED_BOTTLENECKS,
    }


def default_report_path(sweep_dir: Path) -> Path:
    """Beside the results, wherever the command runs: `<sweep dir>/report.html`.

    For a Locust stats CSV (`<prefix>_stats.csv`): `<prefix>.html` in its directory.
    """
    sweep_dir = Path(sweep_dir)
    if sweep_dir.is_dir():
        return sweep_dir / REPORT_FILE
    name = sweep_dir.name.removesuffix("_stats.csv").removesuffix(".csv") or "sweep"
    return sweep_dir.parent / f"{name}.html"


def _write(html: str, out: Path | str) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    # Last line of defence: no `scheme://user:password@` survives into the file.
    out.write_text(scrub_secrets(html), encoding="utf-8")
    return out


def render_analysis(analysis: Analysis, out: Path | str) -> Path:
    """Write the HTML report of an analysed sweep to `out`."""
    html = _env.get_template("report.html.j2").render(
        mode="report", **_context(analysis, build_charts(analysis))
    )
    return _write(html, out)


def render_comparison(comparison: Comparison, out: Path | str) -> Path:
    """Write a before/after HTML report of two analysed sweeps."""
    before, after = comparison.before, comparison.after
    html = _env.get_template("report.html.j2").render(
        mode="compare",
        title=f"poolbench comparison: {before.sweep.name} -> {after.sweep.name}",
        before=before,
        after=after,
        deltas=comparison.deltas.to_dict("records"),
        threshold_pct=comparison.threshold_pct,
        alpha=comparison.alpha,
        regressions=comparison.regressions(),
        untrusted_note=comparison.untrusted_note(),
        p_text=p_text,
        signed_pct=signed_pct,
        charts=[c for c in (charts.chart_compare(before, after),) if c is not None],
        generated=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
    )
    return _write(html, out)
