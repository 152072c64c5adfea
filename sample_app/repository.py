"""A small generic async repository: the CRUD every model needs, on the request's session."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Generic, TypeVar

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.interfaces import ORMOption

from .models import Base

ModelT = TypeVar("ModelT", bound=Base)


class Repository(Generic[ModelT]):
    """CRUD for one model; never commits (the session dependency owns the transaction)."""

    def __init__(self, session: AsyncSession, model: type[ModelT]) -> None:
        self.session = session
        self.model = model

    async def get(self, id_: int, *, options: Sequence[ORMOption] = ()) -> ModelT | None:
        """Return the row with this primary key, or None."""
        # A SELECT, not session.get(): the identity map would skip the query (and the
        # simulated latency) on a repeated id, unlike the workload we model.
        pk = self.model.__mapper__.primary_key[0]
        stmt = select(self.model).where(pk == id_).options(*options)
        result = await self.session.execute(stmt)
        return result.scalar_one_or_none()

    async def list(self, *, limit: int = 100, offset: int = 0) -> Sequence[ModelT]:
        """Return rows in primary-key order."""
        pk = self.model.__mapper__.primary_key[0]
        result = await self.session.scalars(
            select(self.model).order_by(pk).limit(limit).offset(offset)
        )
        return result.all()

    async def add(self, obj: ModelT) -> ModelT:
        """Insert the object (and cascaded children) now, so ids and defaults are known."""
        self.session.add(obj)
        await self.session.flush()
        return obj

    async def delete(self, obj: ModelT) -> None:
        """Delete the object at the next flush."""
        await self.session.delete(obj)
        await self.session.flush()
