"""What every benchmark prints beside its figures: the machine it measured on."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Bounds a sweep of a shipped spec many times over: a hang shows as a failure, never forever.
SWEEP_TIMEOUT_S = 1800


def cpu_model() -> str:
    """The CPU model from /proc/cpuinfo (the platform's name elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine() -> str:
    """`2 cores, <CPU model>, Python 3.11.2`: the line under every benchmark table."""
    return f"{os.cpu_count()} cores, {cpu_model()}, Python {platform.python_version()}"


def poolbench(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    """Run `poolbench ARGS` from the checkout; on failure exit with one line naming it."""
    argv = [sys.executable, "-m", "poolbench.cli", *args]
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        sys.exit(f"error: poolbench {' '.join(args[:2])} failed: {done.stderr.strip()[-2000:]}")
    return done


def sweep(spec: str, out: Path, *args: str, timeout: float = SWEEP_TIMEOUT_S) -> Path:
    """`poolbench sweep SPEC --out OUT --no-report ARGS`; the sweep directory it wrote."""
    poolbench("sweep", spec, "--out", str(out), "--no-report", *args, timeout=timeout)
    (sweep_dir,) = [p for p in out.iterdir() if p.is_dir()]
    return sweep_dir
