"""One single-row read per request: the simplest pool-bound workload."""

from locust import task

from poolbench.load import PoolbenchUser, random_user_id, shape_from_env

LoadShape = shape_from_env()


class SingleQueryUser(PoolbenchUser):
    """Reads one user by id."""

    @task
    def get_user(self) -> None:
        self.client.get(f"/users/{random_user_id()}", name="/users/[id]")
