"""Scenario support: env settings, the scenario user base, and the measured window.

The sweep runner configures scenarios only through `POOLBENCH_*` environment variables, so a
locustfile also runs by hand (`locust -f scenarios/single_query.py --host ...`) with defaults.
Every scenario user subclasses `PoolbenchUser` (a FastHttpUser).

Closed and open models. `POOLBENCH_OPEN_RPS` = 0 (the default) keeps Locust's closed loop: each
user sends, waits for the answer, thinks `POOLBENCH_THINK_TIME_S`, and sends again. With
`POOLBENCH_OPEN_RPS` > 0 each user is instead a Poisson arrival process at that rate (the offered
rate is users x POOLBENCH_OPEN_RPS): at each scheduled arrival it starts one of its tasks (by
@task weight) in a greenlet of its own, whatever earlier requests are doing, as wrk2 and k6's
constant-arrival-rate do. The schedule never slips: a user that wakes late starts the arrivals
it owes at once, and their lateness is recorded. Concurrent open-model requests are capped per
Locust process at `POOLBENCH_MAX_INFLIGHT` (default 1000, `bench.scenario_env`); an arrival that
finds the cap reached is dropped and recorded, and the process logs a warning the first time.
Latency in the open model is measured from the intended start: Locust's response time +
(actual send - scheduled arrival). Locust's own stats (CSV, summary, bucketed percentiles) still
show only the response time from the actual send, i.e. the service time the server gave.

At the run's end Locust kills the users (closed-loop requests still outstanding are aborted) and
then the open model's in-flight requests get `--stop-timeout` seconds (0 by default) to finish;
the rest are killed, so the run stops in bounded time. Either way, a request that never completed
is recorded as outstanding, never silently dropped.

Measured window. Locust's own percentiles are cumulative from the start (warm-up included) and
bucketed, and its `_stats.csv` is rewritten only once a second. So every Locust process runs a
window here instead (the files only when `POOLBENCH_OUT_DIR` is set):

- every request's scheduled, sent and completion times, response time and outcome are kept;
- `POOLBENCH_WARMUP_S` after `test_start`, Locust's stats are reset (so its own CSVs and summary
  cover about the window too) and a `start` line goes to `window.jsonl`;
- on `test_stopping` (the run-time limit or a shape ending: users are still running) an `end` line
  goes to `window.jsonl`;
- on `quit` `summary.json` gets Locust's totals, and each process writes its requests to
  `latency-<pid>.txt`. The runner (`bench/sweep/arrivals.py`) keeps only the requests that
  completed between the master's `start` and `end`: exact, and immune to the warm-up data a
  worker's pending stats report would carry into the master's totals after a reset.

`latency-<pid>.txt`, format 3 (REQUESTS_FORMAT), written whole at quit. The first line is a
header, `#poolbench-requests ` then JSON: `format`, `pid`, `open_rps` (per user; 0 = closed loop),
`max_inflight` (the cap, null in a closed loop), `peak_inflight` and `dropped_arrivals` (whole run,
warm-up included: diagnostics), and `endpoints`, the list of endpoint names the lines refer to.
Then one line per request or arrival, six fields separated by spaces, warm-up included:

    intended_epoch sent_epoch done_epoch response_ms outcome endpoint

- `intended_epoch`: when the request should have started. Open model: its scheduled arrival
  (for a task's later requests, their send minus the arrival's lateness); closed loop: = sent.
- `sent_epoch`: when Locust started the request (the `request` event's `start_time`).
- `done_epoch`: when it completed (the `request` event fired); `response_ms`: Locust's response
  time, from the actual send. Latency from the intended start = response_ms + (sent - intended).
- `outcome`: 0 ok, 1 failed, 2 outstanding (started, never completed: still in flight when the
  process stopped it; done and response are `nan`, and sent is `nan` if it was killed before
  sending), 3 dropped (a scheduled arrival not started because the cap was reached; only
  intended is set).
- `endpoint`: an index (0-based) into the header's `endpoints`, or `-` when unknown. An endpoint
  is Locust's request_type and name, e.g. `GET /users/[id]` or `POST /orders` (names may hold
  spaces, hence the table). A dropped arrival has no request: it gets its task's first request's
  endpoint, once any arrival of that task has made one, else `-`. An outstanding request has the
  endpoint it was sent to (an arrival killed before sending: as a dropped one).

Format 2 is the same without `endpoint` (and `endpoints`); format 1 had no header and three
fields, `done_epoch response_ms failed`. Both still read.

Epochs are `time.time()` seconds: processes of one host share the clock.

The runner watches `window.jsonl` to reset the app's telemetry and snapshot Postgres and CPU
counters at the same two moments, so all figures cover the same window.

A remote worker (`--remote-workers`) has no `POOLBENCH_OUT_DIR`: it only resets its stats at the
window start, so its reports carry no warm-up into the master's totals, and the runner falls back
to the master's (bucketed) figures.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import random
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gevent
from gevent.pool import Group
from locust import FastHttpUser, TaskSet, constant, events
from locust.env import Environment
from locust.exception import (
    InterruptTaskSet,
    RescheduleTask,
    RescheduleTaskImmediately,
    StopTest,
    StopUser,
)
from locust.runners import (
    STATE_CLEANUP,
    STATE_STOPPED,
    STATE_STOPPING,
    MasterRunner,
    WorkerRunner,
    locust_exception_handler,
)
from locust.user.task import DefaultTaskSet
from locust.user.users import LOCUST_STATE_WAITING

from bench.results import (
    LATENCY_FILE_PREFIX,
    OUTCOME_DROPPED,
    OUTCOME_FAILED,
    OUTCOME_OK,
    OUTCOME_OUTSTANDING,
    REQUESTS_ENDPOINTS_KEY,
    REQUESTS_FORMAT,
    REQUESTS_HEADER,
    SUMMARY_FILE,
    UNKNOWN_ENDPOINT,
    WINDOW_FILE,
)
from bench.scenario_env import ScenarioEnv

DEFAULT_ITEMS_PER_ORDER = 3
# Bound on killing the open model's in-flight requests once the drain (--stop-timeout) is over.
DEFAULT_KILL_TIMEOUT_S = 5.0

logger = logging.getLogger(__name__)

SETTINGS = ScenarioEnv.from_env()


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


def random_user_id() -> int:
    """Return a seeded user id, uniformly in 1..POOLBENCH_SEED_USERS."""
    return random.randint(1, SETTINGS.seed_users)


def order_body() -> dict[str, Any]:
    """Return a POST /orders body for a random user."""
    items = [
        {
            "sku": f"SKU-{random.randint(1, 500):04d}",
            "quantity": random.randint(1, 3),
            "price_cents": random.randint(100, 10_000),
        }
        for _ in range(DEFAULT_ITEMS_PER_ORDER)
    ]
    return {"user_id": random_user_id(), "items": items}


class _Requests:
    """Every request of this Locust process: scheduled, sent, completed (module docstring)."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        # greenlet -> [intended_epoch, sent_epoch, endpoint] of the request it has outstanding
        # (endpoint None: an open-model arrival that has not sent yet)
        self.pending: dict[Any, list[Any]] = {}
        self.arrivals = Group()  # open model: the in-flight arrivals of every user
        self.peak_inflight = 0
        self.dropped = 0
        self.dropped_in_window = 0
        # (intended_epoch, task) of every dropped arrival: its endpoint is named at quit.
        self.dropped_arrivals: list[tuple[float, Any]] = []
        self.endpoints: dict[str, int] = {}  # endpoint -> its index in the header's table
        self.task_endpoints: dict[Any, str] = {}  # task -> the endpoint of its first request
        self.on_exception: Callable[[Any], None] | None = None  # Locust's, for StopTest

    def arrive(self, user: PoolbenchUser, task: Any, intended_epoch: float) -> None:
        """Start one open-model arrival now, or drop it if the cap is reached."""
        if len(self.arrivals) >= SETTINGS.max_inflight:
            self.dropped += 1
            self.dropped_in_window += _window.open
            self.dropped_arrivals.append((intended_epoch, task))
            if self.dropped == 1:
                logger.warning(
                    "open model: %d requests in flight reached POOLBENCH_MAX_INFLIGHT; dropping "
                    "arrivals, so the load is no longer the offered rate",
                    SETTINGS.max_inflight,
                )
            return
        greenlet = self.arrivals.spawn(user.run_arrival, task, intended_epoch)
        greenlet.poolbench_task = task
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

    def forget_current(self) -> None:
        self.pending.pop(gevent.getcurrent(), None)

    def endpoint_field(self, endpoint: str | None) -> str:
        """The endpoint field of a line: an index into the header's table, or `-` (unknown)."""
        if endpoint is None:
            return UNKNOWN_ENDPOINT
        return str(self.endpoints.setdefault(endpoint, len(self.endpoints)))

    def on_request(
        self,
        response_time: float,
        exception: Any = None,
        start_time: float | None = None,
        request_type: str = "",
        name: str = "",
        **_: Any,
    ) -> None:
        # Every request, warm-up included: the runner keeps those that completed inside the
        # master's window, so workers need no clock of their own (--processes shares one host).
        done = time.time()
        sent = start_time if start_time is not None else done - response_time / 1000
        current = gevent.getcurrent()
        entry = self.pending.pop(current, None)
        # A closed loop (or a request sent outside `PoolbenchUser`) has no schedule to lag.
        intended = entry[0] if entry is not None and entry[0] != entry[1] else sent
        outcome = OUTCOME_FAILED if exception is not None else OUTCOME_OK
        endpoint = f"{request_type} {name}"
        task = getattr(current, "poolbench_task", None)
        if task is not None and task not in self.task_endpoints:
            # An arrival's requests run in turn: the first to complete is a first request.
            self.task_endpoints[task] = endpoint
        self.lines.append(
            f"{intended:.6f} {sent:.6f} {done:.6f} {response_time:.3f} {outcome} "
            + self.endpoint_field(endpoint)
        )

    def drain(self, environment: Environment, **_: Any) -> None:
        """Give in-flight arrivals `--stop-timeout` to finish, then kill them (test_stop)."""
        if len(self.arrivals):
            self.arrivals.join(timeout=environment.stop_timeout or 0)
            self.arrivals.kill(block=True, timeout=DEFAULT_KILL_TIMEOUT_S)

    def text(self) -> str:
        dropped = [
            f"{intended:.6f} nan nan nan {OUTCOME_DROPPED} "
            + self.endpoint_field(self.task_endpoints.get(task))
            for intended, task in self.dropped_arrivals
        ]
        outstanding = []
        for greenlet, (intended, sent, endpoint) in self.pending.items():
            if endpoint is None:  # killed before sending: named as a dropped arrival
                endpoint = self.task_endpoints.get(getattr(greenlet, "poolbench_task", None))
            outstanding.append(
                f"{intended:.6f} {sent:.6f} nan nan {OUTCOME_OUTSTANDING} "
                + self.endpoint_field(endpoint)
            )
        header = {
            "format": REQUESTS_FORMAT,
            "pid": os.getpid(),
            "open_rps": SETTINGS.open_rps,
            "max_inflight": SETTINGS.max_inflight if SETTINGS.open_model else None,
            "peak_inflight": self.peak_inflight,
            "dropped_arrivals": self.dropped,
            # After every line is made: each may have added a name.
            REQUESTS_ENDPOINTS_KEY: list(self.endpoints),
        }
        lines = [REQUESTS_HEADER + json.dumps(header), *self.lines, *dropped, *outstanding]
        return "\n".join(lines) + "\n"


_requests = _Requests()


def _endpoint(session: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    """The endpoint Locust will name a request (as `FastHttpSession.request` does)."""
    method = kwargs.get("method", args[0] if args else "")
    url = kwargs.get("url", args[1] if len(args) > 1 else "")
    name = kwargs.get("name", args[2] if len(args) > 2 else None)
    return f"{method} {name or getattr(session, 'request_name', None) or url}"


def _tracked(request: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a client's `request` so an outstanding request is known before its event fires."""
    session = getattr(request, "__self__", None)

    @functools.wraps(request)
    def tracked(*args: Any, **kwargs: Any) -> Any:
        _requests.request_started(_endpoint(session, args, kwargs))
        try:
            return request(*args, **kwargs)
        except Exception:
            _requests.forget_current()  # a bug, not a request in flight (kills are BaseException)
            raise

    return tracked


class PoolbenchUser(FastHttpUser):
    """A scenario user: Locust's closed loop, or an open Poisson arrival process.

    Subclasses declare @task methods as usual. In the open model the tasks must be functions
    (a nested TaskSet runs its own closed loop).
    """

    abstract = True
    wait_time = pacing()
    # One user may have many requests in flight in the open model: size its connection pool
    # so that only the per-process cap limits them.
    concurrency = max(FastHttpUser.concurrency, SETTINGS.max_inflight if SETTINGS.open_model else 0)

    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        self.client.request = _tracked(self.client.request)

    def run(self) -> None:  # Locust marks it @final; the open model replaces its loop
        if not SETTINGS.open_model:
            super().run()
            return
        self._taskset_instance = DefaultTaskSet(self)
        if any(isinstance(t, type) and issubclass(t, TaskSet) for t in self.tasks):
            raise ValueError(f"{type(self).__name__}: the open model runs function tasks only")
        # Only arrivals are scheduled here, so stopping the user never waits for a task.
        self._state = LOCUST_STATE_WAITING
        try:
            self.on_start()
            arrivals = _arrivals_of(self, SETTINGS.open_rps)
            while True:
                due_s = arrivals.next_due()
                gevent.sleep(max(0.0, due_s - time.monotonic()))  # sleep(0) yields when late
                task = self._taskset_instance.get_next_task()
                # Scheduled on the monotonic clock, recorded on the wall clock like the sends.
                _requests.arrive(self, task, due_s + time.time() - time.monotonic())
        except (gevent.GreenletExit, StopUser):
            self.on_stop()

    def run_arrival(self, task: Any, intended_epoch: float) -> None:
        """Run one task for an arrival scheduled at `intended_epoch` (in its own greenlet)."""
        current = gevent.getcurrent()
        current.poolbench_intended_epoch = intended_epoch
        current.poolbench_lag_s = None  # measured at the arrival's first request
        try:
            self._taskset_instance.execute_task(task)
        except (RescheduleTask, RescheduleTaskImmediately, InterruptTaskSet):
            pass
        except StopUser:
            self._group.killone(self._greenlet, block=False)
        except StopTest:
            raise  # Locust's handler (linked in `arrive`) stops the test
        except Exception as e:
            _requests.forget_current()
            self.environment.events.user_error.fire(
                user_instance=self, exception=e, tb=e.__traceback__
            )
            if not self.environment.catch_exceptions:
                raise
            logger.error("%s\n%s", e, traceback.format_exc())
        # Reached unless killed: an arrival that finished is not outstanding.
        _requests.forget_current()


class _Window:
    """The measured window of this Locust process (see the module docstring)."""

    def __init__(self, out_dir: Path | None) -> None:
        self.out_dir = out_dir
        self.open = False
        self.start_epoch: float | None = None
        self.end_epoch: float | None = None
        self.environment: Environment | None = None

    def _is_worker(self) -> bool:
        return isinstance(self.environment and self.environment.runner, WorkerRunner)

    def _mark(self, event: str, epoch: float) -> None:
        if self.out_dir is None:
            return
        if self._is_worker():
            event = f"worker_{event}"  # diagnostics only: the master speaks for the test
        with open(self.out_dir / WINDOW_FILE, "a", encoding="utf-8") as fh:
            fh.write(json.dumps({"event": event, "epoch": epoch, "pid": os.getpid()}) + "\n")

    def begin(self) -> None:
        runner = self.environment.runner if self.environment else None
        if runner is None or runner.state in (STATE_STOPPING, STATE_STOPPED, STATE_CLEANUP):
            return  # the run ended before its warm-up did: no window
        runner.stats.reset_all()
        _requests.dropped_in_window = 0
        self.start_epoch = time.time()
        self.open = True
        self._mark("start", self.start_epoch)

    def on_test_start(self, environment: Environment, **_: Any) -> None:
        self.environment = environment
        gevent.spawn_later(SETTINGS.warmup_s, self.begin)

    def on_test_stopping(self, environment: Environment, **_: Any) -> None:
        if self.open:
            self.open = False
            self.end_epoch = time.time()
            self._mark("end", self.end_epoch)

    def on_quit(self, exit_code: int, **_: Any) -> None:
        if self.out_dir is None:
            return
        (self.out_dir / f"{LATENCY_FILE_PREFIX}{os.getpid()}.txt").write_text(_requests.text())
        env = self.environment
        if env is None or env.runner is None or self._is_worker():
            return
        total = env.runner.stats.total
        distributed = isinstance(env.runner, MasterRunner)
        summary = {
            "start_epoch": self.start_epoch,
            "end_epoch": self.end_epoch,
            "requests": total.num_requests,
            "failures": total.num_failures,
            "mean_ms": total.avg_response_time,
            "max_ms": total.max_response_time,
            # Locust's bucketed figures: the fallback when no exact latencies were kept. They
            # time each request from its actual send, also in the open model.
            "p50_ms": total.get_response_time_percentile(0.50),
            "p95_ms": total.get_response_time_percentile(0.95),
            "p99_ms": total.get_response_time_percentile(0.99),
            # Per endpoint, the same bucketed figures: the fallback of the endpoint figures.
            "by_name": {
                f"{e.method} {e.name}": {
                    "requests": e.num_requests,
                    "failures": e.num_failures,
                    "mean_ms": e.avg_response_time,
                    "p50_ms": e.get_response_time_percentile(0.50),
                    "p95_ms": e.get_response_time_percentile(0.95),
                    "p99_ms": e.get_response_time_percentile(0.99),
                }
                for e in env.runner.stats.entries.values()
            },
            "cpu_warning": bool(
                getattr(env.runner, "cpu_warning_emitted", False)
                or getattr(env.runner, "worker_cpu_warning_emitted", False)
            ),
            "distributed": distributed,
            "open_rps": SETTINGS.open_rps,
            "max_inflight": SETTINGS.max_inflight if SETTINGS.open_model else None,
            # This process's own arrivals; a master's workers report theirs in their files.
            "dropped_arrivals": None if distributed else _requests.dropped_in_window,
            "cap_reached": None if distributed else _requests.dropped_in_window > 0,
        }
        (self.out_dir / SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n")


_window = _Window(SETTINGS.out_dir)
events.test_start.add_listener(_window.on_test_start)
events.request.add_listener(_requests.on_request)
events.test_stopping.add_listener(_window.on_test_stopping)
events.test_stop.add_listener(_requests.drain)
events.quit.add_listener(_window.on_quit)
