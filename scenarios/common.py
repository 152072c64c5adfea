"""Scenario support: env settings, pacing, and the measured window every scenario shares.

The sweep runner configures scenarios only through `POOLBENCH_*` environment variables, so a
locustfile also runs by hand (`locust -f scenarios/single_query.py --host ...`) with defaults.

Measured window. Locust's own percentiles are cumulative from the start (warm-up included) and
bucketed, and its `_stats.csv` is rewritten only once a second. So every Locust process runs a
window here instead (the files only when `POOLBENCH_OUT_DIR` is set):

- the `request` listener keeps every request's completion time, response time and outcome;
- `POOLBENCH_WARMUP_S` after `test_start`, Locust's stats are reset (so its own CSVs and summary
  cover about the window too) and a `start` line goes to `window.jsonl`;
- on `test_stopping` (the run-time limit or a shape ending: users are still running) an `end` line
  goes to `window.jsonl`;
- on `quit` `summary.json` gets Locust's totals, and each process writes its requests to
  `latency-<pid>.txt`. The runner counts and ranks only the requests that completed between the
  master's `start` and `end`: exact, and immune to the warm-up data a worker's pending stats report
  would carry into the master's totals after a reset.

The runner watches `window.jsonl` to reset the app's telemetry and snapshot Postgres and CPU
counters at the same two moments, so all figures cover the same window.

A remote worker (`--remote-workers`) has no `POOLBENCH_OUT_DIR`: it only resets its stats at the
window start, so its reports carry no warm-up into the master's totals, and the runner falls back
to the master's (bucketed) figures.
"""

from __future__ import annotations

import json
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gevent
from locust import constant, events
from locust.env import Environment
from locust.runners import (
    STATE_CLEANUP,
    STATE_STOPPED,
    STATE_STOPPING,
    MasterRunner,
    WorkerRunner,
)

DEFAULT_SEED_USERS = 1000
DEFAULT_QUERIES = 1
DEFAULT_FANOUT_CALLS = 5
DEFAULT_ITEMS_PER_ORDER = 3


def _env_float(name: str, default: float) -> float:
    return float(os.environ.get(name, default))


def _env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


@dataclass(frozen=True, kw_only=True)
class ScenarioSettings:
    """What the runner passes to a locustfile through `POOLBENCH_*` variables."""

    seed_users: int
    think_time_s: float
    open_rps: float
    queries: int
    fanout_calls: int
    warmup_s: float
    out_dir: Path | None

    @classmethod
    def from_env(cls) -> ScenarioSettings:
        out_dir = os.environ.get("POOLBENCH_OUT_DIR")
        return cls(
            seed_users=_env_int("POOLBENCH_SEED_USERS", DEFAULT_SEED_USERS),
            think_time_s=_env_float("POOLBENCH_THINK_TIME_S", 0.0),
            open_rps=_env_float("POOLBENCH_OPEN_RPS", 0.0),
            queries=_env_int("POOLBENCH_QUERIES", DEFAULT_QUERIES),
            fanout_calls=_env_int("POOLBENCH_FANOUT_CALLS", DEFAULT_FANOUT_CALLS),
            warmup_s=_env_float("POOLBENCH_WARMUP_S", 0.0),
            out_dir=Path(out_dir) if out_dir else None,
        )


SETTINGS = ScenarioSettings.from_env()


def pacing() -> Any:
    """Return the wait_time for every user class: closed loop, or open (Poisson arrivals).

    A closed-loop user sends its next request only after the last one returned, so when the
    server slows down the offered load drops with it and latency looks better than a real
    population of clients would see (coordinated omission). `POOLBENCH_OPEN_RPS` > 0 makes each
    user an open arrival process at that rate instead (see `poisson_pacing`).
    """
    if SETTINGS.open_rps > 0:
        return poisson_pacing(SETTINGS.open_rps)
    return constant(SETTINGS.think_time_s)


def poisson_pacing(rate_per_s: float) -> Callable[[Any], float]:
    """Wait so that request starts form a Poisson process of `rate_per_s` per user.

    Gaps between starts are exponential, not fixed: `constant_throughput` keeps every user on a
    fixed period, the users' phases lock together and arrive in bursts, and a pool that is ample
    for the mean rate then queues at every burst. Many independent clients, as in production,
    give Poisson arrivals, which is also what Erlang C assumes. A user that falls behind starts
    at once and does not burst to catch up.
    """

    def wait_time(user: Any) -> float:
        now = time.monotonic()
        due = getattr(user, "_poolbench_next_start", now) + random.expovariate(rate_per_s)
        user._poolbench_next_start = max(due, now)
        return float(user._poolbench_next_start - now)

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


class _Window:
    """The measured window of this Locust process (see the module docstring)."""

    def __init__(self, out_dir: Path | None) -> None:
        self.out_dir = out_dir
        self.open = False
        self.start_epoch: float | None = None
        self.end_epoch: float | None = None
        self.samples: list[str] = []  # "completion_epoch response_ms failed"
        self.environment: Environment | None = None

    def _is_worker(self) -> bool:
        return isinstance(self.environment and self.environment.runner, WorkerRunner)

    def _mark(self, event: str, epoch: float) -> None:
        if self.out_dir is None:
            return
        if self._is_worker():
            event = f"worker_{event}"  # diagnostics only: the master speaks for the test
        with open(self.out_dir / "window.jsonl", "a", encoding="utf-8") as fh:
            fh.write(json.dumps({"event": event, "epoch": epoch, "pid": os.getpid()}) + "\n")

    def begin(self) -> None:
        runner = self.environment.runner if self.environment else None
        if runner is None or runner.state in (STATE_STOPPING, STATE_STOPPED, STATE_CLEANUP):
            return  # the run ended before its warm-up did: no window
        runner.stats.reset_all()
        self.start_epoch = time.time()
        self.open = True
        self._mark("start", self.start_epoch)

    def on_test_start(self, environment: Environment, **_: Any) -> None:
        self.environment = environment
        gevent.spawn_later(SETTINGS.warmup_s, self.begin)

    def on_request(self, response_time: float, exception: Any = None, **_: Any) -> None:
        # Every request, warm-up included: the runner keeps those that completed inside the
        # master's window, so workers need no clock of their own (--processes shares one host).
        if self.out_dir is not None:
            failed = int(exception is not None)
            self.samples.append(f"{time.time():.4f} {response_time:.3f} {failed}")

    def on_test_stopping(self, environment: Environment, **_: Any) -> None:
        if self.open:
            self.open = False
            self.end_epoch = time.time()
            self._mark("end", self.end_epoch)

    def on_quit(self, exit_code: int, **_: Any) -> None:
        if self.out_dir is None:
            return
        if self.samples:
            text = "\n".join(self.samples)
            (self.out_dir / f"latency-{os.getpid()}.txt").write_text(text + "\n")
        env = self.environment
        if env is None or env.runner is None or self._is_worker():
            return
        total = env.runner.stats.total
        summary = {
            "start_epoch": self.start_epoch,
            "end_epoch": self.end_epoch,
            "requests": total.num_requests,
            "failures": total.num_failures,
            "mean_ms": total.avg_response_time,
            "max_ms": total.max_response_time,
            # Locust's bucketed figures: the fallback when no exact latencies were kept.
            "p50_ms": total.get_response_time_percentile(0.50),
            "p95_ms": total.get_response_time_percentile(0.95),
            "p99_ms": total.get_response_time_percentile(0.99),
            "by_name": {
                f"{e.method} {e.name}": {"requests": e.num_requests, "failures": e.num_failures}
                for e in env.runner.stats.entries.values()
            },
            "cpu_warning": bool(
                getattr(env.runner, "cpu_warning_emitted", False)
                or getattr(env.runner, "worker_cpu_warning_emitted", False)
            ),
            "distributed": isinstance(env.runner, MasterRunner),
        }
        (self.out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")


_window = _Window(SETTINGS.out_dir)
events.test_start.add_listener(_window.on_test_start)
events.request.add_listener(_window.on_request)
events.test_stopping.add_listener(_window.on_test_stopping)
events.quit.add_listener(_window.on_quit)
