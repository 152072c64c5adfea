"""Peak RSS of the Locust processes and of the app over a long steady run (issue 12, item 5).

Run from the repository root: `.venv/bin/python benchmarks/latency_memory.py` (10 minutes plus
start-up; `--minutes` to change; on a shared machine under `flock /tmp/poolbench-cpu.lock`). It
writes a one-point spec to a temporary directory (single_query, open model at `--rps` requests/s
offered, a 20 ms simulated query, an ample pool) and runs `poolbench sweep` on it as a subprocess,
then prints a Markdown table: the peak RSS of every Locust process and of the app (each process
of the sweep's tree sampled with psutil every half second for the whole run, start-up and the
final write included: the sweep's own `*_peak_rss_mb` columns cover only the measured window),
the run's p50/p95/p99 latency and the app's hold-time and acquire-wait percentiles, and the
machine. The script only drives the CLI and reads runs.csv, so the same file measures an older
checkout: `cd /tmp/hdr-before && PYTHONPATH=/tmp/hdr-before /work/main/.venv/bin/python
/work/main/benchmarks/latency_memory.py --root /tmp/hdr-before`. Everything it starts is stopped;
the sweep listens on 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

# The script's own checkout, whatever --root measures (and PYTHONPATH points at).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import ROOT, machine  # noqa: E402

DEFAULT_MINUTES = 10.0
DEFAULT_RPS = 120.0
USERS = 40
SAMPLE_INTERVAL_S = 0.5
# Bound on the whole sweep: the run, plus Postgres, seeding and the app's start and stop.
OVERHEAD_S = 300.0
# The steady state this measures: memory should not grow with the run's length.
TARGET = "Locust and app peak RSS flat in the run's length (no per-request growth)"
SPEC = """\
name = "latency-memory"
description = "single_query at a steady open-model rate for a long run: peak RSS"
scenario = "single_query"
shape = "constant"
open_model_rps = {rate_per_user}

[grid]
pool_size = [8]
max_overflow = [0]
http_concurrency_limit = [20]
users = [{users}]
pg_max_size = [2]
pg_max_connections = [100]
queries_per_request = [1]

[workload]
sim_latency_ms = 20
think_time_s = 0

[timing]
repetitions = 1
warmup_s = 5
duration_s = {duration_s}
spawn_rate = 100

[slo]
p95_ms = 100
max_error_rate = 0.01
"""
FIGURES = (
    "requests", "rps", "p50_ms", "p95_ms", "p99_ms", "max_ms",
    "hold_time_mean_ms", "hold_time_p95_ms", "acquire_wait_p95_ms", "acquire_wait_p99_ms",
    "app_peak_rss_mb", "locust_peak_rss_mb", "bottleneck",
)  # fmt: skip


def role(proc: psutil.Process) -> str | None:
    """Which part of the sweep a process is: locust, app, or None (not reported)."""
    try:
        cmdline = " ".join(proc.cmdline())
    except psutil.Error:
        return None
    if "downstream" in cmdline:
        return None
    if "locust" in cmdline:
        return "locust"
    if "uvicorn" in cmdline or "sample_app" in cmdline:
        return "app"
    return None


class PeakRss:
    """Peak RSS of every locust and app process under a root pid, sampled in the background."""

    def __init__(self, root_pid: int) -> None:
        self.root = psutil.Process(root_pid)
        self.peaks: dict[tuple[str, int], int] = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        while not self.stop.wait(SAMPLE_INTERVAL_S):
            try:
                children = self.root.children(recursive=True)
            except psutil.Error:
                return
            for proc in children:
                name = role(proc)
                if name is None:
                    continue
                try:
                    rss = proc.memory_info().rss
                except psutil.Error:
                    continue
                key = (name, proc.pid)
                self.peaks[key] = max(self.peaks.get(key, 0), rss)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=DEFAULT_MINUTES)
    parser.add_argument("--rps", type=float, default=DEFAULT_RPS, help="offered requests/s")
    parser.add_argument("--workers", type=int, default=1, help="local Locust processes")
    parser.add_argument("--root", type=Path, default=ROOT, help="checkout to run the sweep of")
    args = parser.parse_args()
    duration_s = round(args.minutes * 60)
    with tempfile.TemporaryDirectory(prefix="latency-memory-") as tmp:
        spec = Path(tmp) / "spec.toml"
        spec.write_text(
            SPEC.format(rate_per_user=args.rps / USERS, users=USERS, duration_s=duration_s)
        )
        env = dict(os.environ) | {"PYTHONPATH": str(args.root)}
        command = [sys.executable, "-c", "from poolbench.cli import main; main()", "sweep"]
        command += [str(spec), "--out", tmp, "--workers", str(args.workers)]
        started = time.monotonic()
        sweep = subprocess.Popen(
            command, cwd=args.root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        peaks = PeakRss(sweep.pid)
        peaks.thread.start()
        try:
            output, _ = sweep.communicate(timeout=duration_s + OVERHEAD_S)
        except subprocess.TimeoutExpired:
            sweep.kill()
            output, _ = sweep.communicate()
        finally:
            peaks.stop.set()
            peaks.thread.join(timeout=5)
        elapsed_s = time.monotonic() - started
        rows = [row for path in Path(tmp).glob("*/runs.csv") for row in csv.DictReader(path.open())]
        if sweep.returncode != 0 or not rows:
            sys.stderr.write(output.decode(errors="replace")[-4000:])
            return 1
        row = rows[0]
    commit = subprocess.run(
        ["git", "-C", str(args.root), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    print(f"## Latency memory: {args.minutes:g} min at {args.rps:g} rps offered (commit {commit})")
    print()
    print(f"Machine: {machine()}; the sweep took {elapsed_s:.0f} s.")
    print(f"Target: {TARGET}.")
    print()
    print("| process | pid | peak RSS (MiB) |")
    print("|---|---|---|")
    for (name, pid), rss in sorted(peaks.peaks.items()):
        print(f"| {name} | {pid} | {rss / 2**20:.1f} |")
    print()
    print("| figure | value |")
    print("|---|---|")
    for key in FIGURES:
        print(f"| {key} | {row.get(key, '')} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
