"""Run-to-run noise against window length: `python benchmarks/noise.py [SPEC]`.

For each window length (`--windows`, seconds) one grid sweep of SPEC (default
quick) at the sizes around its SLO boundary (`--pool-sizes`), `--repetitions`
times each, on real Postgres, app and Locust. Prints, per window and pool size, the mean,
standard deviation and coefficient of variation of the p95 and of the served rate across
repetitions, and how many repetitions met the SLO (as the analysis judges a run). The rule that
picks the defaults from them:

- window: the shortest whose served rate varies by at most MAX_RPS_CV (the CV pooled over the
  sizes that met the SLO in most repetitions). The served rate's spread is Poisson's,
  1/sqrt(rate x window), and the verdict's shortfall check (3 of those) must catch a pool that
  serves too little; the p95's spread comes from bursts and the shared host, and a longer window
  hardly narrows it (see the table).
- repetitions: at that window, the fewest n for which the config at the SLO's edge (the largest
  size that missed the SLO in most of its runs), one that met it in a share p of its runs, is
  recommended at most MAX_EDGE_ACCEPTANCE of the time: p^n <= MAX_EDGE_ACCEPTANCE, since a config
  must meet the SLO in every repetition.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import machine, sweep  # noqa: E402
from poolbench.analysis.optimum import run_failure  # noqa: E402
from poolbench.objectives import Slo  # noqa: E402
from poolbench.results import UNTRUSTED_BOTTLENECKS  # noqa: E402
from poolbench.shipped import spec_path  # noqa: E402
from poolbench.specfile import load_spec  # noqa: E402

MAX_RPS_CV = 0.05  # at most the spread of a 100 rps Poisson count over 4 s
MAX_EDGE_ACCEPTANCE = 0.25


def grid_rows(spec: str, window_s: float, sizes: str, reps: int, out: Path) -> list[dict[str, str]]:
    """One grid sweep at this window; its runs.csv rows."""
    sweep_dir = sweep(
        spec, out, "--search", "grid", "--duration", f"{window_s:g}",
        "--repetitions", str(reps), "--set", f"grid.pool_size={sizes}",
    )  # fmt: skip
    with open(sweep_dir / "runs.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def spread(values: list[float]) -> tuple[float, float, float]:
    """Mean, standard deviation, coefficient of variation."""
    mean = statistics.fmean(values)
    sd = statistics.stdev(values) if len(values) > 1 else float("nan")
    return mean, sd, sd / mean if mean else float("nan")


def repetitions_for(edge_pass_rate: float, most: int = 10) -> int | None:
    """The fewest repetitions n with edge_pass_rate^n <= MAX_EDGE_ACCEPTANCE."""
    for n in range(1, most + 1):
        if edge_pass_rate**n <= MAX_EDGE_ACCEPTANCE:
            return n
    return None


def verdicts(rows: list[dict[str, str]], slo: Slo) -> int:
    """How many runs met the SLO as the analysis judges them (trusted, served, p95, errors)."""
    return sum(
        row["bottleneck"] not in UNTRUSTED_BOTTLENECKS and run_failure(row, slo) is None
        for row in rows
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("spec", nargs="?", default="quick")
    parser.add_argument("--windows", default="4,6,12", help="Window lengths, seconds.")
    parser.add_argument("--pool-sizes", default="[4,5,6]", help="Sizes around the SLO boundary.")
    parser.add_argument("--repetitions", type=int, default=5)
    args = parser.parse_args()
    windows = [float(w) for w in args.windows.split(",")]
    slo = load_spec(spec_path(args.spec)).slo
    print(f"Run-to-run noise, `{args.spec}`, SLO {slo.describe()}, pool sizes {args.pool_sizes}, ")
    print(f"{args.repetitions} repetitions per window\n")
    print("| window | pool_size | p95 mean ms | p95 sd ms | p95 CV | rps mean | rps CV | met SLO |")
    print("|---|---|---|---|---|---|---|---|")
    # Per window: the squared rps CVs of the sizes that met the SLO in most runs (pooled below:
    # one CV from 5 runs is itself uncertain by about a third).
    spreads: dict[float, list[float]] = {}
    # Per window and size: runs that met the SLO, and runs.
    tally: dict[float, dict[float, tuple[int, int]]] = {}
    wall: dict[float, float] = {}
    for window_s in windows:
        with tempfile.TemporaryDirectory(prefix="poolbench-noise-") as tmp:
            started = time.perf_counter()
            rows = grid_rows(args.spec, window_s, args.pool_sizes, args.repetitions, Path(tmp))
            wall[window_s] = time.perf_counter() - started
        by_size: dict[float, list[dict[str, str]]] = {}
        for row in rows:
            by_size.setdefault(float(row["pool_size"]), []).append(row)
        for size, runs in sorted(by_size.items()):
            p95 = spread([float(r["p95_ms"]) for r in runs])
            rps = spread([float(r["rps"]) for r in runs])
            met = verdicts(runs, slo)
            print(
                f"| {window_s:g} s | {size:g} | {p95[0]:.1f} | {p95[1]:.1f} | {p95[2]:.0%} | "
                f"{rps[0]:.1f} | {rps[2]:.1%} | {met} of {len(runs)} |"
            )
            if met > len(runs) / 2:
                spreads.setdefault(window_s, []).append(rps[2] ** 2)
            tally.setdefault(window_s, {})[size] = (met, len(runs))
    print(f"\nmachine: {machine()}")
    print("wall per sweep: " + ", ".join(f"{w:g} s window: {s:.0f} s" for w, s in wall.items()))
    pooled = {w: statistics.fmean(v) ** 0.5 for w, v in spreads.items()}
    print("served-rate CV pooled over those sizes: " + ", ".join(
        f"{w:g} s: {cv:.1%}" for w, cv in pooled.items()))  # fmt: skip
    chosen = next((w for w in windows if w in pooled and pooled[w] <= MAX_RPS_CV), None)
    print(
        "window: "
        + (
            f"{chosen:g} s, the shortest whose pooled served-rate CV <= {MAX_RPS_CV:.0%}"
            if chosen is not None
            else f"none kept the served-rate CV <= {MAX_RPS_CV:.0%}"
        )
    )
    if chosen is None:
        return
    edge = [size for size, (met, runs) in tally[chosen].items() if met <= runs / 2]
    if edge:
        met, runs = tally[chosen][max(edge)]
        print(
            f"repetitions: at {chosen:g} s pool_size {max(edge):g} met the SLO in {met} of {runs} "
            f"runs; {repetitions_for(met / runs)} repetitions accept it at most "
            f"{MAX_EDGE_ACCEPTANCE:.0%} of the time"
        )
    else:
        print(
            f"repetitions: at {chosen:g} s every size met the SLO in most runs; add a smaller size"
        )


if __name__ == "__main__":
    main()
