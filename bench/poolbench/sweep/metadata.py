"""What a sweep records about where it ran: versions, git revision, host, into its Manifest."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import socket
import subprocess
import sys
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil

from poolbench.results import RUNNING, Manifest
from poolbench.secrets import redact_dsn
from poolbench.spec import SweepSpec
from poolbench.sweep.commands import RemoteWorkers

VERSIONED_PACKAGES = (
    "poolbench", "locust", "fastapi", "uvicorn", "sqlalchemy", "asyncpg", "httpx", "pydantic",
    "numpy", "pandas", "scipy", "psutil", "typer", "rich",
)  # fmt: skip


def now() -> str:
    """The current UTC time as an ISO 8601 string, to the second."""
    return datetime.now(UTC).isoformat(timespec="seconds")


# poolbench's own source checkout (bench/poolbench/sweep/ -> the repository), when it runs from one.
CHECKOUT = Path(__file__).resolve().parents[3]


def git_sha() -> str | None:
    """poolbench's checkout's commit, `-dirty` when it has uncommitted changes; None installed."""
    if not (CHECKOUT / ".git").exists() or not (CHECKOUT / "bench" / "poolbench").is_dir():
        return None  # a wheel: the directory above site-packages is not our checkout
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=CHECKOUT, capture_output=True, text=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain"],
            cwd=CHECKOUT,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{sha}-dirty" if sha and dirty else sha or None


def versions() -> dict[str, str | None]:
    """Python's and every measured package's version."""
    found: dict[str, str | None] = {"python": platform.python_version()}
    for name in VERSIONED_PACKAGES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = None
    return found


def host() -> dict[str, Any]:
    """Cores, memory and platform of this machine."""
    return {
        "cores": os.cpu_count(),
        "physical_cores": psutil.cpu_count(logical=False),
        "memory_mb": round(psutil.virtual_memory().total / 2**20),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
    }


def manifest(
    spec: SweepSpec,
    spec_path: str,
    dsn: str | None,
    workers: int | None,
    remote: RemoteWorkers | None,
) -> Manifest:
    """A new sweep's manifest (status `running`)."""
    if dsn:
        database = redact_dsn(dsn)
    elif spec.target is not None:
        database = "the target's own (not probed: give --dsn to measure it)"
    else:
        database = "embedded (a throwaway cluster per pg_max_connections)"
    return Manifest(
        spec=spec.to_dict(),
        spec_path=spec_path,
        versions=versions(),
        git_sha=git_sha(),
        host=host(),
        dsn=database,
        locust_processes=1 if remote else (workers or "auto"),
        remote_workers=asdict(remote) if remote else None,
        started_at=now(),
        status=RUNNING,
        runner={
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "process_started": psutil.Process().create_time(),
        },
        points=len(spec.points()),
    )
