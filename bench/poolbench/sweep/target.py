"""What a run loads, behind one interface: the managed sample app or a target of the user's own.

`poolbench.sweep.managed.ManagedApp` starts the sample app and everything behind it;
`poolbench.sweep.external.ExternalTarget` restarts a service the user runs. The runner
(`poolbench.sweep.runner`) sees only `LoadTarget` and the `StartedTarget` it gives per run.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Mapping
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from poolbench.errors import RunError
from poolbench.spec import Point
from poolbench.sweep.appworkers import AppWorkers
from poolbench.sweep.pg import PostgresServer
from poolbench.sweep.pgbouncer import PgBouncerServer
from poolbench.sweep.procs import Child

DEFAULT_HEALTH_TIMEOUT_S = 30.0


def wait_http(url: str, *, child: Child | None, timeout_s: float, what: str) -> None:
    """Poll url until it answers 200; fail early if child exits."""
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    with httpx.Client(timeout=2.0) as client:
        while time.monotonic() < deadline:
            if child is not None and not child.alive():
                raise RunError(f"{what} exited at start-up: {child.log_tail()}")
            try:
                response = client.get(url)
                if response.status_code == 200:
                    return
                last = f"HTTP {response.status_code}"
            except httpx.HTTPError as exc:
                last = type(exc).__name__
            time.sleep(0.1)
    raise RunError(f"{what} not healthy after {timeout_s:.0f} s at {url} ({last})")


@dataclass(frozen=True, kw_only=True)
class StartedTarget:
    """A target up for one run: where Locust loads it and what the window measures besides."""

    workers: AppWorkers
    # The database whose counters the window reads, and whose restart fails the run.
    probe_dsn: str | None = None
    postgres: PostgresServer | None = None  # ours, when we started it: its exit is a cause
    bouncer: PgBouncerServer | None = None  # a pgbouncer point's, sampled over the window
    app_cgroup: Path | None = None
    pg_pid: int | None = None
    downstream_pid: int | None = None
    # A target of the user's own may serve only Prometheus text: then /metrics is differenced.
    metrics_fallback: bool = False


class LoadTarget(ABC):
    """Starts what a point loads, and says why it went away; one subclass per kind of target."""

    @abstractmethod
    def start(self, point: Point, run_dir: Path, stack: ExitStack) -> StartedTarget:
        """Start (or restart) the target for point, healthy; what the run must undo goes on stack.

        The run's logs of it go into run_dir; sweep-wide processes are stopped with the sweep.
        """

    @abstractmethod
    def app_pid(self) -> int | None:
        """The pid whose process tree is the app's CPU and memory, now (None: not measured)."""

    def went_away(self) -> str | None:
        """Why something of the target stopped during the run, or None."""
        return None

    def recorded_point(self, point: Point, telemetry: Mapping[str, Any] | None) -> dict[str, Any]:
        """The point as run.json records it, given the target's window telemetry (if any)."""
        return point.as_dict()

    @abstractmethod
    def secret_dsns(self) -> list[str]:
        """Every DSN whose password must not reach a run's files."""
