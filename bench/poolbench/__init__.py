"""poolbench: size connection pools by measurement. The public Python API.

    from poolbench import analyse, load_sweep, recommend_snippet, render_analysis

    analysis = analyse(load_sweep("results/quick-20261126-055514"))
    print(recommend_snippet(analysis))
    render_analysis(analysis, "reports/quick.html")

Names are imported on first use, so `import poolbench.results` (done by every Locust process)
stays cheap.
"""

from __future__ import annotations

import importlib
import importlib.metadata
from typing import TYPE_CHECKING, Any

try:
    __version__ = importlib.metadata.version("poolbench")
except importlib.metadata.PackageNotFoundError:  # imported from a checkout that was never installed
    __version__ = "0+unknown"

_EXPORTS = {
    "PoolbenchError": "poolbench.errors",
    "UsageError": "poolbench.errors",
    "RunError": "poolbench.errors",
    "SweepSpec": "poolbench.spec",
    "Slo": "poolbench.objectives",
    "EndpointSlo": "poolbench.objectives",
    "Fleet": "poolbench.objectives",
    "load_spec": "poolbench.specfile",
    "run_sweep": "poolbench.sweep.runner",
    "Sweep": "poolbench.analysis.load",
    "load_sweep": "poolbench.analysis.load",
    "endpoint_figures": "poolbench.analysis.load",
    "aggregate": "poolbench.analysis.aggregate",
    "Analysis": "poolbench.analysis.analyse",
    "analyse": "poolbench.analysis.analyse",
    "find_optimum": "poolbench.analysis.optimum",
    "parse_threshold": "poolbench.analysis.thresholds",
    "check_thresholds": "poolbench.analysis.thresholds",
    "compare": "poolbench.analysis.compare",
    "recommend_snippet": "poolbench.analysis.recommend",
    "summary": "poolbench.analysis.summary",
    "SizingInputs": "poolbench.analysis.models",
    "size_all": "poolbench.analysis.models",
    "seed_formula": "poolbench.analysis.models",
    "littles_pool": "poolbench.analysis.models",
    "hikari_pool": "poolbench.analysis.models",
    "erlang_pool": "poolbench.analysis.models",
    "fit_usl": "poolbench.analysis.models",
    "instrument": "poolbench.instrumentation",
    "Instrumentation": "poolbench.instrumentation",
    "render_analysis": "poolbench.report.html",
    "render_comparison": "poolbench.report.html",
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
    from poolbench.analysis.aggregate import aggregate
    from poolbench.analysis.analyse import Analysis, analyse
    from poolbench.analysis.compare import compare
    from poolbench.analysis.load import Sweep, endpoint_figures, load_sweep
    from poolbench.analysis.models import (
        SizingInputs,
        erlang_pool,
        fit_usl,
        hikari_pool,
        littles_pool,
        seed_formula,
        size_all,
    )
    from poolbench.analysis.optimum import find_optimum
    from poolbench.analysis.recommend import recommend_snippet
    from poolbench.analysis.summary import summary
    from poolbench.analysis.thresholds import check_thresholds, parse_threshold
    from poolbench.errors import PoolbenchError, RunError, UsageError
    from poolbench.instrumentation import Instrumentation, instrument
    from poolbench.objectives import EndpointSlo, Fleet, Slo
    from poolbench.report.html import render_analysis, render_comparison
    from poolbench.spec import SweepSpec
    from poolbench.specfile import load_spec
    from poolbench.sweep.runner import run_sweep


def __getattr__(name: str) -> Any:
    """Import a public name from its module on first use (PEP 562)."""
    if name not in _EXPORTS:
        raise AttributeError(f"module 'bench' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value
