"""ORM models, SQLAlchemy 2.0 style: users -> orders -> items.

Relationships are `lazy="raise"`: an implicit lazy load would be a hidden query (and, under
asyncio, a MissingGreenlet error at an arbitrary line), so every load is an explicit
`selectinload` in the query that needs it.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, DateTime, ForeignKey, Integer, String, func
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


class Base(DeclarativeBase):
    """Declarative base of every table of the sample app."""


class User(Base):
    """A customer; ids 1..N are assigned by the seed command, not by a sequence."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    name: Mapped[str] = mapped_column(String(100))
    email: Mapped[str] = mapped_column(String(200))
    orders: Mapped[list[Order]] = relationship(
        back_populates="user", lazy="raise", order_by="Order.id"
    )


class Order(Base):
    """An order of one user."""

    __tablename__ = "orders"
    # created_at is a server default: fetch it with RETURNING at flush instead of a lazy load.
    __mapper_args__ = {"eager_defaults": True}

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    status: Mapped[str] = mapped_column(String(20), default="new")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    user: Mapped[User] = relationship(back_populates="orders", lazy="raise")
    items: Mapped[list[Item]] = relationship(
        back_populates="order", lazy="raise", order_by="Item.id", cascade="all, delete-orphan"
    )

    @property
    def total_cents(self) -> int:
        """Return the order total; needs `items` loaded."""
        return sum(item.quantity * item.price_cents for item in self.items)


class Item(Base):
    """One line of an order."""

    __tablename__ = "items"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    order_id: Mapped[int] = mapped_column(ForeignKey("orders.id", ondelete="CASCADE"), index=True)
    sku: Mapped[str] = mapped_column(String(32))
    quantity: Mapped[int] = mapped_column(Integer)
    price_cents: Mapped[int] = mapped_column(Integer)
    order: Mapped[Order] = relationship(back_populates="items", lazy="raise")
