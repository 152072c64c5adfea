"""The same single-row read through the direct asyncpg pool, bypassing SQLAlchemy."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from ..deps import PgPoolDep
from ..problems import NotFoundError
from ..schemas import MAX_ID, UserOut

router = APIRouter(tags=["raw"])

USER_BY_ID = "select id, name, email from users where id = $1"


@router.get("/raw/users/{user_id}")
async def get_raw_user(user_id: Annotated[int, Path(ge=1, le=MAX_ID)], pool: PgPoolDep) -> UserOut:
    """Read one user with asyncpg (SIM_QUERY_LATENCY_MS is folded into the query by the pool)."""
    async with pool.acquire() as conn:
        row = await conn.fetchrow(USER_BY_ID, user_id)
    if row is None:
        raise NotFoundError("user", user_id)
    return UserOut(id=row["id"], name=row["name"], email=row["email"])
