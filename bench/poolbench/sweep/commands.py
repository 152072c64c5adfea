"""Pure builders of the argv and environment of every process a sweep starts.

The sample app's settings (its env names) are its target's: `poolbench.sweep.managed`.
"""

from __future__ import annotations

import math
import os
import shlex
import socket
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from poolbench.locustfiles import scenario_path
from poolbench.results import LOCUST_CSV_PREFIX
from poolbench.scenario_env import ScenarioEnv
from poolbench.shipped import SAMPLE_APP
from poolbench.spec import Point, SweepSpec
from poolbench.sweep.dsn import DSN_ENV
from poolbench.sweep.pg import free_port

DEFAULT_ORDERS_PER_USER = 3
DEFAULT_ITEMS_PER_ORDER = 3
DEFAULT_MASTER_BIND_HOST = "127.0.0.1"
DEFAULT_REMOTE_WORKERS_WAIT_S = 300.0  # for someone to start the remote workers of a run
LOCUST_STOP_SIGNAL = 2  # SIGINT: Locust's graceful shutdown, which still writes its CSV files


def python_env(extra: Mapping[str, str], base: Mapping[str, str] = os.environ) -> dict[str, str]:
    """Return the runner's environment plus extra; never hands the DSN env var to children."""
    env = {k: v for k, v in base.items() if k != DSN_ENV}
    env["PYTHONUNBUFFERED"] = "1"
    return env | dict(extra)


def seed_argv(seed_users: int) -> list[str]:
    """`python -m poolbench.sample_app.seed` for the spec's users."""
    return [
        sys.executable, "-m", f"{SAMPLE_APP}.seed", "--users", str(seed_users),
        "--orders-per-user", str(DEFAULT_ORDERS_PER_USER),
        "--items-per-order", str(DEFAULT_ITEMS_PER_ORDER),
    ]  # fmt: skip


def downstream_argv(port: int, latency_ms: float) -> list[str]:
    """The downstream stub on a loopback port."""
    argv = [sys.executable, "-m", f"{SAMPLE_APP}.downstream", "--port", str(port)]
    return argv + ["--latency-ms", f"{latency_ms:g}"]


def app_argv(port: int, private_ports: Sequence[int] = ()) -> list[str]:
    """The sample app as uvicorn workers sharing a loopback port (`poolbench.sweep.appserver`).

    One worker per private port, each also listening there (for its telemetry); without
    private ports, one worker on the shared port only.
    """
    argv = [sys.executable, "-m", "poolbench.sweep.appserver", "--port", str(port)]
    if private_ports:
        argv += ["--private-ports", ",".join(map(str, private_ports))]
    return argv + ["--log-level", "warning"]


def free_ports(count: int) -> list[int]:
    """`count` distinct loopback ports that were free a moment ago."""
    ports: list[int] = []
    while len(ports) < count:
        if (port := free_port()) not in ports:
            ports.append(port)
    return ports


def run_time_s(point: Point) -> int:
    """Locust's whole run time (-t), warm-up included, in whole seconds."""
    return math.ceil(point.warmup_s + point.duration_s)


def scenario_env(point: Point, spec: SweepSpec, out_dir: Path | None) -> ScenarioEnv:
    """What the point's locustfile needs (see poolbench.scenario_env)."""
    return ScenarioEnv(
        warmup_s=point.warmup_s,
        seed_users=spec.workload.seed_users,
        think_time_s=point.think_time_s,
        open_rps=point.open_model_rps,
        max_inflight=point.open_model_max_inflight,
        queries=point.queries_per_request,
        fanout_calls=point.fanout_calls,
        shape=point.shape,
        users=point.users,
        spawn_rate=point.spawn_rate,
        duration_s=run_time_s(point),
        locustfile=spec.locustfile or "",
        out_dir=out_dir,
    )


def locust_argv(
    point: Point, url: str, run_dir: Path, workers: int, files: Sequence[str] = ()
) -> list[str]:
    """Headless Locust for one point, writing its CSV files into the run directory.

    `files` are the locustfiles (SweepSpec.locust_files); by default the point's scenario.
    With workers > 1 the master listens on a loopback port free at the time of the call.
    """
    files = files or (str(scenario_path(point.scenario)),)
    argv = [sys.executable, "-m", "locust", "-f", ",".join(files)]
    argv += ["--headless", "-u", str(point.users), "-r", f"{point.spawn_rate:g}"]
    argv += ["-t", f"{run_time_s(point)}s", "--host", url]
    argv += ["--csv", str(run_dir / LOCUST_CSV_PREFIX), "--csv-full-history"]
    argv += ["--only-summary", "--exit-code-on-error", "0", "--loglevel", "WARNING"]
    return argv + local_processes_args(workers)


def local_processes_args(workers: int) -> list[str]:
    """Locust options for `workers` local worker processes (none for one process).

    --processes makes Locust a master that forks workers connecting to
    --master-host:--master-port on loopback, at a port free at the time of the call; Locust's
    own default binds every interface at 5557.
    """
    if workers <= 1:
        return []
    port = str(free_port())
    argv = ["--processes", str(workers)]
    argv += ["--master-bind-host", DEFAULT_MASTER_BIND_HOST, "--master-bind-port", port]
    return argv + ["--master-host", DEFAULT_MASTER_BIND_HOST, "--master-port", port]


def _relative_to_cwd(path: Path) -> str:
    cwd = Path.cwd()
    return str(path.relative_to(cwd)) if path.is_relative_to(cwd) else str(path)


@dataclass(frozen=True, kw_only=True)
class RemoteWorkers:
    """Locust workers on other machines, started by the user, that connect to the run's master.

    Locust's own distributed mode: the runner starts only the master, which waits for `count`
    workers. Their CPU is not measured (it is not on this host); Locust's CPU warning, which
    workers report to the master, still marks a saturated load generator.
    """

    count: int
    bind_host: str = DEFAULT_MASTER_BIND_HOST
    port: int

    @property
    def master_host(self) -> str:
        """The address workers connect to: this host's name when the master binds everywhere."""
        wildcard = self.bind_host in ("", "*", "0.0.0.0", "::")
        return socket.getfqdn() if wildcard else self.bind_host

    def master_args(self) -> list[str]:
        """Return the Locust options that make the runner's Locust the master."""
        return [
            "--master",
            "--expect-workers", str(self.count),
            "--expect-workers-max-wait", f"{DEFAULT_REMOTE_WORKERS_WAIT_S:g}",
            "--master-bind-host", self.bind_host,
            "--master-bind-port", str(self.port),
        ]  # fmt: skip

    def worker_command(self, files: Sequence[str], env: Mapping[str, str]) -> str:
        """Return the shell command a worker runs from a poolbench checkout.

        Files under the current directory are named relative to it; others must exist at the
        same path.
        """
        named = [_relative_to_cwd(Path(f)) for f in files]
        argv = ["python", "-m", "locust", "-f", ",".join(named), "--worker"]
        argv += ["--master-host", self.master_host, "--master-port", str(self.port)]
        assignments = [f"{key}={shlex.quote(value)}" for key, value in sorted(env.items())]
        return " ".join([*assignments, *map(shlex.quote, argv)])
