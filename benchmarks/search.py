"""Adaptive search against the full grid on one spec: `python benchmarks/search.py [SPEC]`.

Runs `poolbench sweep SPEC --search grid` and `--search adaptive` one after the other (real
Postgres, app and Locust; the default spec, quick, takes about 5 + 2 minutes),
analyses both with `poolbench analyze --json`, and prints runs, wall time and the recommended
pool size of each against issue 12's target: within 1 connection of the grid's optimum using at
most 40% of its runs.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import machine, poolbench, sweep  # noqa: E402

MAX_RUN_SHARE = 0.4
MAX_CONNECTIONS_APART = 1


def measure(spec: str, search: str, out: Path, extra: list[str]) -> dict[str, Any]:
    """One sweep with this search: runs, wall seconds, the recommended config."""
    started = time.perf_counter()
    sweep_dir = sweep(spec, out, "--search", search, *extra)
    wall_s = time.perf_counter() - started
    analysis = out / "analysis.json"
    poolbench("analyze", str(sweep_dir), "--json", str(analysis), timeout=300)
    result = json.loads(analysis.read_text())
    rec = result.get("recommendation") or {}
    runs = sum(1 for _ in (sweep_dir / "runs").iterdir())
    return {
        "search": search,
        "runs": runs,
        "wall_s": wall_s,
        "pool_size": rec.get("pool_size"),
        "connections": rec.get("connections"),
        "dir": sweep_dir,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("spec", nargs="?", default="quick")
    parser.add_argument("--keep", type=Path, help="Keep both sweeps under this directory.")
    parser.add_argument("--set", action="append", default=[], help="Passed to both sweeps.")
    args = parser.parse_args()
    extra = [item for value in args.set for item in ("--set", value)]
    with tempfile.TemporaryDirectory(prefix="poolbench-search-") as tmp:
        parent = args.keep or Path(tmp)
        rows = [
            measure(args.spec, search, parent / search, extra) for search in ("grid", "adaptive")
        ]
    grid, adaptive = rows
    share = adaptive["runs"] / grid["runs"]
    apart = (
        abs(adaptive["connections"] - grid["connections"])
        if None not in (adaptive["connections"], grid["connections"])
        else None
    )
    print(f"Adaptive search against the full grid, `{args.spec}` (one session, grid first)\n")
    print("| search | runs | wall | recommended pool_size (connections) |")
    print("|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['search']} | {row['runs']} | {row['wall_s']:.0f} s | "
            f"{row['pool_size']} ({row['connections']}) |"
        )
    met = apart is not None and apart <= MAX_CONNECTIONS_APART and share <= MAX_RUN_SHARE
    print(
        f"\nadaptive: {share:.0%} of the grid's runs (target <= {MAX_RUN_SHARE:.0%}), "
        f"{'-' if apart is None else f'{apart:g}'} connection(s) from the grid's optimum "
        f"(target <= {MAX_CONNECTIONS_APART}): {'met' if met else 'MISSED'}"
    )
    print(f"machine: {machine()}")
    if args.keep:
        print(f"sweeps: {grid['dir']} {adaptive['dir']}")


if __name__ == "__main__":
    main()
