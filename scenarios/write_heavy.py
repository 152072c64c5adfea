"""Mostly writes: one order with items per request, in one transaction."""

from locust import task

from poolbench.load import PoolbenchUser, order_body, random_user_id, shape_from_env

LoadShape = shape_from_env()


class WriteHeavyUser(PoolbenchUser):
    """Creates orders, with an occasional read of a user."""

    @task(9)
    def create_order(self) -> None:
        self.client.post("/orders", json=order_body(), name="/orders")

    @task(1)
    def get_user(self) -> None:
        self.client.get(f"/users/{random_user_id()}", name="/users/[id]")
