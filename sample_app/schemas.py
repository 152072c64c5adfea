"""Request and response bodies (pydantic).

Routes declare these as return types, so FastAPI validates and serialises them to JSON bytes
with pydantic directly. `ORJSONResponse` is deliberately not used: current FastAPI deprecates it
because serialising through a response model is already done in Rust by pydantic-core.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

MAX_ITEMS_PER_ORDER = 100
# Postgres bigint, the type of every id column (models.py): a larger id names no row, and the
# driver cannot even send it.
MAX_ID = 2**63 - 1


def _no_nul(value: str) -> str:
    # Postgres text cannot hold NUL: the insert would fail in the driver, as a 500. (An unpaired
    # surrogate, valid in a JSON escape but not in UTF-8, pydantic's str already rejects.)
    if "\x00" in value:
        raise ValueError("must not contain NUL (U+0000)")
    return value


# Text a Postgres text or varchar column can store.
StorableText = Annotated[str, AfterValidator(_no_nul)]


class UserOut(BaseModel):
    """A user without relations."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    email: str


class ItemIn(BaseModel):
    """One line of a new order."""

    # An unknown field is a client's mistake (a misspelt name) that would otherwise vanish.
    model_config = ConfigDict(extra="forbid")

    sku: StorableText = Field(min_length=1, max_length=32)
    quantity: int = Field(ge=1, le=10_000)
    price_cents: int = Field(ge=0, le=100_000_000)


class ItemOut(ItemIn):
    """One stored order line."""

    model_config = ConfigDict(from_attributes=True)

    id: int


class OrderIn(BaseModel):
    """Body of POST /orders."""

    model_config = ConfigDict(extra="forbid")

    user_id: int = Field(ge=1, le=MAX_ID)
    items: list[ItemIn] = Field(min_length=1, max_length=MAX_ITEMS_PER_ORDER)


class OrderOut(BaseModel):
    """A stored order with its items."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    user_id: int
    status: str
    created_at: datetime
    items: list[ItemOut]
    total_cents: int


class UserWithOrdersOut(UserOut):
    """A user with every order and item."""

    orders: list[OrderOut]


class FanoutOut(BaseModel):
    """Result of GET /fanout."""

    calls: int
    elapsed_ms: float


class CpuOut(BaseModel):
    """Result of GET /cpu."""

    work_ms: float
    elapsed_ms: float
    rounds: int


class PoolStatus(BaseModel):
    """Instant state of one pool, as shown by /health."""

    size: int
    checked_out: int
    overflow_in_use: int


class HealthOut(BaseModel):
    """Result of GET /health: every check by name, `ok` or the error class."""

    status: str
    checks: dict[str, str]
    pools: dict[str, PoolStatus]
