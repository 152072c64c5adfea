"""Single-row reads through SQLAlchemy: one user, and one user with orders and items."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path
from sqlalchemy.orm import selectinload

from ..deps import SessionDep
from ..models import Order, User
from ..problems import NotFoundError
from ..repository import Repository
from ..schemas import MAX_ID, UserOut, UserWithOrdersOut

router = APIRouter(tags=["users"])

UserId = Annotated[int, Path(ge=1, le=MAX_ID)]


@router.get("/users/{user_id}")
async def get_user(user_id: UserId, session: SessionDep) -> UserOut:
    """Read one user by id."""
    user = await Repository(session, User).get(user_id)
    if user is None:
        raise NotFoundError("user", user_id)
    return UserOut.model_validate(user)


@router.get("/users/{user_id}/orders")
async def get_user_orders(user_id: UserId, session: SessionDep) -> UserWithOrdersOut:
    """Read one user with every order and item (explicit selectinload, no lazy loads)."""
    user = await Repository(session, User).get(
        user_id, options=[selectinload(User.orders).selectinload(Order.items)]
    )
    if user is None:
        raise NotFoundError("user", user_id)
    return UserWithOrdersOut.model_validate(user)
