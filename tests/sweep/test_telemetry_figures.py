"""The app's /telemetry snapshot becomes runs.csv columns (pure, no processes)."""

from __future__ import annotations

from poolbench.results import TELEMETRY_COLUMNS
from poolbench.sweep.figures import telemetry_figures


def test_semaphore_figures_come_from_the_http_section() -> None:
    snapshot = {
        "http": {
            "limit": 5,
            "peak_in_flight": 5,
            "semaphore_wait_ms": {"count": 40, "mean": 12.0, "p95": 38.5},
            "waiting_holding_connection": 7,
        }
    }
    figures = telemetry_figures(snapshot)
    assert figures["http_peak_in_flight"] == 5
    assert figures["http_semaphore_wait_p95_ms"] == 38.5
    assert figures["http_waits_holding_connection"] == 7
    assert set(figures) == set(TELEMETRY_COLUMNS)


def test_a_snapshot_without_the_semaphore_figures_leaves_them_blank() -> None:
    # An older app, or a target with no /telemetry at all.
    for snapshot in ({"http": {"limit": 5, "peak_in_flight": 2}}, None):
        figures = telemetry_figures(snapshot)
        assert figures["http_semaphore_wait_p95_ms"] is None
        assert figures["http_waits_holding_connection"] is None
    assert telemetry_figures(None)["http_peak_in_flight"] is None
