"""K concurrent downstream calls per request, bounded by the app's semaphore; K from env."""

from locust import task

from poolbench.load import SETTINGS, PoolbenchUser, shape_from_env

LoadShape = shape_from_env()


class FanoutUser(PoolbenchUser):
    """Asks the app to fan out to the downstream stub."""

    @task
    def get_fanout(self) -> None:
        self.client.get(f"/fanout?calls={SETTINGS.fanout_calls}", name="/fanout")
