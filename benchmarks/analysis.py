"""Time the analysis of a large synthetic sweep: `python benchmarks/analysis.py [--runs 10000]`.

Builds a sweep of 1,000 or 10,000 runs with the tests' generator, poolbench.analysis.synthetic
(10 pool sizes x 4 max_overflow x 5 queries-per-request x 5 repetitions; 10,000 adds 5 users x
2 semaphore limits),
times each stage in this process, then the whole `poolbench analyze` and `poolbench report`
commands (start-up included) in child processes, and prints a Markdown table against the target:
load + aggregate + analyse of 10,000 runs under 5 s (issue 12). Render is timed on its own.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import ROOT, machine  # noqa: E402
from poolbench import aggregate, analyse, load_sweep, render_analysis  # noqa: E402
from poolbench.analysis.synthetic import make_sweep  # noqa: E402

TARGET_S = 5.0
# Each whole command is bounded: a regression shows as a miss, never as a hang.
COMMAND_TIMEOUT_S = 120
GRIDS: dict[int, dict[str, Any]] = {
    1_000: {"users": (24,), "http_limits": (20,)},
    10_000: {"users": (16, 24, 32, 48, 64), "http_limits": (10, 20)},
}


def timed(func: Callable[..., Any], *args: Any) -> tuple[Any, float]:
    """Run func once; its result and wall time in seconds."""
    started = time.perf_counter()
    result = func(*args)
    return result, time.perf_counter() - started


def command_seconds(*args: str) -> float:
    """Wall time of one `poolbench` command in a fresh interpreter (start-up included)."""
    argv = [sys.executable, "-m", "poolbench.cli", *args]
    started = time.perf_counter()
    done = subprocess.run(
        argv, cwd=ROOT, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S, check=False
    )
    elapsed = time.perf_counter() - started
    if done.returncode not in (0, 1):  # 1: a threshold; anything else is a broken run
        raise SystemExit(f"{' '.join(argv)} exited {done.returncode}:\n{done.stderr[-2000:]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, choices=sorted(GRIDS), default=10_000)
    parser.add_argument("--no-commands", action="store_true", help="skip the CLI timings")
    args = parser.parse_args()
    rows: list[tuple[str, str, str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        sweep_dir = make_sweep(
            Path(tmp),
            name="bench-20250101-120000",
            pool_sizes=(1, 2, 4, 8, 12, 16, 20, 24, 32, 48),
            max_overflows=(0, 4, 8, 16),
            queries=(1, 2, 3, 5, 10),
            repetitions=5,
            history=False,
            **GRIDS[args.runs],
        )
        sweep, load_s = timed(load_sweep, sweep_dir)
        table, aggregate_s = timed(aggregate, sweep.runs)
        analysis, analyse_s = timed(analyse, sweep)  # analyse() aggregates again, inside
        out = Path(tmp) / "report.html"
        _, render_s = timed(render_analysis, analysis, out)
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        total = load_s + analyse_s
        n = len(sweep.runs)
        rows += [
            ("load (runs.csv + manifest)", f"{load_s:.2f} s", ""),
            ("aggregate repetitions (alone)", f"{aggregate_s:.2f} s", "inside analyse"),
            ("analyse (aggregate + optimum + models + warnings)", f"{analyse_s:.2f} s", ""),
            (
                "**load + analyse**",
                f"**{total:.2f} s**",
                f"< {TARGET_S:g} s at 10,000 runs: "
                + ("met" if total < TARGET_S else f"MISSED by {total - TARGET_S:.2f} s"),
            ),
            ("render HTML report (not in the target)", f"{render_s:.2f} s", ""),
            ("report size", f"{out.stat().st_size / 1e6:.2f} MB", f"{len(table)} configs"),
            ("peak RSS (this process)", f"{peak_mb:.0f} MB", ""),
        ]
        if not args.no_commands:
            for name, argv in (
                ("`poolbench analyze` (whole command)", ("analyze", str(sweep_dir))),
                (
                    "`poolbench report` (whole command)",
                    ("report", str(sweep_dir), "--out", str(Path(tmp) / "cli.html")),
                ),
            ):
                seconds = command_seconds(*argv)
                verdict = "met" if seconds < TARGET_S else f"MISSED by {seconds - TARGET_S:.2f} s"
                rows.append((name, f"{seconds:.2f} s", f"aim < {TARGET_S:g} s: {verdict}"))
    print(f"Analysis of {n:,} synthetic runs ({len(table):,} configs, {n // len(table)} reps each)")
    print(f"Machine: {machine()}")
    print()
    print("| stage | time | target / note |")
    print("|---|---:|---|")
    for stage, value, note in rows:
        print(f"| {stage} | {value} | {note} |")


if __name__ == "__main__":
    main()
