"""One run's per-second history: Locust's, or the runner's exact bins, and its measured window."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from poolbench.results import TIMESERIES_FILE, WINDOW_FILE, read_markers


@dataclass(frozen=True, kw_only=True)
class RunHistory:
    """A run's per-second figures (`t_s`, `User Count`, `Requests/s`, `50%`...) and its window.

    `exact`: the rate and percentiles are the runner's bins of every request (timeseries.csv),
    not Locust's rolling ones. `window` is the measured window in `t_s` seconds, or None when the
    run recorded none (plain Locust output, synthetic data).
    """

    frame: pd.DataFrame
    window: tuple[float, float] | None
    exact: bool


def run_history(history_path: Path) -> RunHistory | None:
    """Read a run's history next to its timeseries.csv and window.jsonl; None if it has none."""
    frame = exact_history(history_path)
    if frame.empty:
        return None
    return RunHistory(
        frame=frame, window=window_span(history_path, frame), exact="exact" in frame.columns
    )


def read_history(path: Path) -> pd.DataFrame:
    """Read a Locust stats history CSV: the Aggregated rows, seconds since the first sample."""
    try:
        frame = pd.read_csv(path)
    except (OSError, ValueError, pd.errors.ParserError):
        return pd.DataFrame()
    if "Name" not in frame.columns or "Timestamp" not in frame.columns:
        return pd.DataFrame()
    rows = frame[frame["Name"] == "Aggregated"].copy()
    if rows.empty:
        return rows
    for column in ("Timestamp", "User Count", "Requests/s", "Failures/s", "50%", "95%", "99%"):
        if column in rows.columns:
            rows[column] = pd.to_numeric(rows[column], errors="coerce")
    rows["t_s"] = rows["Timestamp"] - rows["Timestamp"].min()
    return rows


def exact_history(history_path: Path) -> pd.DataFrame:
    """Locust's history, with rate and percentiles replaced by the run's exact timeseries.csv.

    Locust's own columns are rolling, bucketed figures that restart at the stats reset; the
    runner bins the raw samples per second instead. Users still come from Locust's history.
    """
    history = read_history(history_path)
    path = history_path.parent / TIMESERIES_FILE
    if history.empty or not path.is_file():
        return history
    try:
        exact = pd.read_csv(path)
        stamp = exact["epoch_s"] + 0.5  # the middle of each one-second bin
        t_s = stamp - float(history["Timestamp"].min())
        users = np.interp(t_s, history["t_s"], history["User Count"])
    except (OSError, ValueError, KeyError, pd.errors.ParserError):
        return history
    return pd.DataFrame(
        {
            "Timestamp": stamp,
            "t_s": t_s,
            "User Count": users,
            "Requests/s": exact["requests"],
            "Failures/s": exact["failures"],
            "50%": exact["p50_ms"],
            "95%": exact["p95_ms"],
            "99%": exact["p99_ms"],
            "exact": True,
        }
    )


def window_span(history_path: Path, history: pd.DataFrame) -> tuple[float, float] | None:
    """The measured window in the history's seconds (`t_s`), from the run's window.jsonl.

    poolbench.load appends `{"event": "start"|"end", "epoch": ...}` lines there (the master's
    markers; workers write `worker_*`), and Locust stamps each history row with the whole epoch
    second it was written, so both share a clock. None when there is no such file (synthetic
    data, plain Locust output) or its markers do not fall inside this history.
    """
    markers = read_markers(history_path.parent / WINDOW_FILE)
    if not markers:
        return None
    t0 = float((history["Timestamp"] - history["t_s"]).min())  # the history's first stamp
    last = float(history["t_s"].max())
    start = markers.get("start", math.nan) - t0
    end = markers.get("end", t0 + last) - t0  # no `end`: the run was cut short
    if not (math.isfinite(start) and math.isfinite(end) and start < end):
        return None
    if end <= 0 or start > last + 1:
        return None
    return start, end


def latency_gaps(values: pd.Series) -> pd.Series:
    """A history percentile column with Locust's "no requests" zeros blanked out.

    Locust's history percentiles cover its last ~10 s; when that holds no requests (just after
    the stats reset that opens the window) it writes 0 or N/A: a gap, not a 0 ms response.
    """
    return values.where(values > 0)
