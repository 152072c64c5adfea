"""Request and response bodies (pydantic).

Routes declare these as return types, so FastAPI validates and serialises them to JSON bytes
with pydantic directly. `ORJSONResponse` is deliberately not used: current FastAPI deprecates it
because serialising through a response model is already done in Rust by pydantic-core.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

MAX_ITEMS_PER_ORDER = 100


class UserOut(BaseModel):
    """A user without relations."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    email: str


class ItemIn(BaseModel):
    """One line of a new order."""

    sku: str = Field(min_length=1, max_length=32)
    quantity: int = Field(ge=1, le=10_000)
    price_cents: int = Field(ge=0, le=100_000_000)


class ItemOut(ItemIn):
    """One stored order line."""

    model_config = ConfigDict(from_attributes=True)

    id: int


class OrderIn(BaseModel):
    """Body of POST /orders."""

    user_id: int = Field(ge=1)
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


class WindowStats(BaseModel):
    """Exact summary of the samples of the current window, in milliseconds."""

    count: int
    sum: float
    mean: float
    std: float
    p50: float
    p95: float
    p99: float
    max: float


class PoolSnapshot(BaseModel):
    """Telemetry of one pool (see docs/DESIGN.md)."""

    pool_size: int
    max_overflow: int
    checked_out: int
    overflow_in_use: int
    peak_checked_out: int
    timeouts: int
    connections_opened: int
    connections_closed: int
    acquire_wait_ms: WindowStats
    hold_time_ms: WindowStats


class HttpSnapshot(BaseModel):
    """Telemetry of downstream calls and their semaphore (see docs/DESIGN.md)."""

    limit: int
    in_flight: int
    peak_in_flight: int
    calls: int
    timeouts: int
    semaphore_wait_ms: WindowStats
    waiting_holding_connection: int
    connections_held_waiting: int
    peak_connections_held_waiting: int


class RequestsSnapshot(BaseModel):
    """HTTP requests through the app (telemetry and health endpoints not counted)."""

    in_flight: int
    inflight_mean: float
    inflight_peak: int
    completed: int
    statements: int
    statements_per_request: float | None


class TelemetrySnapshot(BaseModel):
    """Body of GET /telemetry, exactly the contract of docs/DESIGN.md."""

    window_s: float
    sqlalchemy: PoolSnapshot
    asyncpg: PoolSnapshot
    http: HttpSnapshot
    requests: RequestsSnapshot
