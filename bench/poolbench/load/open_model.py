"""Locust's closed loop or open Poisson arrivals: `OpenArrivals` and the scenario user base.

Every scenario user subclasses `PoolbenchUser` (a FastHttpUser with `OpenArrivals` mixed in); a
user's own locustfile gets `OpenArrivals` mixed into its classes (`poolbench.load.wrapping`),
its file untouched. `POOLBENCH_OPEN_RPS` = 0 (the
default) keeps Locust's closed loop: each user sends, waits for the answer, thinks
`POOLBENCH_THINK_TIME_S`, and sends again. With `POOLBENCH_OPEN_RPS` > 0 each user is instead a
Poisson arrival process at that rate (the offered rate is users x POOLBENCH_OPEN_RPS): at each
scheduled arrival it starts one of its tasks (by @task weight) in a greenlet of its own, whatever
earlier requests are doing, as wrk2 and k6's constant-arrival-rate do. The schedule never slips:
a user that wakes late starts the arrivals it owes at once, and their lateness is recorded.
Concurrent open-model requests are capped per Locust process at `POOLBENCH_MAX_INFLIGHT` (default
1000, `poolbench.scenario_env`); an arrival that finds the cap reached is dropped and recorded,
and the process logs a warning the first time. Latency in the open model is measured from the
intended start (`poolbench.load.tracking`); Locust's own stats (CSV, summary, bucketed
percentiles) still show only the response time from the actual send, i.e. the service time the
server gave.

At the run's end Locust kills the users (closed-loop requests still outstanding are aborted) and
then the open model's in-flight requests get `--stop-timeout` seconds (0 by default) to finish;
the rest are killed, so the run stops in bounded time. Either way, a request that never completed
is recorded as outstanding, never silently dropped.

Importing this module registers the measured window's listeners (`poolbench.load.listeners`).
"""

from __future__ import annotations

import logging
import random
import time
import traceback
from collections.abc import Callable
from typing import Any

import gevent
from locust import FastHttpUser, TaskSet, constant
from locust.clients import HttpSession, LocustHttpAdapter
from locust.env import Environment
from locust.exception import (
    InterruptTaskSet,
    RescheduleTask,
    RescheduleTaskImmediately,
    StopTest,
    StopUser,
)
from locust.user.task import DefaultTaskSet
from locust.user.users import LOCUST_STATE_WAITING

from poolbench.load.listeners import REQUESTS
from poolbench.load.scenario_data import SETTINGS

# The private attributes of Locust's User that `PoolbenchUser.run` sets or uses, as Locust's own
# run and stop do. pyproject pins locust<3 for them; tests/sweep/test_locust_api.py checks that
# the installed Locust still has them.
LOCUST_PRIVATE_USER_ATTRIBUTES = ("_state", "_taskset_instance", "_group", "_greenlet")

logger = logging.getLogger(__name__)


class PoissonArrivals:
    """A fixed schedule of Poisson arrivals (monotonic seconds) that never slips.

    Gaps are exponential, not fixed: `constant_throughput` keeps every user on a fixed period,
    the users' phases lock together and arrive in bursts, and a pool that is ample for the mean
    rate then queues at every burst. Many independent clients, as in production, give Poisson
    arrivals, which is also what Erlang C assumes. Each due time follows the last one, never
    "now": arrivals that a late wake-up missed are still owed, not silently skipped.
    """

    def __init__(self, rate_per_s: float, start_s: float) -> None:
        self.rate_per_s = rate_per_s
        self.due_s = start_s

    def next_due(self) -> float:
        self.due_s += random.expovariate(self.rate_per_s)
        return self.due_s


def _arrivals_of(user: Any, rate_per_s: float) -> PoissonArrivals:
    arrivals = getattr(user, "_poolbench_arrivals", None)
    if arrivals is None:
        arrivals = user._poolbench_arrivals = PoissonArrivals(rate_per_s, time.monotonic())
    return arrivals


def pacing() -> Any:
    """Return the wait_time for every user class: closed loop, or the open model's schedule.

    A closed-loop user sends its next request only after the last one returned, so when the
    server slows down the offered load drops with it and latency looks better than a real
    population of clients would see (coordinated omission). With `POOLBENCH_OPEN_RPS` > 0 a
    `PoolbenchUser` runs its arrival loop instead of Locust's wait/task loop (module docstring).
    """
    if SETTINGS.open_model:
        return poisson_pacing(SETTINGS.open_rps)
    return constant(SETTINGS.think_time_s)


def poisson_pacing(rate_per_s: float) -> Callable[[Any], float]:
    """Return a wait_time: the seconds until the user's next arrival on its Poisson schedule.

    The same schedule a `PoolbenchUser` follows in the open model. Negative when the user is
    late: a plain Locust user pacing itself with it still owes every arrival.
    """

    def wait_time(user: Any) -> float:
        return _arrivals_of(user, rate_per_s).next_due() - time.monotonic()

    return wait_time


def _endpoint(session: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    """The endpoint Locust will name a request (as both of its HTTP sessions do)."""
    method = kwargs.get("method", args[0] if args else "")
    url = kwargs.get("url", args[1] if len(args) > 1 else "")
    name = kwargs.get("name", args[2] if len(args) > 2 else None)
    return f"{method} {name or session.request_name or url}"


class _TrackedRequests:
    """Mixed into a user's HTTP session class: notes each send before Locust's request event."""

    def request(self, *args: Any, **kwargs: Any) -> Any:
        REQUESTS.request_started(_endpoint(self, args, kwargs))
        try:
            return super().request(*args, **kwargs)  # type: ignore[misc]
        except Exception:
            REQUESTS.forget_current()  # a bug, not a request in flight (kills are BaseException)
            raise


_TRACKED: dict[type, type] = {}


def track_requests(client: Any) -> None:
    """Re-class an HTTP session so that every request's send is noted (`tracking`).

    Only behaviour is added, no state, so Locust's own constructor arguments stay Locust's.
    """
    cls = type(client)
    if not issubclass(cls, _TrackedRequests):
        tracked = _TRACKED.get(cls)
        if tracked is None:
            tracked = _TRACKED[cls] = type(f"Tracked{cls.__name__}", (_TrackedRequests, cls), {})
        client.__class__ = tracked


class OpenArrivals:
    """Mixed into a Locust user class: Locust's closed loop, or an open Poisson arrival process.

    With the open model off, the user's own wait/task loop runs. With it on, the user runs its
    `on_start` once and then starts one of its tasks (by @task weight) at each of its arrivals,
    each in a greenlet of its own (module docstring). Tasks must be functions: a nested TaskSet
    runs its own closed loop.
    """

    poolbench_tasks: DefaultTaskSet  # the open model's: set by `run`

    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)  # type: ignore[call-arg]
        client = getattr(self, "client", None)
        if client is not None:
            track_requests(client)
            shared = getattr(self, "pool_manager", None)
            if SETTINGS.open_model and isinstance(client, HttpSession) and shared is None:
                # One user may have many requests in flight: room for them in its pool.
                for prefix in ("http://", "https://"):
                    adapter = LocustHttpAdapter(None, pool_maxsize=SETTINGS.max_inflight)
                    client.mount(prefix, adapter)

    # Locust marks User.run @final; the open model replaces its wait/task loop.
    def run(self) -> None:
        user: Any = self
        if not SETTINGS.open_model:
            super().run()  # type: ignore[misc]
            return
        # As Locust's own run does: Locust's task helpers find the task set there.
        user._taskset_instance = self.poolbench_tasks = DefaultTaskSet(user)
        if any(isinstance(t, type) and issubclass(t, TaskSet) for t in user.tasks):
            raise ValueError(f"{type(self).__name__}: the open model runs function tasks only")
        # Only arrivals are scheduled here, so stopping the user never waits for a task.
        user._state = LOCUST_STATE_WAITING
        try:
            user.on_start()
            arrivals = _arrivals_of(self, SETTINGS.open_rps)
            while True:
                due_s = arrivals.next_due()
                gevent.sleep(max(0.0, due_s - time.monotonic()))  # sleep(0) yields when late
                task = self.poolbench_tasks.get_next_task()
                # Scheduled on the monotonic clock, recorded on the wall clock like the sends.
                REQUESTS.arrive(user, task, due_s + time.time() - time.monotonic())
        except (gevent.GreenletExit, StopUser):
            user.on_stop()

    def run_arrival(self, task: Any, intended_epoch: float) -> None:
        """Run one task for an arrival scheduled at `intended_epoch` (in its own greenlet)."""
        user: Any = self
        current = gevent.getcurrent()
        current.poolbench_intended_epoch = intended_epoch
        current.poolbench_lag_s = None  # measured at the arrival's first request
        try:
            self.poolbench_tasks.execute_task(task)
        except (RescheduleTask, RescheduleTaskImmediately, InterruptTaskSet):
            pass
        except StopUser:
            user._group.killone(user._greenlet, block=False)
        except StopTest:
            raise  # Locust's handler (linked in `arrive`) stops the test
        except Exception as e:
            REQUESTS.forget_current()
            user.environment.events.user_error.fire(
                user_instance=self, exception=e, tb=e.__traceback__
            )
            if not user.environment.catch_exceptions:
                raise
            logger.error("%s\n%s", e, traceback.format_exc())
        # Reached unless killed: an arrival that finished is not outstanding.
        REQUESTS.forget_current()


def open_model_concurrency(user_class: type) -> dict[str, Any]:
    """The class attributes that size a FastHttpUser's connection pool for the open model."""
    if not issubclass(user_class, FastHttpUser):
        return {}
    return {"concurrency": max(user_class.concurrency, SETTINGS.max_inflight)}


class PoolbenchUser(OpenArrivals, FastHttpUser):  # type: ignore[misc]  # run is OpenArrivals'
    """A scenario user: Locust's closed loop, or an open Poisson arrival process.

    Subclasses declare @task methods as usual. In the open model the tasks must be functions
    (a nested TaskSet runs its own closed loop).
    """

    abstract = True
    wait_time = pacing()
    # One user may have many requests in flight in the open model: size its connection pool
    # so that only the per-process cap limits them.
    concurrency = max(FastHttpUser.concurrency, SETTINGS.max_inflight if SETTINGS.open_model else 0)
