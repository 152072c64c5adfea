"""N single-row reads in one session per request (TechEmpower /queries); N = POOLBENCH_QUERIES."""

from locust import task

from poolbench.load import SETTINGS, PoolbenchUser, shape_from_env

LoadShape = shape_from_env()


class MultiQueryUser(PoolbenchUser):
    """Runs N queries per request while holding one connection."""

    @task
    def get_queries(self) -> None:
        self.client.get(f"/queries?queries={SETTINGS.queries}", name="/queries")
