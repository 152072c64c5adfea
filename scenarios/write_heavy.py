"""Mostly writes: one order with items per request, in one transaction."""

from locust import FastHttpUser, task

from scenarios.common import order_body, pacing, random_user_id
from scenarios.shapes import shape_from_env

LoadShape = shape_from_env()


class WriteHeavyUser(FastHttpUser):
    """Creates orders, with an occasional read of a user."""

    wait_time = pacing()

    @task(9)
    def create_order(self) -> None:
        self.client.post("/orders", json=order_body(), name="/orders")

    @task(1)
    def get_user(self) -> None:
        self.client.get(f"/users/{random_user_id()}", name="/users/[id]")
