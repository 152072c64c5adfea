"""A target of the user's own: restarted per point with its restart_cmd, loaded at its URL.

What the restart leaves running is the target's and is never stopped here. Its database is the
user's business: probed only with --dsn, never seeded.
"""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path

from poolbench.errors import RunError
from poolbench.results import APP_LOG
from poolbench.spec import Point, SweepSpec, Target
from poolbench.sweep import commands
from poolbench.sweep.appworkers import AppWorkers
from poolbench.sweep.managed import point_settings
from poolbench.sweep.procs import Children
from poolbench.sweep.target import DEFAULT_HEALTH_TIMEOUT_S, LoadTarget, StartedTarget, wait_http

DEFAULT_RESTART_TIMEOUT_S = 120.0


class ExternalTarget(LoadTarget):
    """The spec's [target]: `restart_cmd` applies a point's settings, then `url` is loaded."""

    def __init__(self, spec: SweepSpec, children: Children, *, dsn: str | None) -> None:
        if spec.target is None:
            raise ValueError("ExternalTarget needs a spec with a [target]")
        self.target: Target = spec.target
        self.app_env = spec.app_env
        self.children = children
        self.dsn = dsn

    def secret_dsns(self) -> list[str]:
        """--dsn, the target's database, when given."""
        return [self.dsn] if self.dsn else []

    def start(self, point: Point, run_dir: Path, stack: ExitStack) -> StartedTarget:
        """Run restart_cmd for the point and wait for the target's health check."""
        url = self._restart(point, run_dir)
        cgroup = Path(self.target.cgroup) if self.target.cgroup else None
        return StartedTarget(
            # One process as far as we know: its telemetry is read at the URL Locust loads.
            workers=AppWorkers(url=url, worker_urls=(url,)),
            probe_dsn=self.dsn,
            app_cgroup=cgroup,
            metrics_fallback=True,
        )

    def app_pid(self) -> int | None:
        """The target's pid from its pid file (re-read every run: a restart changes it)."""
        if self.target.pid_file is None:
            return None
        path = Path(self.target.pid_file)
        try:
            return int(path.read_text().split()[0])
        except (OSError, ValueError, IndexError) as exc:
            raise RunError(f"target.pid_file {path}: no pid in it ({exc})") from None

    def _restart(self, point: Point, run_dir: Path) -> str:
        # The documented contract of restart_cmd: the point's settings under the sample app's
        # env names (DB_POOL_SIZE, ...), then [app_env].
        env = commands.python_env({**point_settings(point), **self.app_env})
        command = self.target.restart_command(point)
        child = self.children.spawn(
            "restart_cmd", [command], env=env, log_path=run_dir / APP_LOG, shell=True
        )
        code = self.children.wait(child, DEFAULT_RESTART_TIMEOUT_S)
        if code is None:
            self.children.stop(child)
            raise RunError(
                f"target.restart_cmd still running after {DEFAULT_RESTART_TIMEOUT_S:.0f} s "
                f"(it must start the target in the background and return): {child.log_tail()}"
            )
        # Not stop(): that would kill the process group, and with it a target started with `&`.
        self.children.release(child)
        if code != 0:
            raise RunError(f"target.restart_cmd failed ({code=}): {child.log_tail()}")
        url = self.target.url
        wait_http(
            f"{url}{self.target.health_path}",
            child=None,
            timeout_s=DEFAULT_HEALTH_TIMEOUT_S,
            what="target",
        )
        return url
