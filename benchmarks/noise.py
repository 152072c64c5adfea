"""Run-to-run noise against window length: `python benchmarks/noise.py [SPEC]`.

For each window length (`--windows`, seconds) one grid sweep of SPEC (default
bench/specs/quick.toml) at the sizes around its SLO boundary (`--pool-sizes`), `--repetitions`
times each, on real Postgres, app and Locust. Prints, per window and pool size, the mean,
standard deviation and coefficient of variation of the p95 and of the served rate across
repetitions, and how many repetitions met the SLO. The rule that picks the defaults from them:

- window: the shortest whose p95 varies by at most MAX_P95_CV (coefficient of variation) at every
  size that met the SLO in most repetitions, and whose served rate varies by at most MAX_RPS_CV;
- repetitions: the fewest whose 95% t-interval of the mean p95 is within MAX_P95_HALF_WIDTH of
  the mean at that window (a verdict needs every repetition to pass, so more repetitions also
  make a lucky pass rarer).
"""

from __future__ import annotations

import argparse
import csv
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.analysis.optimum import run_failure  # noqa: E402
from bench.objectives import Slo  # noqa: E402
from bench.results import UNTRUSTED_BOTTLENECKS  # noqa: E402
from bench.specfile import load_spec  # noqa: E402
from benchmarks.common import ROOT, machine  # noqa: E402

MAX_P95_CV = 0.10
MAX_RPS_CV = 0.05
MAX_P95_HALF_WIDTH = 0.15
SWEEP_TIMEOUT_S = 1800


def sweep(spec: str, window_s: float, sizes: str, reps: int, out: Path) -> list[dict[str, str]]:
    """One grid sweep at this window; its runs.csv rows."""
    argv = [sys.executable, "-m", "bench.cli", "sweep", spec, "--search", "grid", "--no-report"]
    argv += ["--duration", f"{window_s:g}", "--repetitions", str(reps), "--out", str(out)]
    argv += ["--set", f"grid.pool_size={sizes}"]
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=SWEEP_TIMEOUT_S)
    if done.returncode != 0:
        sys.exit(f"error: the sweep at {window_s:g} s failed: {done.stderr.strip()[-2000:]}")
    (sweep_dir,) = [p for p in out.iterdir() if p.is_dir()]
    with open(sweep_dir / "runs.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def spread(values: list[float]) -> tuple[float, float, float]:
    """Mean, standard deviation, coefficient of variation."""
    mean = statistics.fmean(values)
    sd = statistics.stdev(values) if len(values) > 1 else float("nan")
    return mean, sd, sd / mean if mean else float("nan")


def repetitions_for(cv: float, most: int = 10) -> int | None:
    """The fewest repetitions whose 95% t-interval half-width is within MAX_P95_HALF_WIDTH."""
    for n in range(2, most + 1):
        if stats.t.ppf(0.975, n - 1) * cv / n**0.5 <= MAX_P95_HALF_WIDTH:
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
    parser.add_argument("spec", nargs="?", default="bench/specs/quick.toml")
    parser.add_argument("--windows", default="3,6,12", help="Window lengths, seconds.")
    parser.add_argument("--pool-sizes", default="[3,4]", help="Sizes around the SLO boundary.")
    parser.add_argument("--repetitions", type=int, default=5)
    args = parser.parse_args()
    windows = [float(w) for w in args.windows.split(",")]
    slo = load_spec(Path(args.spec)).slo
    print(f"Run-to-run noise, `{args.spec}`, SLO {slo.describe()}, pool sizes {args.pool_sizes}, ")
    print(f"{args.repetitions} repetitions per window\n")
    print("| window | pool_size | p95 mean ms | p95 sd ms | p95 CV | rps mean | rps CV | met SLO |")
    print("|---|---|---|---|---|---|---|---|")
    # Per window: the largest p95 and rps CVs among the sizes that met the SLO in most runs.
    worst: dict[float, tuple[float, float]] = {}
    wall: dict[float, float] = {}
    for window_s in windows:
        with tempfile.TemporaryDirectory(prefix="poolbench-noise-") as tmp:
            started = time.perf_counter()
            rows = sweep(args.spec, window_s, args.pool_sizes, args.repetitions, Path(tmp))
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
                cv_p95, cv_rps = worst.get(window_s, (0.0, 0.0))
                worst[window_s] = (max(cv_p95, p95[2]), max(cv_rps, rps[2]))
    print("\nwall per sweep: " + ", ".join(f"{w:g} s window: {s:.0f} s" for w, s in wall.items()))
    calm = [w for w in windows if w in worst and worst[w][0] <= MAX_P95_CV]
    chosen = next((w for w in calm if worst[w][1] <= MAX_RPS_CV), None)
    if chosen is None:
        print(f"no window kept the p95 CV <= {MAX_P95_CV:.0%} and the rps CV <= {MAX_RPS_CV:.0%}")
    else:
        print(
            f"rule: the shortest window with p95 CV <= {MAX_P95_CV:.0%} and rps CV <= "
            f"{MAX_RPS_CV:.0%} where the SLO was met: {chosen:g} s; repetitions for a 95% "
            f"interval of the mean p95 within +-{MAX_P95_HALF_WIDTH:.0%}: "
            f"{repetitions_for(worst[chosen][0])}"
        )
    print(f"machine: {machine()}")


if __name__ == "__main__":
    main()
