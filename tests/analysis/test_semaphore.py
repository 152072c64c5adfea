"""The semaphore's smallest adequate limit and its measured warnings."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest

from poolbench import Slo
from poolbench.analysis.semaphore import semaphore_warnings, smallest_adequate_limit
from poolbench.analysis.synthetic import make_sweep

SLO = Slo(p95_ms=250, max_error_rate=0.01)


def _table(rows: list[tuple[int, int, float, float, str]]) -> pd.DataFrame:
    """(pool_size, limit, rps, p95_ms, bottleneck) rows as an aggregated table."""
    frame = pd.DataFrame(
        rows, columns=["pool_size", "http_concurrency_limit", "rps", "p95_ms", "bottleneck"]
    )
    frame["max_overflow"] = 0
    frame["pg_max_size"] = math.nan  # blank axes match each other
    frame["scenario"] = "fanout"
    frame["error_rate"] = 0.0
    frame["requests"] = 1000
    frame["connections"] = frame["pool_size"]
    return frame


# Limit 2 misses the SLO; 5, 10 and 20 meet it.
LIMITS = [
    (5, 2, 40.0, 400.0, "none"),
    (5, 5, 88.0, 120.0, "none"),
    (5, 10, 90.0, 100.0, "none"),
    (5, 20, 89.0, 100.0, "none"),
]


@pytest.mark.parametrize(("tolerance", "limit"), [(0.05, 5), (0.03, 5), (0.02, 10), (0.0, 10)])
def test_smallest_limit_within_tolerance_of_the_best(tolerance: float, limit: int) -> None:
    row = smallest_adequate_limit(_table(LIMITS), SLO, tolerance)
    assert row is not None and row["http_concurrency_limit"] == limit


def test_a_limit_that_misses_the_slo_is_never_chosen() -> None:
    # Limit 2 is within any tolerance of nothing: its rps would do at 60 %, its p95 would not.
    row = smallest_adequate_limit(_table(LIMITS), SLO, 0.6)
    assert row is not None and row["http_concurrency_limit"] == 5


def test_untrusted_configs_are_ignored() -> None:
    rows = [*LIMITS[:1], (5, 5, 88.0, 120.0, "app_cpu"), *LIMITS[2:]]
    row = smallest_adequate_limit(_table(rows), SLO, 0.05)
    assert row is not None and row["http_concurrency_limit"] == 10
    # An untrusted config is not the best either, however fast.
    rows = [*LIMITS, (5, 50, 200.0, 50.0, "load_generator")]
    row = smallest_adequate_limit(_table(rows), SLO, 0.05)
    assert row is not None and row["http_concurrency_limit"] == 5


def test_only_the_limit_may_vary() -> None:
    # Pool 10 holds the fastest config: its limits compete, pool 5's do not.
    rows = [*LIMITS, (10, 5, 70.0, 150.0, "none"), (10, 20, 120.0, 90.0, "none")]
    row = smallest_adequate_limit(_table(rows), SLO, 0.05)
    assert row is not None
    assert (row["pool_size"], row["http_concurrency_limit"]) == (10, 20)
    row = smallest_adequate_limit(_table(rows), SLO, 0.5)
    assert row is not None
    assert (row["pool_size"], row["http_concurrency_limit"]) == (10, 5)


def test_none_when_the_semaphore_does_not_vary_or_nothing_meets_the_slo() -> None:
    pools = _table([(2, 20, 50.0, 100.0, "pool"), (4, 20, 90.0, 100.0, "none")])
    assert smallest_adequate_limit(pools, SLO, 0.05) is None
    # The limit varies only in the slower pool config; the fastest has one limit.
    mixed = _table([(2, 10, 50.0, 100.0, "pool"), (2, 20, 50.0, 100.0, "pool"), *LIMITS[2:3]])
    mixed.loc[2, "pool_size"] = 4
    assert smallest_adequate_limit(mixed, SLO, 0.05) is None
    failing = _table([(5, limit, 90.0, 900.0, "none") for limit in (2, 5, 10)])
    assert smallest_adequate_limit(failing, SLO, 0.05) is None
    assert smallest_adequate_limit(_table([]), SLO, 0.05) is None


def test_warns_when_calls_in_flight_reached_the_limit() -> None:
    row = {
        "http_concurrency_limit": 5,
        "http_peak_in_flight": 5,
        "http_semaphore_wait_p95_ms": 42.0,
        "http_waits_holding_connection": 0,
    }
    (warning,) = semaphore_warnings(row)
    assert "reached http_concurrency_limit 5, semaphore wait p95 42.0 ms" in warning
    assert "raise it or accept the queue" in warning
    assert semaphore_warnings({**row, "http_peak_in_flight": 4}) == []
    # Reaching the limit without queueing for it (wait p95 below a millisecond) is no bottleneck.
    assert semaphore_warnings({**row, "http_semaphore_wait_p95_ms": 0.01}) == []


def test_warns_when_waits_held_a_connection() -> None:
    row = {
        "http_concurrency_limit": 20,
        "http_peak_in_flight": 12.0,
        "http_semaphore_wait_p95_ms": 0.0,
        "http_waits_holding_connection": 37.0,
    }
    (warning,) = semaphore_warnings(row)
    assert warning.startswith(
        "37 semaphore waits held a DB connection: release the session before fanning out"
    )


@pytest.mark.parametrize("blank", [None, math.nan])
def test_no_warning_from_blank_figures(blank: float | None) -> None:
    columns = (
        "http_peak_in_flight",
        "http_semaphore_wait_p95_ms",
        "http_waits_holding_connection",
    )
    assert semaphore_warnings({"http_concurrency_limit": 5, **dict.fromkeys(columns, blank)}) == []
    assert semaphore_warnings({}) == []


def test_analysis_warns_from_measurement_even_without_the_database(tmp_path: Path) -> None:
    from poolbench import analyse, load_sweep

    sweep_dir = make_sweep(tmp_path, scenario="mixed", history=False)
    runs_csv = sweep_dir / "runs.csv"
    frame = pd.read_csv(runs_csv)
    # The old check matched "mixed" by name; with blank figures nothing is said now.
    assert not any("semaphore" in w for w in analyse(load_sweep(sweep_dir)).warnings)
    frame["peak_checked_out"] = 0  # a fan-out handler: never checks out a DB connection
    frame["hold_time_mean_ms"] = 0.0
    frame["http_peak_in_flight"] = frame["http_concurrency_limit"]
    frame["http_semaphore_wait_p95_ms"] = 30.0
    frame["http_waits_holding_connection"] = 2
    frame.to_csv(runs_csv, index=False)
    warnings = analyse(load_sweep(sweep_dir)).warnings
    assert any("the semaphore was the bottleneck" in w for w in warnings)
    # Summed over the optimum config's repetitions.
    assert any(w.startswith("6 semaphore waits held a DB connection") for w in warnings)
