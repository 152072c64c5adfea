"""Seed deterministic data: `python -m poolbench.sample_app.seed --users 1000 --orders-per-user 3`.

User ids are 1..users; order and item ids are derived from them, so two seeds of the same size
hold the same rows. Rows go in multi-row INSERTs of up to `--chunk-rows` rows (ON CONFLICT DO
NOTHING, so a repeated seed only fills gaps); `--reset` truncates the tables first.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import islice
from typing import Annotated, Any

import typer
from sqlalchemy import text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine

from .config import get_settings
from .db import create_schema
from .models import Base, Item, Order, User

DEFAULT_CHUNK_ROWS = 5_000
MIN_CHUNK_ROWS = 1_000
MAX_CHUNK_ROWS = 10_000
# Postgres accepts at most 32767 bind parameters in one statement.
MAX_BIND_PARAMS = 32_767
STATUSES = ("new", "paid", "shipped", "delivered")


@dataclass(frozen=True, kw_only=True)
class SeedCounts:
    """Rows generated per table."""

    users: int
    orders: int
    items: int


def user_rows(users: int) -> Iterator[dict[str, Any]]:
    """Yield users 1..users."""
    for uid in range(1, users + 1):
        yield {"id": uid, "name": f"user {uid}", "email": f"user{uid}@example.com"}


def order_rows(users: int, orders_per_user: int) -> Iterator[dict[str, Any]]:
    """Yield orders; order ids are consecutive per user."""
    for uid in range(1, users + 1):
        for k in range(orders_per_user):
            oid = (uid - 1) * orders_per_user + k + 1
            yield {"id": oid, "user_id": uid, "status": STATUSES[oid % len(STATUSES)]}


def item_rows(orders: int, items_per_order: int) -> Iterator[dict[str, Any]]:
    """Yield items of orders 1..orders."""
    for oid in range(1, orders + 1):
        for j in range(items_per_order):
            yield {
                "id": (oid - 1) * items_per_order + j + 1,
                "order_id": oid,
                "sku": f"SKU-{(oid * 7 + j) % 1000:04d}",
                "quantity": 1 + (oid + j) % 5,
                "price_cents": 100 + (oid * 37 + j * 11) % 9_900,
            }


def chunks(rows: Iterable[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    """Split rows into lists of at most `size`."""
    iterator = iter(rows)
    while chunk := list(islice(iterator, size)):
        yield chunk


async def _insert(
    conn: AsyncConnection, model: type[Base], rows: Iterable[dict[str, Any]], chunk_rows: int
) -> None:
    size = min(chunk_rows, MAX_BIND_PARAMS // len(model.__table__.columns))
    for chunk in chunks(rows, size):
        await conn.execute(insert(model).values(chunk).on_conflict_do_nothing())


async def seed(
    database_url: str,
    *,
    users: int,
    orders_per_user: int,
    items_per_order: int,
    reset: bool = False,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
) -> SeedCounts:
    """Create the schema if needed and insert the data set in one transaction."""
    engine = create_async_engine(database_url)
    try:
        await create_schema(engine)
        orders = users * orders_per_user
        async with engine.begin() as conn:
            if reset:
                await conn.execute(text("truncate items, orders, users restart identity"))
            await _insert(conn, User, user_rows(users), chunk_rows)
            await _insert(conn, Order, order_rows(users, orders_per_user), chunk_rows)
            await _insert(conn, Item, item_rows(orders, items_per_order), chunk_rows)
            # Ids were given explicitly; move the sequences past them for the app's inserts.
            for table in ("orders", "items"):
                await conn.execute(
                    text(
                        f"select setval(pg_get_serial_sequence('{table}', 'id'), "
                        f"coalesce((select max(id) from {table}), 0) + 1, false)"
                    )
                )
        return SeedCounts(users=users, orders=orders, items=orders * items_per_order)
    finally:
        await engine.dispose()


def main(
    users: Annotated[int, typer.Option(min=1, help="Users to create (ids 1..users).")] = 1_000,
    orders_per_user: Annotated[int, typer.Option(min=0, help="Orders per user.")] = 3,
    items_per_order: Annotated[int, typer.Option(min=0, help="Items per order.")] = 3,
    reset: Annotated[bool, typer.Option(help="Truncate the tables first.")] = False,
    chunk_rows: Annotated[
        int,
        typer.Option(min=MIN_CHUNK_ROWS, max=MAX_CHUNK_ROWS, help="Rows per INSERT statement."),
    ] = DEFAULT_CHUNK_ROWS,
    database_url: Annotated[
        str | None, typer.Option(help="postgresql+asyncpg:// URL (default: DATABASE_URL).")
    ] = None,
) -> None:
    """Seed users, orders and items with deterministic ids."""
    url = database_url or get_settings().database_url
    started = time.perf_counter()
    counts = asyncio.run(
        seed(
            url,
            users=users,
            orders_per_user=orders_per_user,
            items_per_order=items_per_order,
            reset=reset,
            chunk_rows=chunk_rows,
        )
    )
    elapsed = time.perf_counter() - started
    typer.echo(
        f"seeded {counts.users} users, {counts.orders} orders, {counts.items} items "
        f"in {elapsed:.1f} s"
    )


if __name__ == "__main__":
    typer.run(main)
