"""N single-row reads in one session per request (TechEmpower /queries); N = POOLBENCH_QUERIES."""

from locust import FastHttpUser, task

from scenarios.common import SETTINGS, pacing
from scenarios.shapes import shape_from_env

LoadShape = shape_from_env()


class MultiQueryUser(FastHttpUser):
    """Runs N queries per request while holding one connection."""

    wait_time = pacing()

    @task
    def get_queries(self) -> None:
        self.client.get(f"/queries?queries={SETTINGS.queries}", name="/queries")
