"""The request-log reader: every format, and the window's figures per endpoint (no processes)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bench.results import REQUESTS_FORMAT, REQUESTS_HEADER
from bench.sweep.arrivals import (
    ENDPOINT,
    endpoints_in_window,
    figures_in_window,
    parse_requests,
    read_requests,
)
from bench.sweep.figures import client_figures, endpoint_figures

# Names as Locust makes them: request_type, a space, the name (spaces and brackets allowed).
USERS = "GET /users/[id]"
ORDERS = "POST /orders"
ODD = "GET /search?q=a b [x]"


def write_log(path: Path, header: dict[str, object] | None, lines: list[str]) -> None:
    head = [REQUESTS_HEADER + json.dumps(header)] if header is not None else []
    path.write_text("\n".join([*head, *lines]) + "\n")


def test_format_3_names_every_request_by_its_endpoint(tmp_path: Path) -> None:
    header = {"format": 3, "open_rps": 2.0, "max_inflight": 50, "endpoints": [USERS, ORDERS, ODD]}
    write_log(
        tmp_path / "latency-1.txt",
        header,
        [
            "100.0 100.0 100.1 100.0 0 0",  # users: 100 ms
            "100.0 100.5 100.8 300.0 1 1",  # orders: sent 500 ms late, 800 ms, failed
            "100.2 100.2 100.4 200.0 0 2",  # the odd name: 200 ms
            "100.3 100.3 100.5 200.0 0 -",  # unknown endpoint
            "100.4 nan nan nan 3 1",  # a dropped orders arrival: in no figure
            "100.5 100.5 nan nan 2 0",  # outstanding: in no figure
            "100.6 100.6 100.7 50.0 0 7",  # an index past the table: unknown
        ],
    )
    log = read_requests(tmp_path)
    assert log.endpoints == (USERS, ORDERS, ODD)
    assert log.rows[:, ENDPOINT].tolist() == [0, 1, 2, -1, 1, 0, -1]
    figures = endpoints_in_window(log, 100.0, 101.0)
    assert list(figures) == sorted([USERS, ORDERS, ODD, "-"])
    orders = figures[ORDERS]
    assert orders["requests"] == 1 and orders["failures"] == 1 and orders["error_rate"] == 1.0
    # Latency from the intended start: 300 ms answer + 500 ms late.
    assert orders["p50_ms"] == orders["p95_ms"] == orders["p99_ms"] == pytest.approx(800.0)
    assert figures[USERS]["mean_ms"] == pytest.approx(100.0)
    assert figures[ODD]["requests"] == 1 and figures["-"]["requests"] == 2
    # The window's own figures carry them, and the counts add up to the window's.
    window = figures_in_window(log, 100.0, 101.0)
    assert window["endpoints"] == figures
    assert sum(f["requests"] for f in figures.values()) == window["completed"] == 5
    assert window["dropped_arrivals"] == 1


def test_processes_with_their_own_tables_are_merged_by_name(tmp_path: Path) -> None:
    write_log(
        tmp_path / "latency-1.txt",
        {"format": 3, "endpoints": [USERS, ORDERS]},
        ["100.0 100.0 100.1 10.0 0 0", "100.0 100.0 100.1 40.0 0 1"],
    )
    write_log(
        tmp_path / "latency-2.txt",
        {"format": 3, "endpoints": [ORDERS]},  # index 0 here is orders
        ["100.0 100.0 100.2 20.0 0 0", "100.0 100.0 100.2 30.0 0 0"],
    )
    log = read_requests(tmp_path)
    assert log.processes == 2 and log.endpoints == (USERS, ORDERS)
    figures = endpoints_in_window(log, 100.0, 101.0)
    assert figures[USERS]["requests"] == 1
    assert figures[ORDERS]["requests"] == 3
    assert figures[ORDERS]["p50_ms"] == pytest.approx(30.0)
    assert figures[ORDERS]["p95_ms"] == pytest.approx(np.percentile([40, 20, 30], 95))


def test_formats_1_and_2_still_read_under_the_unknown_endpoint(tmp_path: Path) -> None:
    write_log(
        tmp_path / "latency-1.txt",
        {"format": 2, "open_rps": 0},
        ["100.0 100.0 100.1 100.0 0", "100.0 100.0 100.2 200.0 1", "100.3 nan nan nan 3"],
    )
    write_log(tmp_path / "latency-2.txt", None, ["100.5 20.0 1"])  # format 1: no header
    log = read_requests(tmp_path)
    assert log.processes == 2 and log.endpoints == () and len(log.rows) == 4
    assert (log.rows[:, ENDPOINT] == -1).all()
    window = figures_in_window(log, 100.0, 101.0)
    assert window["completed"] == 3 and window["failures"] == 2
    assert list(window["endpoints"]) == ["-"]
    assert window["endpoints"]["-"]["requests"] == 3
    assert window["endpoints"]["-"]["failures"] == 2


def test_a_torn_or_bad_line_is_skipped_and_a_newer_format_refused() -> None:
    header, rows = parse_requests(
        [
            REQUESTS_HEADER + json.dumps({"format": 3, "endpoints": [ORDERS]}),
            "100.0 100.0 100.1 10.0 0 0",
            "100.0 100.0 100.1 10.0 0 x",  # not an index
            "100.0 100.0 100.1 10.0 9 0",  # not an outcome
            "100.0 100.0 100.1",  # torn
        ]
    )
    assert header["format"] == 3 and rows.tolist() == [[100.0, 100.0, 100.1, 10.0, 0.0, 0.0]]
    with pytest.raises(ValueError, match=f"format {REQUESTS_FORMAT + 1}"):
        parse_requests([REQUESTS_HEADER + json.dumps({"format": REQUESTS_FORMAT + 1})])


def test_endpoint_figures_match_the_run_figures(tmp_path: Path) -> None:
    write_log(
        tmp_path / "latency-1.txt",
        {"format": 3, "endpoints": [USERS, ORDERS]},
        [f"100.{i} 100.{i} 100.{i + 1} {10 * (i + 1)}.0 {i % 2} {i % 2}" for i in range(8)],
    )
    window = figures_in_window(read_requests(tmp_path), 100.0, 101.0)
    run = client_figures({}, window, 1.0)
    by_endpoint = endpoint_figures({}, window)
    assert sum(f["requests"] for f in by_endpoint.values()) == run["requests"] == 8
    assert sum(f["failures"] for f in by_endpoint.values()) == run["failures"] == 4


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
