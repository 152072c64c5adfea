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
Locust process at `POOLBENCH_MAX_INFLIGHT` (default 1000, `poolbench.scenario_env`); an arrival that
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
window here instead, in memory bounded whatever the run's length (the files only when
`POOLBENCH_OUT_DIR` is set):

- `POOLBENCH_WARMUP_S` after `test_start`, Locust's stats are reset (so its own CSVs and summary
  cover about the window too) and a `start` line goes to `window.jsonl`;
- on `test_stopping` (the run-time limit or a shape ending: users are still running) an `end` line
  goes to `window.jsonl`;
- the requests that completed between the `start` and `end` epochs go into HDR histograms
  (`poolbench.hdr`: microseconds, 1 us to an hour, 3 significant digits) of the latency from the
  intended start, overall and per endpoint, with exact counts, failures, sum and max; sends in
  the window are counted and their schedule lag goes into a histogram too; arrivals scheduled in
  the window and dropped are counted; requests started before `end` and not completed by then
  are counted as in flight at the end;
- every request (warm-up included) also goes into a per-second series: requests, failures and a
  coarse histogram (2 significant digits) per completion second, a few hundred bytes a second;
- on `quit` `summary.json` gets Locust's totals, and a single process writes its figures to
  `latency-<pid>.json`.

The window's edges are the master's. A single process marks them itself and places each request
at once. With workers (`--processes` or remote), the master sends each edge's epoch to the
workers (message `poolbench_window`); a worker holds its events of the last `DEFAULT_HOLD_S`
seconds unplaced, so the requests that completed between an edge and its message are still
placed exactly, and at the `end` message it sends its figures to the master (message
`poolbench_window_figures`, the file's JSON), whose `test_stopping` waits for every worker's
(bounded) and writes each to `latency-<worker id>.json`. Remote workers, which have no out dir,
so give the same exact-window figures as local ones. A worker whose message came after its hold
marks its figures `exact: false`. A worker's per-second series stops at the window's end.

`latency-*.json`, format 4 (REQUESTS_FORMAT): one JSON object with `format`, `pid`, `open_rps`
(per user; 0 = closed loop), `max_inflight` (the cap, null in a closed loop), `peak_inflight`
and `dropped_arrivals` (whole run, warm-up included: diagnostics), `window` and `seconds`:

- `window`: `start_epoch`, `end_epoch`, `exact`, `requests`, `failures`, `sum_ms`, `max_ms`, `hdr`
  (the latency histogram, HdrHistogram's compressed base64 encoding), `sent`, `dropped_arrivals`,
  `inflight_at_end`, `lag_hdr` (null in a closed loop) and `endpoints`: {endpoint: {requests,
  failures, sum_ms, max_ms, hdr}}. An endpoint is Locust's request_type and name, e.g.
  `GET /users/[id]` or `POST /orders`.
- `seconds`: `[second, requests, failures, coarse hdr]` per completion second.

Latency from the intended start = Locust's response time + (actual send - intended start). The
intended start is an open-model arrival's scheduled time (for a task's later requests, their
send minus the arrival's lateness); in a closed loop it is the send. The runner
(`bench/sweep/arrivals.py`) merges the files into the run's `latency.json` and removes them.
Formats 1 to 3 were raw request lines (`latency-<pid>.txt`), read only by the sweep that wrote
them; nothing reads them now.

Epochs are `time.time()` seconds: a worker on another host needs a synchronised clock.

The runner watches `window.jsonl` to reset the app's telemetry and snapshot Postgres and CPU
counters at the same two moments, so all figures cover the same window.
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
from collections import deque
from collections.abc import Callable, Iterable
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

from poolbench import hdr
from poolbench.results import (
    LATENCY_FILE_PREFIX,
    LATENCY_FILE_SUFFIX,
    REQUESTS_FORMAT,
    SUMMARY_FILE,
    WINDOW_FILE,
    WINDOW_HDR_KEY,
)
from poolbench.scenario_env import ScenarioEnv

DEFAULT_ITEMS_PER_ORDER = 3
# Bound on killing the open model's in-flight requests once the drain (--stop-timeout) is over.
DEFAULT_KILL_TIMEOUT_S = 5.0
# A worker holds its latest events this long for the master's window messages (see
# `_WindowRecorder`); the master waits this long at the window's end for the workers' figures.
DEFAULT_HOLD_S = 10.0
DEFAULT_RESULT_TIMEOUT_S = 30.0
WINDOW_MESSAGE = "poolbench_window"  # master -> workers: {"event": start|end, "epoch"}
RESULT_MESSAGE = "poolbench_window_figures"  # worker -> master: its requests file, as JSON

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


class _Seconds:
    """Per completion second: requests, failures and a coarse latency histogram (the report's
    time series). Memory: one entry of a few hundred bytes per second of the run."""

    def __init__(self) -> None:
        self.closed: dict[int, list[Any]] = {}  # second -> [requests, failures, encoded]
        self.open: dict[int, list[Any]] = {}  # the last two seconds: [requests, failures, hist]

    def add(self, done_epoch: float, latency_ms: float, failed: bool) -> None:
        second = math.floor(done_epoch)
        entry = self.open.get(second)
        if entry is None:
            for old in [old for old in self.open if old < second - 1]:
                self._close(old)
            entry = self.open[second] = [0, 0, hdr.new_histogram(hdr.COARSE_SIGNIFICANT_DIGITS)]
        entry[0] += 1
        entry[1] += failed
        hdr.record_ms(entry[2], latency_ms)

    def _close(self, second: int) -> None:
        count, failures, histogram = self.open.pop(second)
        if second in self.closed:  # a late completion (the clock stepped back): add up
            before = self.closed[second]
            count, failures = count + before[0], failures + before[1]
            histogram.add(hdr.decode(before[2]))
        self.closed[second] = [count, failures, hdr.encode(histogram)]

    def rows(self) -> list[list[Any]]:
        """`[second, requests, failures, encoded histogram]` per second, in order."""
        for second in list(self.open):
            self._close(second)
        return [[second, *self.closed[second]] for second in sorted(self.closed)]


class _Latencies:
    """Count, failures, exact sum and max, and an HDR histogram of latencies in milliseconds."""

    def __init__(self) -> None:
        self.histogram = hdr.new_histogram()
        self.requests = 0
        self.failures = 0
        self.sum_ms = 0.0
        self.max_ms = 0.0

    def add(self, latency_ms: float, failed: bool) -> None:
        hdr.record_ms(self.histogram, latency_ms)
        self.requests += 1
        self.failures += failed
        self.sum_ms += latency_ms
        self.max_ms = max(self.max_ms, latency_ms)

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "failures": self.failures,
            "sum_ms": self.sum_ms,
            "max_ms": self.max_ms,
            WINDOW_HDR_KEY: hdr.encode(self.histogram),
        }


# Event kinds a process classifies against the window: (kind, epoch, ...).
_DONE, _SENT, _DROP = "done", "sent", "drop"


class _WindowRecorder:
    """This process's figures of the measured window, in memory bounded whatever the run's length.

    Every completion, send and dropped arrival is an event with an epoch; an event is placed
    (counted in the window or not) once the window's edges it depends on are known. A process
    that marks the window itself (a single Locust process) knows them at once; a worker learns
    the master's `start` and `end` epochs from its messages, so it holds its events of the last
    `DEFAULT_HOLD_S` seconds unplaced: those that completed between an edge and the message
    that carries it are placed exactly. `exact` turns False if a message came later than that.
    """

    def __init__(self) -> None:
        self.hold_s = 0.0
        self.start_epoch: float | None = None
        self.end_epoch: float | None = None
        self.exact = True
        self.held: deque[tuple[Any, ...]] = deque()
        self.discarded_max = -math.inf  # latest event dropped before `start` was known
        self.placed_max = -math.inf  # latest event counted before `end` was known
        self.latency = _Latencies()
        self.endpoints: dict[str, _Latencies] = {}
        self.lag = hdr.new_histogram()
        self.sent = 0
        self.dropped = 0
        self.inflight_at_end: int | None = None

    def add(self, event: tuple[Any, ...]) -> None:
        if self.end_epoch is not None or self.hold_s <= 0:
            self._place(event)
            return
        self.held.append(event)
        horizon = time.time() - self.hold_s
        while self.held and self.held[0][1] < horizon:
            self._place(self.held.popleft())

    def _place(self, event: tuple[Any, ...]) -> None:
        kind, epoch = event[0], event[1]
        if self.start_epoch is None:
            self.discarded_max = max(self.discarded_max, epoch)
            return
        if epoch < self.start_epoch or (self.end_epoch is not None and epoch >= self.end_epoch):
            return
        if self.end_epoch is None:
            self.placed_max = max(self.placed_max, epoch)
        if kind == _DONE:
            _, _, latency_ms, failed, endpoint, _ = event
            self.latency.add(latency_ms, failed)
            latencies = self.endpoints.get(endpoint)
            if latencies is None:  # not setdefault: a histogram is 184 KiB to make
                latencies = self.endpoints[endpoint] = _Latencies()
            latencies.add(latency_ms, failed)
        elif kind == _SENT:
            self.sent += 1
            if SETTINGS.open_model:
                hdr.record_ms(self.lag, event[2])
        else:
            self.dropped += 1

    def begin(self, epoch: float) -> None:
        self.start_epoch = epoch
        self.exact &= self.discarded_max < epoch

    def finish(self, epoch: float, pending: Iterable[list[Any]]) -> None:
        """Close the window at `epoch`; `pending` are the requests still in flight now."""
        if self.start_epoch is None or self.end_epoch is not None:
            return
        self.end_epoch = epoch
        self.exact &= self.placed_max < epoch
        # Started before the end, not completed by then: in flight now, or completed since.
        inflight = sum(1 for intended, sent, _ in pending if _started(intended, sent) < epoch)
        inflight += sum(1 for e in self.held if e[0] == _DONE and e[1] >= epoch and e[5] < epoch)
        self.inflight_at_end = inflight
        while self.held:
            self._place(self.held.popleft())

    def as_dict(self) -> dict[str, Any]:
        return {
            "start_epoch": self.start_epoch,
            "end_epoch": self.end_epoch,
            "exact": self.exact,
            **self.latency.as_dict(),
            "sent": self.sent,
            "dropped_arrivals": self.dropped,
            "inflight_at_end": self.inflight_at_end,
            "lag_hdr": hdr.encode(self.lag) if SETTINGS.open_model else None,
            "endpoints": {name: e.as_dict() for name, e in sorted(self.endpoints.items())},
        }


def _started(intended: float, sent: float) -> float:
    """When a request started: its send, or for an arrival killed before sending, its schedule."""
    return intended if math.isnan(sent) else sent


class _Requests:
    """This process's requests: the open model's in-flight arrivals and the window's figures."""

    def __init__(self) -> None:
        # greenlet -> [intended_epoch, sent_epoch, endpoint] of the request it has outstanding
        # (endpoint None: an open-model arrival that has not sent yet)
        self.pending: dict[Any, list[Any]] = {}
        self.arrivals = Group()  # open model: the in-flight arrivals of every user
        self.peak_inflight = 0
        self.dropped = 0
        self.window = _WindowRecorder()
        self.seconds = _Seconds()
        self.on_exception: Callable[[Any], None] | None = None  # Locust's, for StopTest

    def arrive(self, user: PoolbenchUser, task: Any, intended_epoch: float) -> None:
        """Start one open-model arrival now, or drop it if the cap is reached."""
        if len(self.arrivals) >= SETTINGS.max_inflight:
            self.dropped += 1
            self.window.add((_DROP, intended_epoch))
            if self.dropped == 1:
                logger.warning(
                    "open model: %d requests in flight reached POOLBENCH_MAX_INFLIGHT; dropping "
                    "arrivals, so the load is no longer the offered rate",
                    SETTINGS.max_inflight,
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
        self.window.add((_SENT, now, lag_s * 1000))

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
        done = time.time()
        sent = start_time if start_time is not None else done - response_time / 1000
        entry = self.pending.pop(gevent.getcurrent(), None)
        # A closed loop (or a request sent outside `PoolbenchUser`) has no schedule to lag.
        intended = entry[0] if entry is not None and entry[0] != entry[1] else sent
        latency_ms = response_time + (sent - intended) * 1000
        failed = exception is not None
        self.seconds.add(done, latency_ms, failed)
        self.window.add((_DONE, done, latency_ms, failed, f"{request_type} {name}", sent))

    def drain(self, environment: Environment, **_: Any) -> None:
        """Give in-flight arrivals `--stop-timeout` to finish, then kill them (test_stop)."""
        if len(self.arrivals):
            self.arrivals.join(timeout=environment.stop_timeout or 0)
            self.arrivals.kill(block=True, timeout=DEFAULT_KILL_TIMEOUT_S)

    def result(self) -> dict[str, Any]:
        """This process's requests file (format REQUESTS_FORMAT, the module docstring)."""
        return {
            "format": REQUESTS_FORMAT,
            "pid": os.getpid(),
            "open_rps": SETTINGS.open_rps,
            "max_inflight": SETTINGS.max_inflight if SETTINGS.open_model else None,
            "peak_inflight": self.peak_inflight,
            "dropped_arrivals": self.dropped,
            "window": self.window.as_dict(),
            "seconds": self.seconds.rows(),
        }


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
        self.results: dict[str, dict[str, Any]] = {}  # the master: worker id -> its figures

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
        self.start_epoch = time.time()
        self.open = True
        self._mark("start", self.start_epoch)
        if isinstance(runner, MasterRunner):
            runner.send_message(WINDOW_MESSAGE, {"event": "start", "epoch": self.start_epoch})
        elif not self._is_worker():
            _requests.window.begin(self.start_epoch)

    def on_init(self, environment: Environment, **_: Any) -> None:
        self.environment = environment
        runner = environment.runner
        if isinstance(runner, WorkerRunner):
            _requests.window.hold_s = DEFAULT_HOLD_S
            runner.register_message(WINDOW_MESSAGE, self.on_window_message)
        elif isinstance(runner, MasterRunner):
            runner.register_message(RESULT_MESSAGE, self.on_worker_result)

    def on_window_message(self, environment: Environment, msg: Any, **_: Any) -> None:
        """A worker: the master opened or closed the window at `epoch`."""
        if msg.data["event"] == "start":
            _requests.window.begin(msg.data["epoch"])
            return
        _requests.window.finish(msg.data["epoch"], _requests.pending.values())
        if environment.runner is not None:  # the figures are final: the master writes them
            environment.runner.send_message(RESULT_MESSAGE, _requests.result())

    def on_worker_result(self, environment: Environment, msg: Any, **_: Any) -> None:
        """The master: a worker's figures of the window (remote workers have no out dir)."""
        self.results[str(msg.node_id)] = msg.data

    def on_test_start(self, environment: Environment, **_: Any) -> None:
        self.environment = environment
        gevent.spawn_later(SETTINGS.warmup_s, self.begin)

    def on_test_stopping(self, environment: Environment, **_: Any) -> None:
        if not self.open:
            return
        self.open = False
        self.end_epoch = time.time()
        self._mark("end", self.end_epoch)
        runner = environment.runner
        if isinstance(runner, MasterRunner):
            runner.send_message(WINDOW_MESSAGE, {"event": "end", "epoch": self.end_epoch})
            self._collect(runner)
        elif not self._is_worker():
            _requests.window.finish(self.end_epoch, _requests.pending.values())

    def _collect(self, runner: MasterRunner) -> None:
        """Wait (bounded) for every worker's figures, then write one file per worker."""
        workers = {str(client.id) for client in runner.clients.all}
        deadline = time.monotonic() + DEFAULT_RESULT_TIMEOUT_S
        while not workers <= set(self.results) and time.monotonic() < deadline:
            gevent.sleep(0.1)
        if missing := workers - set(self.results):
            logger.warning("no window figures from workers %s: left out", sorted(missing))
        if self.out_dir is None:
            return
        for worker, result in self.results.items():
            name = "".join(c if c.isalnum() else "_" for c in worker)
            (self.out_dir / f"{LATENCY_FILE_PREFIX}{name}{LATENCY_FILE_SUFFIX}").write_text(
                json.dumps(result) + "\n"
            )

    def on_quit(self, exit_code: int, **_: Any) -> None:
        if self.out_dir is None:
            return
        env = self.environment
        if env is None or env.runner is None or self._is_worker():
            return
        distributed = isinstance(env.runner, MasterRunner)
        if not distributed:
            path = self.out_dir / f"{LATENCY_FILE_PREFIX}{os.getpid()}{LATENCY_FILE_SUFFIX}"
            path.write_text(json.dumps(_requests.result()) + "\n")
        total = env.runner.stats.total
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
            "dropped_arrivals": None if distributed else _requests.window.dropped,
            "cap_reached": None if distributed else _requests.window.dropped > 0,
        }
        (self.out_dir / SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n")


_window = _Window(SETTINGS.out_dir)
events.init.add_listener(_window.on_init)
events.test_start.add_listener(_window.on_test_start)
events.request.add_listener(_requests.on_request)
events.test_stopping.add_listener(_window.on_test_stopping)
events.test_stop.add_listener(_requests.drain)
events.quit.add_listener(_window.on_quit)
