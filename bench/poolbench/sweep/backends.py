"""The database side of a sweep: the Postgres behind the points, a PgBouncer per pgbouncer point.

Also the checks that the database stayed up through a run.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import asyncpg

from poolbench.objectives import PGBOUNCER
from poolbench.spec import Point
from poolbench.sweep.pg import Database, PostgresServer
from poolbench.sweep.pgbouncer import PgBouncerServer
from poolbench.sweep.procs import Children


async def _postmaster_started(dsn: str) -> str:
    conn = await asyncpg.connect(dsn, timeout=5)
    try:
        return str(await conn.fetchval("SELECT pg_postmaster_start_time()"))
    finally:
        await conn.close(timeout=5)


def postmaster_started(dsn: str) -> str:
    """When the server behind dsn started: it changes if Postgres restarted under a run."""
    return asyncio.run(_postmaster_started(dsn))


def database_went_away(dsn: str, started: str, server: PostgresServer | None) -> str | None:
    """Why the database did not stay up since `started` (a postmaster_started value), or None."""
    if server is not None and server.process is not None and server.process.poll() is not None:
        code = server.process.returncode
        return f"the database went away: its postmaster exited ({code=}): {server.log_tail()}"
    try:
        now_started = postmaster_started(dsn)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
        return f"the database went away: it refuses connections ({type(exc).__name__}: {exc})"
    if now_started != started:
        return f"the database went away: it restarted during the run (up since {now_started})"
    return None


class DatabaseSlot:
    """The Postgres behind the current points: one server per pg_max_connections value.

    `seed` fills a database the first time it is handed out (the target knows with what).
    """

    def __init__(self, children: Children, *, dsn: str | None, seed: Callable[[Database], None]):
        self.children = children
        self.external_dsn = dsn
        self.seed = seed
        self.server: PostgresServer | None = None
        self.database: Database | None = None
        self._key: int | None = None
        # A PgBouncer per pgbouncer point, stopped after its run (and at cleanup, if cut short).
        self.bouncer: PgBouncerServer | None = None
        children.defer(self.stop_bouncer)

    def secret_dsns(self) -> list[str]:
        """The DSNs of the database and of the PgBouncer in front (same password)."""
        dsns = [self.database.dsn] if self.database else []
        if self.bouncer is not None and self.bouncer.port is not None:
            dsns.append(self.bouncer.dsn)
        return dsns

    def app_database(self, point: Point, db: Database) -> Database:
        """Where the app connects: Postgres, or a PgBouncer started for this point in front."""
        if point.pooler != PGBOUNCER:
            return db
        assert point.pgbouncer_pool_size is not None
        self.bouncer = PgBouncerServer(db, pool_size=point.pgbouncer_pool_size)
        return self.bouncer.start().database

    def stop_bouncer(self) -> None:
        """Stop the point's PgBouncer, if any (idempotent)."""
        bouncer, self.bouncer = self.bouncer, None
        if bouncer is not None:
            bouncer.stop()

    def bouncer_went_away(self) -> str | None:
        """Why the point's PgBouncer is not running any more, or None."""
        process = self.bouncer.process if self.bouncer is not None else None
        if self.bouncer is None or process is None or process.poll() is None:
            return None
        return f"PgBouncer exited during the run (code={process.returncode}): " + (
            self.bouncer.log_tail()
        )

    def ensure(self, point: Point) -> Database:
        """Return a seeded database configured for the point, (re)starting it when needed."""
        if self.external_dsn:
            if self.database is None:
                self.database = Database(dsn=self.external_dsn, managed=False)
                self.seed(self.database)
            return self.database
        if self.database is not None and self._key == point.pg_max_connections:
            return self.database
        if self.server is not None:
            self.server.stop()
        self.server = PostgresServer(max_connections=point.pg_max_connections)
        self.children.defer(self.server.stop)
        self.database = self.server.start().database
        self._key = point.pg_max_connections
        self.seed(self.database)
        return self.database
