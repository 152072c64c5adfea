"""poolbench: size connection pools by measurement. The public Python API.

    from bench import analyse, load_sweep, recommend_snippet, render_analysis

    analysis = analyse(load_sweep("results/quick-20261126-055514"))
    print(recommend_snippet(analysis))
    render_analysis(analysis, "reports/quick.html")

Names are imported on first use, so `import bench.results` (done by every Locust process)
stays cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "PoolbenchError": "bench.errors",
    "UsageError": "bench.errors",
    "RunError": "bench.errors",
    "SweepSpec": "bench.spec",
    "Slo": "bench.objectives",
    "EndpointSlo": "bench.objectives",
    "Fleet": "bench.objectives",
    "load_spec": "bench.specfile",
    "run_sweep": "bench.sweep.runner",
    "Sweep": "bench.analysis.load",
    "load_sweep": "bench.analysis.load",
    "endpoint_figures": "bench.analysis.load",
    "aggregate": "bench.analysis.aggregate",
    "Analysis": "bench.analysis.analyse",
    "analyse": "bench.analysis.analyse",
    "find_optimum": "bench.analysis.optimum",
    "parse_threshold": "bench.analysis.thresholds",
    "check_thresholds": "bench.analysis.thresholds",
    "compare": "bench.analysis.compare",
    "recommend_snippet": "bench.analysis.recommend",
    "summary": "bench.analysis.summary",
    "SizingInputs": "bench.analysis.models",
    "size_all": "bench.analysis.models",
    "seed_formula": "bench.analysis.models",
    "littles_pool": "bench.analysis.models",
    "hikari_pool": "bench.analysis.models",
    "erlang_pool": "bench.analysis.models",
    "fit_usl": "bench.analysis.models",
    "instrument": "bench.instrumentation",
    "Instrumentation": "bench.instrumentation",
    "render_analysis": "bench.report.html",
    "render_comparison": "bench.report.html",
}
__all__ = [
    "Analysis",
    "EndpointSlo",
    "Fleet",
    "Instrumentation",
    "PoolbenchError",
    "RunError",
    "SizingInputs",
    "Slo",
    "Sweep",
    "SweepSpec",
    "UsageError",
    "aggregate",
    "analyse",
    "check_thresholds",
    "compare",
    "endpoint_figures",
    "erlang_pool",
    "find_optimum",
    "fit_usl",
    "hikari_pool",
    "instrument",
    "littles_pool",
    "load_spec",
    "load_sweep",
    "parse_threshold",
    "recommend_snippet",
    "render_analysis",
    "render_comparison",
    "run_sweep",
    "seed_formula",
    "size_all",
    "summary",
]

if TYPE_CHECKING:
    from bench.analysis.aggregate import aggregate
    from bench.analysis.analyse import Analysis, analyse
    from bench.analysis.compare import compare
    from bench.analysis.load import Sweep, endpoint_figures, load_sweep
    from bench.analysis.models import (
        SizingInputs,
        erlang_pool,
        fit_usl,
        hikari_pool,
        littles_pool,
        seed_formula,
        size_all,
    )
    from bench.analysis.optimum import find_optimum
    from bench.analysis.recommend import recommend_snippet
    from bench.analysis.summary import summary
    from bench.analysis.thresholds import check_thresholds, parse_threshold
    from bench.errors import PoolbenchError, RunError, UsageError
    from bench.instrumentation import Instrumentation, instrument
    from bench.objectives import EndpointSlo, Fleet, Slo
    from bench.report.html import render_analysis, render_comparison
    from bench.spec import SweepSpec
    from bench.specfile import load_spec
    from bench.sweep.runner import run_sweep


def __getattr__(name: str) -> Any:
    """Import a public name from its module on first use (PEP 562)."""
    if name not in _EXPORTS:
        raise AttributeError(f"module 'bench' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value
