"""The sample app as a managed target: its settings, its seeded database, its stub and workers.

The one module of the toolkit that knows the sample app's env names (`settings_env`): the
point's knobs become its settings here, for its workers and for a restart command that wants
them (`poolbench.sweep.external`).
"""

from __future__ import annotations

import asyncio
from contextlib import ExitStack
from pathlib import Path

import asyncpg

from poolbench.errors import RunError
from poolbench.objectives import PGBOUNCER
from poolbench.results import APP_LOG, DOWNSTREAM_LOG, SEED_LOG
from poolbench.sample_app.config import settings_env
from poolbench.spec import Point, SweepSpec
from poolbench.sweep import commands
from poolbench.sweep.appworkers import AppWorkers
from poolbench.sweep.backends import DatabaseSlot
from poolbench.sweep.pg import Database, free_port
from poolbench.sweep.procs import Child, Children
from poolbench.sweep.target import DEFAULT_HEALTH_TIMEOUT_S, LoadTarget, StartedTarget, wait_http

DEFAULT_SEED_TIMEOUT_S = 600.0


def point_settings(point: Point) -> dict[str, str]:
    """The point's knobs as the sample app's settings, env vars of every worker."""
    env = settings_env(
        db_pool_size=point.pool_size,
        db_max_overflow=point.max_overflow,
        http_concurrency_limit=point.http_concurrency_limit,
        pg_pool_max_size=point.pg_max_size,
        sim_query_latency_ms=float(point.sim_latency_ms),
    )
    if point.pooler == PGBOUNCER:
        # Transaction pooling: a server connection's prepared statements are not this
        # client's (PgBouncer 1.18 has no max_prepared_statements).
        env |= settings_env(db_prepared_statements=False)
    return env


def app_env(point: Point, spec: SweepSpec, *, database_url: str, downstream_url: str) -> dict:
    """The sample app's settings for a point: the point's pool knobs, then the spec's [app_env]."""
    settings = settings_env(
        database_url=database_url,
        downstream_url=downstream_url,
        log_level="WARNING",
        access_log=False,
    )
    return {**settings, **point_settings(point), **spec.app_env}


async def _count_users(dsn: str) -> int:
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        exists = await conn.fetchval("SELECT to_regclass('users') IS NOT NULL")
        return int(await conn.fetchval("SELECT count(*) FROM users")) if exists else 0
    finally:
        await conn.close()


class ManagedApp(LoadTarget):
    """The sample app, started per run with the point's settings, and all it needs behind it.

    Postgres (one per pg_max_connections, or --dsn's, seeded) and the downstream stub live for
    the sweep; the app's workers and a pgbouncer point's PgBouncer live for one run.
    """

    def __init__(self, spec: SweepSpec, children: Children, *, dsn: str | None, logs: Path):
        self.spec = spec
        self.children = children
        self.dsn = dsn
        self.logs = logs
        self.db = DatabaseSlot(children, dsn=dsn, seed=self._seed)
        self.downstream_url: str | None = None
        self.downstream: Child | None = None
        self.app: Child | None = None

    def secret_dsns(self) -> list[str]:
        """--dsn, and the DSNs of our database and of the PgBouncer in front (same password)."""
        return [dsn for dsn in [self.dsn, *self.db.secret_dsns()] if dsn]

    def start(self, point: Point, run_dir: Path, stack: ExitStack) -> StartedTarget:
        """Postgres configured for the point, a PgBouncer if it has one, then the app's workers."""
        stack.callback(self.db.stop_bouncer)
        db = self.db.ensure(point)
        workers = self._start_app(point, self.db.app_database(point, db), run_dir, stack)
        return StartedTarget(
            workers=workers,
            probe_dsn=db.dsn,
            postgres=self.db.server,
            bouncer=self.db.bouncer,
            pg_pid=db.pid,
            downstream_pid=self.downstream.pid if self.downstream else None,
        )

    def app_pid(self) -> int | None:
        """Worker 0's pid: the other workers are its children (`poolbench.sweep.appserver`)."""
        return self.app.pid if self.app is not None else None

    def went_away(self) -> str | None:
        """The point's PgBouncer or the app exited during the run."""
        if cause := self.db.bouncer_went_away():
            return cause
        if self.app is not None and not self.app.alive():
            code = self.app.process.returncode
            return f"the app exited during the run ({code=}): {self.app.log_tail()}"
        return None

    def _ensure_downstream(self) -> str:
        # /health checks the downstream too, so every scenario needs the stub, not just fanout.
        if self.downstream_url is None:
            port = free_port()
            child = self.children.spawn(
                "downstream",
                commands.downstream_argv(port, self.spec.workload.downstream_latency_ms),
                env=commands.python_env({}),
                log_path=self.logs / DOWNSTREAM_LOG,
            )
            url = f"http://127.0.0.1:{port}"
            wait_http(
                f"{url}/stats", child=child, timeout_s=DEFAULT_HEALTH_TIMEOUT_S, what="downstream"
            )
            self.downstream_url, self.downstream = url, child
        return self.downstream_url

    def _start_app(self, point: Point, db: Database, run_dir: Path, stack: ExitStack) -> AppWorkers:
        """The app's worker processes (poolbench.sweep.appserver), every one of them healthy."""
        port, *private = commands.free_ports(1 + point.app_workers)
        env = app_env(
            point,
            self.spec,
            database_url=db.sqlalchemy_url,
            downstream_url=self._ensure_downstream(),
        )
        self.app = self.children.spawn(
            "app",
            commands.app_argv(port, private),
            env=commands.python_env(env),
            log_path=run_dir / APP_LOG,
        )
        stack.callback(self._stop_app)
        workers = AppWorkers(
            url=f"http://127.0.0.1:{port}",
            worker_urls=tuple(f"http://127.0.0.1:{p}" for p in private),
        )
        for url in (workers.url, *workers.worker_urls):
            wait_http(
                f"{url}/health", child=self.app, timeout_s=DEFAULT_HEALTH_TIMEOUT_S, what="app"
            )
        return workers

    def _stop_app(self) -> None:
        app, self.app = self.app, None
        if app is not None:
            self.children.stop(app)

    def _seed(self, db: Database) -> None:
        """Give a new database the sample app's tables and users, unless it has them already."""
        seed_users = self.spec.workload.seed_users
        if asyncio.run(_count_users(db.dsn)) >= seed_users:
            return  # an external database seeded by an earlier sweep
        env = commands.python_env(settings_env(database_url=db.sqlalchemy_url, log_level="WARNING"))
        child = self.children.spawn(
            "seed", commands.seed_argv(seed_users), env=env, log_path=self.logs / SEED_LOG
        )
        code = self.children.wait(child, DEFAULT_SEED_TIMEOUT_S)
        self.children.stop(child)
        if code != 0:
            raise RunError(f"seeding failed ({code=}): {child.log_tail()}")
