"""The measured window of a Locust process: its edges, master-worker messages and files.

Locust's own percentiles are cumulative from the start (warm-up included) and bucketed, and its
`_stats.csv` is rewritten only once a second. So every Locust process runs a window here
instead, in memory bounded whatever the run's length (the files only when `POOLBENCH_OUT_DIR` is
set):

- `POOLBENCH_WARMUP_S` after `test_start`, Locust's stats are reset (so its own CSVs and summary
  cover about the window too) and a `start` line goes to `window.jsonl`;
- on `test_stopping` (the run-time limit or a shape ending: users are still running) an `end` line
  goes to `window.jsonl`;
- the requests that completed between the `start` and `end` epochs go into HDR histograms
  (`poolbench.hdr`: microseconds, 1 us to an hour, 3 significant digits) of the latency from the
  intended start, overall and per endpoint, with exact counts, failures, sum and max; sends in
  the window are counted and their schedule lag goes into a histogram too; arrivals scheduled in
  the window and dropped are counted; requests started before `end` and not completed by then
  are counted as in flight at the end (`poolbench.load.recorder`);
- every request (warm-up included) also goes into a per-second series: requests, failures and a
  coarse histogram (2 significant digits) per completion second, a few hundred bytes a second;
- on `quit` `summary.json` gets Locust's totals, and a single process writes its figures to
  `latency-<pid>.json` (`poolbench.load.latency_file`).

The window's edges are the master's. A single process marks them itself and places each request
at once. With workers (`--processes` or remote), the master sends each edge's epoch to the
workers (message `poolbench_window`); a worker holds its events of the last `DEFAULT_HOLD_S`
seconds unplaced, so the requests that completed between an edge and its message are still
placed exactly, and at the `end` message it sends its figures to the master (message
`poolbench_window_figures`, the file's JSON), whose `test_stopping` waits for every worker's
(bounded) and writes each to `latency-<worker id>.json`. Remote workers, which have no out dir,
so give the same exact-window figures as local ones. A worker whose message came after its hold
marks its figures `exact: false`. A worker's per-second series stops at the window's end.

Epochs are `time.time()` seconds: a worker on another host needs a synchronised clock.

The runner watches `window.jsonl` to reset the app's telemetry and snapshot Postgres and CPU
counters at the same two moments, so all figures cover the same window.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import gevent
from locust.env import Environment
from locust.runners import (
    STATE_CLEANUP,
    STATE_STOPPED,
    STATE_STOPPING,
    MasterRunner,
    Runner,
    WorkerRunner,
)

from poolbench.load.latency_file import latency_file_name, write_file
from poolbench.load.tracking import ProcessRequests
from poolbench.results import SUMMARY_FILE, WINDOW_FILE
from poolbench.scenario_env import ScenarioEnv

# A worker holds its latest events this long for the master's window messages (see
# `WindowRecorder`); the master waits this long at the window's end for the workers' figures.
DEFAULT_HOLD_S = 10.0
DEFAULT_RESULT_TIMEOUT_S = 30.0
WINDOW_MESSAGE = "poolbench_window"  # master -> workers: {"event": start|end, "epoch"}
RESULT_MESSAGE = "poolbench_window_figures"  # worker -> master: its requests file, as JSON

logger = logging.getLogger(__name__)


class Window:
    """The measured window of this Locust process (see the module docstring)."""

    def __init__(self, settings: ScenarioEnv, requests: ProcessRequests) -> None:
        self.settings = settings
        self.requests = requests
        self.out_dir: Path | None = settings.out_dir
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
            self.requests.window.begin(self.start_epoch)

    def on_init(self, environment: Environment, **_: Any) -> None:
        self.environment = environment
        runner = environment.runner
        if isinstance(runner, WorkerRunner):
            self.requests.window.hold_s = DEFAULT_HOLD_S
            runner.register_message(WINDOW_MESSAGE, self.on_window_message)
        elif isinstance(runner, MasterRunner):
            runner.register_message(RESULT_MESSAGE, self.on_worker_result)

    def on_window_message(self, environment: Environment, msg: Any, **_: Any) -> None:
        """A worker: the master opened or closed the window at `epoch`."""
        if msg.data["event"] == "start":
            self.requests.window.begin(msg.data["epoch"])
            return
        self.requests.window.finish(msg.data["epoch"], self.requests.pending.values())
        if environment.runner is not None:  # the figures are final: the master writes them
            environment.runner.send_message(RESULT_MESSAGE, self.requests.result().as_json())

    def on_worker_result(self, environment: Environment, msg: Any, **_: Any) -> None:
        """The master: a worker's figures of the window (remote workers have no out dir)."""
        self.results[str(msg.node_id)] = msg.data

    def on_test_start(self, environment: Environment, **_: Any) -> None:
        self.environment = environment
        gevent.spawn_later(self.settings.warmup_s, self.begin)

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
            self.requests.window.finish(self.end_epoch, self.requests.pending.values())

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
            write_file(self.out_dir / latency_file_name(worker), result)

    def on_quit(self, exit_code: int, **_: Any) -> None:
        if self.out_dir is None:
            return
        env = self.environment
        if env is None or env.runner is None or self._is_worker():
            return
        runner = env.runner
        distributed = isinstance(runner, MasterRunner)
        if not distributed:
            self.requests.result().write(self.out_dir / latency_file_name(os.getpid()))
        (self.out_dir / SUMMARY_FILE).write_text(
            json.dumps(self._summary(runner, distributed), indent=2) + "\n"
        )

    def _summary(self, runner: Runner, distributed: bool) -> dict[str, Any]:
        """`summary.json`: Locust's totals, the fallback figures when no latency file was kept."""
        total = runner.stats.total
        window = self.requests.window
        return {
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
                for e in runner.stats.entries.values()
            },
            "cpu_warning": bool(
                getattr(runner, "cpu_warning_emitted", False)
                or getattr(runner, "worker_cpu_warning_emitted", False)
            ),
            "distributed": distributed,
            "open_rps": self.settings.open_rps,
            "max_inflight": self.settings.max_inflight if self.settings.open_model else None,
            # This process's own arrivals; a master's workers report theirs in their files.
            "dropped_arrivals": None if distributed else window.dropped,
            "cap_reached": None if distributed else window.dropped > 0,
        }
