"""Writes: an order with its items in one transaction."""

from __future__ import annotations

from fastapi import APIRouter, status

from ..deps import SessionDep
from ..models import Item, Order, User
from ..problems import NotFoundError
from ..repository import Repository
from ..schemas import OrderIn, OrderOut

router = APIRouter(tags=["orders"])


@router.post("/orders", status_code=status.HTTP_201_CREATED)
async def create_order(body: OrderIn, session: SessionDep) -> OrderOut:
    """Create an order; committed by the session dependency when this returns."""
    if await Repository(session, User).get(body.user_id) is None:
        raise NotFoundError("user", body.user_id)
    order = Order(
        user_id=body.user_id,
        status="new",
        items=[Item(**item.model_dump()) for item in body.items],
    )
    await Repository(session, Order).add(order)
    return OrderOut.model_validate(order)
