"""TechEmpower-style multiple queries: N single-row reads in one session."""

from __future__ import annotations

import random
from typing import Annotated

from fastapi import APIRouter, Query

from ..db import max_user_id
from ..deps import ResourcesDep, SessionDep
from ..models import User
from ..repository import Repository
from ..schemas import UserOut

router = APIRouter(tags=["queries"])

MAX_QUERIES = 500


@router.get("/queries")
async def multiple_queries(
    session: SessionDep,
    resources: ResourcesDep,
    queries: Annotated[int, Query(ge=1, le=MAX_QUERIES)] = 1,
) -> list[UserOut]:
    """Read `queries` random users one query at a time, holding one connection throughout."""
    if resources.user_ids.high == 0:  # seeded after start-up: look again (once data exists)
        resources.user_ids.high = await max_user_id(resources.engine)
    repo = Repository(session, User)
    high = max(1, resources.user_ids.high)
    users: list[UserOut] = []
    # Sequential on purpose: one session is one connection, and that is the pattern whose
    # hold time grows with the number of queries.
    for _ in range(queries):
        user = await repo.get(random.randint(1, high))
        if user is not None:
            users.append(UserOut.model_validate(user))
    return users
