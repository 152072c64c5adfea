"""A user with orders and items (selectinload: several queries in one session)."""

from locust import task

from poolbench.load import PoolbenchUser, random_user_id, shape_from_env

LoadShape = shape_from_env()


class CollectionUser(PoolbenchUser):
    """Reads a user's orders with their items."""

    @task
    def get_orders(self) -> None:
        self.client.get(f"/users/{random_user_id()}/orders", name="/users/[id]/orders")
