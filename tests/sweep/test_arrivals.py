"""The window figures of Locust processes (format 4): placed against the master's window in
bounded memory, merged across processes, and read back as the run's figures."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from poolbench import hdr
from poolbench.load import LATENCY_FILE, RequestLog, SecondSeries, WindowRecorder
from poolbench.results import TIMESERIES_FILE
from poolbench.sweep.arrivals import figures_in_window, merge_requests, read_requests, write_merged
from poolbench.sweep.figures import client_figures, endpoint_figures, write_timeseries

USERS, ORDERS = "GET /users/[id]", "POST /orders"


def process_file(
    recorder: WindowRecorder, seconds: SecondSeries | None = None, pid: int = 1
) -> RequestLog:
    """One closed-loop process's file as `ProcessRequests.result` makes it."""
    return RequestLog(
        pid=pid, window=recorder.as_json(), seconds=(seconds or SecondSeries()).rows()
    )


def done(epoch: float, latency_ms: float, endpoint: str = USERS, failed: bool = False) -> tuple:
    return ("done", epoch, latency_ms, failed, endpoint, epoch - latency_ms / 1000)


def test_a_worker_places_requests_against_the_masters_window_exactly() -> None:
    now = time.time()
    recorder = WindowRecorder()
    recorder.hold_s = 10.0  # a worker: the master's window messages arrive late
    for offset in (-4.0, -3.0, -2.0, -1.0):
        recorder.add(done(now + offset, 10.0))
        recorder.add(("sent", now + offset - 0.01, 0.0))
    # The start message arrives after requests that completed past the master's start.
    recorder.begin(now - 2.5)
    recorder.add(done(now - 0.6, 20.0, ORDERS, failed=True))
    recorder.add(done(now - 0.2, 500.0))  # completed after the end, started before it
    # In flight now: one sent before the end, one after it.
    pending = [[now - 0.9, now - 0.9, USERS], [now - 0.3, now - 0.3, USERS]]
    recorder.finish(now - 0.5, pending)
    recorder.add(done(now + 0.1, 40.0))  # after the end: not counted
    window = recorder.as_json()
    assert window["exact"] is True
    # Completed in [start, end): the -2, -1 and -0.6 ones.
    assert (window["requests"], window["failures"], window["max_ms"]) == (3, 1, 20.0)
    assert window["sent"] == 2  # the sends at -2.01 and -1.01
    assert window["inflight_at_end"] == 2  # the one completed at -0.2 and the one still pending
    assert set(window["endpoints"]) == {USERS, ORDERS}


def test_a_window_message_later_than_the_hold_makes_the_figures_inexact() -> None:
    now = time.time()
    recorder = WindowRecorder()
    recorder.hold_s = 1.0
    recorder.add(done(now - 5.0, 10.0))  # older than the hold: dropped before start was known
    recorder.begin(now - 6.0)
    assert recorder.as_json()["exact"] is False


def test_processes_merge_into_the_quantiles_of_all_their_requests(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    every: list[float] = []
    for pid, scale in ((1, 20.0), (2, 60.0)):
        recorder, seconds = WindowRecorder(), SecondSeries()
        recorder.begin(100.0)
        values = rng.exponential(scale, 3000)
        for i, value in enumerate(values):
            epoch = 100.0 + i / 3000
            recorder.add(done(epoch, float(value), ORDERS if i % 3 == 0 else USERS, i % 10 == 0))
            seconds.add(epoch, float(value), i % 10 == 0)
        recorder.finish(101.0, [])
        every += values.tolist()
        process_file(recorder, seconds, pid).write(tmp_path / f"latency-{pid}.json")
    log = read_requests(tmp_path)
    assert log.processes == 2
    window = figures_in_window(log, 100.0, 101.0)
    assert window["window_exact"] is True
    run = client_figures({}, window, 1.0)
    assert (run["requests"], run["failures"]) == (6000, 600)
    assert run["mean_ms"] == pytest.approx(np.mean(every))
    assert run["max_ms"] == pytest.approx(max(every))
    for q in (50, 95, 99):
        exact = float(np.percentile(every, q, method="inverted_cdf"))
        precision = 10.0**-hdr.SIGNIFICANT_DIGITS
        assert run[f"p{q}_ms"] == pytest.approx(exact, rel=precision, abs=1e-3)
    by_endpoint = endpoint_figures({}, window)
    assert sum(f["requests"] for f in by_endpoint.values()) == 6000
    assert sum(f["failures"] for f in by_endpoint.values()) == 600
    # The merge is kept as latency.json and reads back the same; the per-process files go.
    write_merged(tmp_path, log)
    assert [p.name for p in tmp_path.iterdir()] == [LATENCY_FILE]
    assert figures_in_window(read_requests(tmp_path), 100.0, 101.0) == window
    # Another window than the one the processes used: not exact.
    assert figures_in_window(log, 100.5, 101.0)["window_exact"] is False
    write_timeseries(tmp_path, log.seconds)
    with (tmp_path / TIMESERIES_FILE).open() as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["requests"]) for r in rows] == [6000]  # all in second 100


def test_memory_does_not_grow_with_the_request_count(monkeypatch: pytest.MonkeyPatch) -> None:
    made = []  # every histogram made (184 KiB each at 3 digits): bounded, not per request
    new_histogram = hdr.new_histogram
    monkeypatch.setattr(hdr, "new_histogram", lambda *a: made.append(a) or new_histogram(*a))
    recorder, seconds = WindowRecorder(), SecondSeries()
    recorder.begin(0.0)
    for i in range(20_000):
        recorder.add(done(1.0 + i / 1000, 5.0 + i % 50, (USERS, ORDERS)[i % 2]))
        seconds.add(1.0 + i / 1000, 5.0, False)
    assert not recorder.held  # a single process places every request at once
    assert len(seconds.rows()) == 20  # one entry per second, not per request
    assert recorder.as_json()["requests"] == 20_000
    # The window and lag histograms, one per endpoint, one per second of the series.
    assert len(made) == 2 + 2 + 20, len(made)


def test_a_file_of_another_format_is_refused() -> None:
    with pytest.raises(ValueError, match="format 3"):
        RequestLog.loads(json.dumps({"format": 3}))


def test_without_a_request_log_the_endpoints_come_from_locusts_buckets() -> None:
    summary = {
        "by_name": {
            ORDERS: {"requests": 4, "failures": 1, "p50_ms": 20, "p95_ms": 90, "p99_ms": 99},
            USERS: {"requests": 0, "failures": 0, "p50_ms": 0, "p95_ms": 0, "p99_ms": 0},
        }
    }
    figures = endpoint_figures(summary, None)
    assert list(figures) == [ORDERS]  # nothing completed: no figures, as from the log
    assert figures[ORDERS]["error_rate"] == 0.25 and figures[ORDERS]["p95_ms"] == 90


def test_the_file_layout_is_written_once_for_both_directions() -> None:
    recorder = WindowRecorder()
    recorder.begin(0.0)
    recorder.add(done(0.5, 12.5))
    recorder.finish(1.0, [])
    one = process_file(recorder, pid=7)
    assert list(one.as_json()) == [
        "format", "pid", "open_rps", "max_inflight", "peak_inflight", "dropped_arrivals",
        "window", "seconds",
    ]  # fmt: skip
    assert RequestLog.loads(json.dumps(one.as_json())) == one
    merged = merge_requests([one, one])
    assert list(merged.as_json())[:2] == ["format", "processes"] and merged.processes == 2
    assert RequestLog.loads(json.dumps(merged.as_json())) == merged
    assert merged.window["requests"] == 2 and merged.window["max_ms"] == 12.5


def test_the_runner_reads_the_files_without_importing_locust() -> None:
    code = (
        "import sys, poolbench.sweep.arrivals, poolbench.load.latency_file\n"
        "print(sorted(m for m in ('gevent', 'locust') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
