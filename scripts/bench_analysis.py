"""Benchmark the analysis on a synthetic results table: `python scripts/bench_analysis.py`.

Builds a realistic sweep of 1,000 runs (10 pool sizes x 4 max_overflow x 5 queries-per-request x
5 repetitions) with the test suite's generator, then times each stage and reports peak memory.
"""

from __future__ import annotations

import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import aggregate, analyse, load_sweep, render_analysis  # noqa: E402
from tests.synthetic_sweep import make_sweep  # noqa: E402


def timed(label: str, func, *args, **kwargs):  # type: ignore[no-untyped-def]
    """Run func, print its wall time, return its result."""
    started = time.perf_counter()
    result = func(*args, **kwargs)
    print(f"{label:<28} {time.perf_counter() - started:7.3f} s")
    return result


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        sweep_dir = make_sweep(
            Path(tmp),
            name="bench-20250101-120000",
            pool_sizes=(1, 2, 4, 8, 12, 16, 20, 24, 32, 48),
            max_overflows=(0, 4, 8, 16),
            queries=(1, 2, 3, 5, 10),
            repetitions=5,
            history=False,
        )
        sweep = timed("load (runs.csv + manifest)", load_sweep, sweep_dir)
        print(f"{'runs':<28} {len(sweep.runs):7d}")
        timed("aggregate repetitions", aggregate, sweep.runs)
        analysis = timed("analyse (models + optimum)", analyse, sweep)
        out = Path(tmp) / "report.html"
        timed("render HTML report", render_analysis, analysis, out)
        print(f"{'report size':<28} {out.stat().st_size / 1e6:7.2f} MB")
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{'peak RSS':<28} {peak_mb:7.1f} MB")


if __name__ == "__main__":
    main()
