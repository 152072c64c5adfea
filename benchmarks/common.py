"""What every benchmark prints beside its figures: the machine it measured on."""

from __future__ import annotations

import os
import platform
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


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
