"""A weighted mix of every endpoint, roughly a read-mostly production API."""

from locust import task

from poolbench.load import SETTINGS, PoolbenchUser, order_body, random_user_id, shape_from_env

LoadShape = shape_from_env()


class MixUser(PoolbenchUser):
    """Reads most of the time, writes and fans out now and then."""

    @task(10)
    def get_user(self) -> None:
        self.client.get(f"/users/{random_user_id()}", name="/users/[id]")

    @task(3)
    def get_orders(self) -> None:
        self.client.get(f"/users/{random_user_id()}/orders", name="/users/[id]/orders")

    @task(2)
    def get_raw_user(self) -> None:
        self.client.get(f"/raw/users/{random_user_id()}", name="/raw/users/[id]")

    @task(2)
    def get_queries(self) -> None:
        self.client.get(f"/queries?queries={SETTINGS.queries}", name="/queries")

    @task(2)
    def create_order(self) -> None:
        self.client.post("/orders", json=order_body(), name="/orders")

    @task(1)
    def get_fanout(self) -> None:
        self.client.get(f"/fanout?calls={SETTINGS.fanout_calls}", name="/fanout")
