"""What scenarios share: this Locust process's `POOLBENCH_*` settings, user ids and order bodies.

The sweep runner configures scenarios only through `POOLBENCH_*` environment variables
(`poolbench.scenario_env`), so a locustfile also runs by hand
(`locust -f scenarios/single_query.py --host ...`) with defaults.
"""

from __future__ import annotations

import random
from typing import Any

from poolbench.scenario_env import ScenarioEnv

DEFAULT_ITEMS_PER_ORDER = 3

SETTINGS = ScenarioEnv.from_env()


def random_user_id() -> int:
    """Return a seeded user id, uniformly in 1..POOLBENCH_SEED_USERS."""
    return random.randint(1, SETTINGS.seed_users)


def order_body() -> dict[str, Any]:
    """Return a POST /orders body for a random user."""
    items = [
        {
            "sku": f"SKU-{random.randint(1, 500):04d}",
            "quantity": random.randint(1, 3),
            "price_cents": random.randint(100, 10_000),
        }
        for _ in range(DEFAULT_ITEMS_PER_ORDER)
    ]
    return {"user_id": random_user_id(), "items": items}
