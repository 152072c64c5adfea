"""A service of the user's own: started per run with its `command`, or restarted with restart_cmd.

Managed (`command`): started for each run on a free loopback port with the run's settings, in its
placeholders and the env names it chose, and stopped after the run however the run ends, so
nothing outlives the sweep, a Ctrl-C or a failed run. `restart_cmd`: the user's command restarts
the service and returns; `stop_cmd` (optional) stops it after each run, else what the restart
left running is the user's. Every command runs with `sh -c` in [target].cwd. The service's
database is the user's business: its URL only from --dsn, probed, never seeded.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from poolbench.errors import RunError, UsageError
from poolbench.instrumentation.telemetry import ASYNCPG, POOLS, SQLALCHEMY
from poolbench.results import APP_LOG
from poolbench.spec import Point, SweepSpec, Target
from poolbench.spectables import DSN_PLACEHOLDERS, PORT_PLACEHOLDER, Expanded
from poolbench.sweep import commands
from poolbench.sweep.appworkers import AppWorkers
from poolbench.sweep.dsn import Dsn
from poolbench.sweep.managed import point_settings
from poolbench.sweep.procs import Child, Children
from poolbench.sweep.target import DEFAULT_HEALTH_TIMEOUT_S, LoadTarget, StartedTarget, wait_http

DEFAULT_RESTART_TIMEOUT_S = 120.0
LOOPBACK = "127.0.0.1"


def reported_pools(telemetry: Mapping[str, Any] | None) -> dict[str, Mapping[str, Any]] | None:
    """The pools a service reports, by name, with their limits; None when it says nothing.

    /telemetry lists its instrumented pools under totals.pools (a pool nobody instrumented is
    absent there); the /metrics fallback's window holds only the pools it has series for.
    """
    if not telemetry:
        return None
    totals = telemetry.get("totals")
    if isinstance(totals, Mapping) and isinstance(totals.get("pools"), Mapping):
        return {name: pool for name, pool in totals["pools"].items() if isinstance(pool, Mapping)}
    return {name: telemetry[name] for name in POOLS if isinstance(telemetry.get(name), Mapping)}


def check_target(target: Target, dsn: str | None) -> None:
    """Refuse, before anything starts, a [target] that needs the database URL without --dsn."""
    if dsn is None and (used := sorted(target.placeholders() & set(DSN_PLACEHOLDERS))):
        raise UsageError(
            f"[target] uses {{{used[0]}}}: give --dsn (your service's database, which poolbench "
            "probes and never seeds)"
        )


def target_env(point: Point, spec: SweepSpec, expanded: Expanded) -> dict[str, str]:
    """A target command's environment: ours without BENCH_DATABASE_URL, then the run's settings.

    The settings under the sample app's names (DB_POOL_SIZE, ...), [app_env], then [target.env]
    in the service's own names, which win.
    """
    return commands.python_env({**point_settings(point), **spec.app_env, **expanded.env})


class ExternalTarget(LoadTarget):
    """The spec's [target]: started (or restarted) for each run, then loaded at its URL."""

    def __init__(self, spec: SweepSpec, children: Children, *, dsn: str | None) -> None:
        if spec.target is None:
            raise ValueError("ExternalTarget needs a spec with a [target]")
        check_target(spec.target, dsn)
        self.spec = spec
        self.target: Target = spec.target
        self.children = children
        self.dsn = dsn
        self.app: Child | None = None

    def secret_dsns(self) -> list[str]:
        """--dsn, the target's database, when given."""
        return [self.dsn] if self.dsn else []

    def start(self, point: Point, run_dir: Path, stack: ExitStack) -> StartedTarget:
        """Start the service for the point (or restart it) and wait for its health check."""
        bound = self._bound()
        expanded = self.target.expand(point, **bound)
        env = target_env(point, self.spec, expanded)
        if self.target.managed:
            self.app = self.children.spawn(
                "target", [expanded.command], env=env, cwd=self._cwd, log_path=run_dir / APP_LOG,
                shell=True,
            )  # fmt: skip
            stack.callback(self._stop_app)
        else:
            if expanded.stop_cmd is not None:
                stack.callback(self._run, "stop_cmd", expanded.stop_cmd, env, run_dir)
            self._run("restart_cmd", expanded.command, env, run_dir)
        url = expanded.url or f"http://{LOOPBACK}:{bound[PORT_PLACEHOLDER]}"
        wait_http(
            f"{url}{self.target.health_path}",
            child=self.app,
            timeout_s=DEFAULT_HEALTH_TIMEOUT_S,
            what="target",
        )
        cgroup = Path(self.target.cgroup) if self.target.cgroup else None
        return StartedTarget(
            # One process as far as we know: its telemetry is read at the URL Locust loads.
            workers=AppWorkers(url=url, worker_urls=(url,)),
            probe_dsn=self.dsn,
            app_cgroup=cgroup,
            metrics_fallback=True,
        )

    def app_pid(self) -> int | None:
        """The pid file's pid (re-read every run: a restart changes it), else our command's."""
        if self.target.pid_file is not None:
            path = Path(self.target.pid_file)
            try:
                return int(path.read_text().split()[0])
            except (OSError, ValueError, IndexError) as exc:
                raise RunError(f"target.pid_file {path}: no pid in it ({exc})") from None
        return self.app.pid if self.app is not None else None

    def recorded_point(self, point: Point, telemetry: Mapping[str, Any] | None) -> dict[str, Any]:
        """The point as the service ran it: the pools it reports, not the grid's defaults.

        The service's asyncpg pool (pg_max_size) is its own, if it reports one; blank when it
        reports none or nothing at all (then only Postgres's measured peak can tell). A SQLAlchemy
        pool whose limits differ from the run's means the settings never reached the service:
        the run fails instead of being filed under the wrong pool size.
        """
        recorded = point.as_dict() | {"pg_max_size": None}
        pools = reported_pools(telemetry)
        engine = (pools or {}).get(SQLALCHEMY)
        if engine is not None:
            reported = (engine.get("pool_size"), engine.get("max_overflow"))
            if reported != (point.pool_size, point.max_overflow):
                raise RunError(
                    f"the target reports pool_size={reported[0]} max_overflow={reported[1]}, the "
                    f"run set pool_size={point.pool_size} max_overflow={point.max_overflow}: the "
                    "settings never reached it (pass them in [target] env or command, e.g. "
                    'MYAPP_POOL_SIZE = "{pool_size}")'
                )
        if (direct := (pools or {}).get(ASYNCPG)) is not None:
            recorded["pg_max_size"] = direct.get("pool_size")
        recorded["app_max_connections"] = point.sqlalchemy_connections + (
            recorded["pg_max_size"] or 0
        )
        return recorded

    def went_away(self) -> str | None:
        """A managed service exited during the run."""
        if self.app is not None and not self.app.alive():
            code = self.app.process.returncode
            return f"the target exited during the run ({code=}): {self.app.log_tail()}"
        return None

    @property
    def _cwd(self) -> Path | None:
        return Path(self.target.cwd) if self.target.cwd else None

    def _bound(self) -> dict[str, str]:
        """The placeholders besides the point's: a free port, the database's URL in two forms."""
        bound = {PORT_PLACEHOLDER: str(commands.free_ports(1)[0])} if self.target.managed else {}
        if self.dsn is not None:
            dsn = Dsn.parse(self.dsn)
            bound |= dict(zip(DSN_PLACEHOLDERS, (dsn.sqlalchemy_url, dsn.url), strict=True))
        return bound

    def _stop_app(self) -> None:
        app, self.app = self.app, None
        if app is not None:
            self.children.stop(app)

    def _run(self, what: str, command: str, env: dict[str, str], run_dir: Path) -> None:
        """Run restart_cmd or stop_cmd to its end; it must return within the timeout."""
        child = self.children.spawn(
            what, [command], env=env, cwd=self._cwd, log_path=run_dir / APP_LOG, shell=True
        )
        code = self.children.wait(child, DEFAULT_RESTART_TIMEOUT_S)
        if code is None:
            self.children.stop(child)
            raise RunError(
                f"target.{what} still running after {DEFAULT_RESTART_TIMEOUT_S:.0f} s (it must "
                f"start or stop the service in the background and return): {child.log_tail()}"
            )
        # Not stop(): that would kill the process group, and with it a target started with `&`.
        self.children.release(child)
        if code != 0:
            raise RunError(f"target.{what} failed ({code=}): {child.log_tail()}")
