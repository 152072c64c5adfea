"""Every request of this Locust process: sends, completions and open-model arrivals in flight.

Each request is timed from its intended start: Locust's response time + (actual send - intended
start). The intended start is an open-model arrival's scheduled time (for a task's later
requests, their send minus the arrival's lateness); in a closed loop it is the send. Completions
go to the window recorder and the per-second series (`poolbench.load.recorder`); a request that
never completed stays pending, so it is counted as outstanding, never silently dropped.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import gevent
from gevent.pool import Group
from locust.env import Environment
from locust.runners import locust_exception_handler

from poolbench.load.latency_file import RequestLog
from poolbench.load.recorder import DONE, DROP, SENT, SecondSeries, WindowRecorder
from poolbench.scenario_env import ScenarioEnv

if TYPE_CHECKING:
    from poolbench.load.open_model import PoolbenchUser

# Bound on killing the open model's in-flight requests once the drain (--stop-timeout) is over.
DEFAULT_KILL_TIMEOUT_S = 5.0

logger = logging.getLogger(__name__)


class ProcessRequests:
    """This process's requests: the open model's in-flight arrivals and the window's figures."""

    def __init__(self, settings: ScenarioEnv) -> None:
        self.settings = settings
        # greenlet -> [intended_epoch, sent_epoch, endpoint] of the request it has outstanding
        # (endpoint None: an open-model arrival that has not sent yet)
        self.pending: dict[Any, list[Any]] = {}
        self.arrivals = Group()  # open model: the in-flight arrivals of every user
        self.peak_inflight = 0
        self.dropped = 0
        self.window = WindowRecorder(open_model=settings.open_model)
        self.seconds = SecondSeries()
        self.on_exception: Callable[[Any], None] | None = None  # Locust's, for StopTest

    def arrive(self, user: PoolbenchUser, task: Any, intended_epoch: float) -> None:
        """Start one open-model arrival now, or drop it if the cap is reached."""
        if len(self.arrivals) >= self.settings.max_inflight:
            self.dropped += 1
            self.window.add((DROP, intended_epoch))
            if self.dropped == 1:
                logger.warning(
                    "open model: %d requests in flight reached POOLBENCH_MAX_INFLIGHT; dropping "
                    "arrivals, so the load is no longer the offered rate",
                    self.settings.max_inflight,
                )
            return
        greenlet = self.arrivals.spawn(user.run_arrival, task, intended_epoch)
        if self.on_exception is None:
            self.on_exception = locust_exception_handler(user.environment)
        greenlet.link_exception(self.on_exception)
        # Registered before it runs: an arrival killed before sending is still outstanding.
        self.pending[greenlet] = [intended_epoch, math.nan, None]
        self.peak_inflight = max(self.peak_inflight, len(self.arrivals))

    def request_started(self, endpoint: str) -> None:
        """Note the send time of the current greenlet's request (see `PoolbenchUser`)."""
        now = time.time()
        current = gevent.getcurrent()
        lag_s = getattr(current, "poolbench_lag_s", 0.0)  # closed loop: no schedule to lag
        if lag_s is None:  # the first request of an open-model arrival
            lag_s = current.poolbench_lag_s = now - current.poolbench_intended_epoch
        self.pending[current] = [now - lag_s, now, endpoint]
        self.window.add((SENT, now, lag_s * 1000))

    def forget_current(self) -> None:
        self.pending.pop(gevent.getcurrent(), None)

    def on_request(
        self,
        response_time: float,
        exception: Any = None,
        start_time: float | None = None,
        request_type: str = "",
        name: str = "",
        **_: Any,
    ) -> None:
        """Locust's `request` event: place the completed request (latency from its intent)."""
        done = time.time()
        sent = start_time if start_time is not None else done - response_time / 1000
        entry = self.pending.pop(gevent.getcurrent(), None)
        # A closed loop (or a request sent outside `PoolbenchUser`) has no schedule to lag.
        intended = entry[0] if entry is not None and entry[0] != entry[1] else sent
        latency_ms = response_time + (sent - intended) * 1000
        failed = exception is not None
        self.seconds.add(done, latency_ms, failed)
        self.window.add((DONE, done, latency_ms, failed, f"{request_type} {name}", sent))

    def drain(self, environment: Environment, **_: Any) -> None:
        """Give in-flight arrivals `--stop-timeout` to finish, then kill them (test_stop)."""
        if len(self.arrivals):
            self.arrivals.join(timeout=environment.stop_timeout or 0)
            self.arrivals.kill(block=True, timeout=DEFAULT_KILL_TIMEOUT_S)

    def result(self) -> RequestLog:
        """This process's latency file (`poolbench.load.latency_file`)."""
        settings = self.settings
        return RequestLog(
            pid=os.getpid(),
            open_rps=settings.open_rps,
            max_inflight=settings.max_inflight if settings.open_model else None,
            peak_inflight=self.peak_inflight,
            dropped_arrivals=self.dropped,
            window=self.window.as_json(),
            seconds=self.seconds.rows(),
        )
