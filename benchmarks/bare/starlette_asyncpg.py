"""A bare Starlette + asyncpg endpoint: `GET /users/{id}` on a plain asyncpg pool.

The pool gets the sample app's PG_POOL_* defaults (read from the same `Settings`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
from poolbench.sample_app.config import Settings
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

settings = Settings()
USER_BY_ID = "select id, name, email from users where id = $1"


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    async with asyncpg.create_pool(
        settings.asyncpg_dsn,
        min_size=settings.pg_pool_min_size,
        max_size=settings.pg_pool_max_size,
        max_inactive_connection_lifetime=settings.pg_pool_max_inactive_s,
    ) as pool:
        app.state.pool = pool
        yield


async def get_user(request: Request) -> JSONResponse:
    pool: asyncpg.Pool = request.app.state.pool
    async with pool.acquire() as conn:
        row = await conn.fetchrow(USER_BY_ID, request.path_params["user_id"])
    if row is None:
        return JSONResponse({"detail": "not found"}, status_code=404)
    return JSONResponse(dict(row))


app = Starlette(routes=[Route("/users/{user_id:int}", get_user)], lifespan=lifespan)
