"""Read the requests every Locust process recorded: latency from the intended start, lateness,
dropped arrivals, requests in flight at the window's end, and the same per endpoint.

Each Locust process writes `latency-<pid>.txt` at quit (the writer and the format, version
REQUESTS_FORMAT, are in `scenarios/common.py`'s module docstring): a `#poolbench-requests {json}`
header whose `endpoints` lists the endpoint names, then `intended_epoch sent_epoch done_epoch
response_ms outcome endpoint` per request or dropped arrival, warm-up included, where `endpoint`
is an index into that list or `-`. Pure functions over those files, standard library and numpy
only, so the sweep runner can call them without importing the scenarios or Locust. The format's
constants are in `bench.results`, which the writer imports too.

Older files still read, their requests under the endpoint `-` (unknown): format 2 (five fields,
no `endpoint`) and format 1 (`done_epoch response_ms failed`, no header), the latter as
closed-loop requests sent at `done - response`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.results import (
    LATENCY_FILE_PREFIX,
    OUTCOME_DROPPED,
    OUTCOME_FAILED,
    OUTCOME_OK,
    OUTCOME_OUTSTANDING,
    REQUESTS_ENDPOINTS_KEY,
    REQUESTS_FORMAT,
    REQUESTS_HEADER,
    UNKNOWN_ENDPOINT,
)

REQUESTS_FILE_GLOB = f"{LATENCY_FILE_PREFIX}*.txt"
_OUTCOMES = {OUTCOME_OK, OUTCOME_FAILED, OUTCOME_OUTSTANDING, OUTCOME_DROPPED}
# Columns of RequestLog.rows: the file's fields; ENDPOINT indexes RequestLog.endpoints (-1: `-`).
INTENDED, SENT, DONE, RESPONSE_MS, OUTCOME, ENDPOINT = range(6)
_COLUMNS = 6


@dataclass(frozen=True, kw_only=True)
class RequestLog:
    """Every recorded request and dropped arrival of a run, all Locust processes together.

    `rows` has the six file columns (INTENDED, SENT, DONE, RESPONSE_MS, OUTCOME, ENDPOINT);
    missing values are NaN. ENDPOINT is an index into `endpoints` (every process's names, each
    once), -1 when unknown (`-`). `open_rps` is the per-user arrival rate (0 for a closed loop)
    and `max_inflight` the per-process cap on concurrent open-model requests (None when closed).
    """

    rows: np.ndarray
    open_rps: float
    max_inflight: int | None
    processes: int
    endpoints: tuple[str, ...] = ()

    @property
    def open_model(self) -> bool:
        return self.open_rps > 0


def parse_requests(lines: Iterable[str]) -> tuple[dict[str, Any], np.ndarray]:
    """Return (header, rows) of one process's file; a torn or unreadable line is skipped.

    ENDPOINT in `rows` indexes `endpoint_names(header)`; -1 when unknown. Raises ValueError for
    a file written in a newer format than REQUESTS_FORMAT.
    """
    header: dict[str, Any] = {}
    names: list[str] = []
    rows: list[tuple[float, ...]] = []
    for line in lines:
        if line.startswith(REQUESTS_HEADER):
            try:
                header = dict(json.loads(line[len(REQUESTS_HEADER) :]))
            except (ValueError, TypeError):
                pass
            if int(header.get("format", REQUESTS_FORMAT)) > REQUESTS_FORMAT:
                raise ValueError(f"requests file format {header['format']} is newer than this")
            names = endpoint_names(header)
            continue
        fields = line.split()
        endpoint = -1  # format 2's five fields name no endpoint
        if len(fields) == 6:
            tag = fields.pop()
            if tag != UNKNOWN_ENDPOINT:
                try:
                    endpoint = int(tag)
                except ValueError:
                    continue
                if not 0 <= endpoint < len(names):
                    endpoint = -1
        try:
            values = [float(field) for field in fields]
        except ValueError:
            continue
        if len(values) == 5 and values[OUTCOME] in _OUTCOMES:
            rows.append((*values, endpoint))
        elif len(values) == 3 and values[2] in (0, 1) and not header:
            done, response_ms, failed = values  # format 1: a closed-loop request
            sent = done - response_ms / 1000
            rows.append((sent, sent, done, response_ms, failed, -1))
    return header, np.asarray(rows, dtype=float).reshape(-1, _COLUMNS)


def endpoint_names(header: dict[str, Any]) -> list[str]:
    """The endpoint table of a file's header (empty before format 3 or when unreadable)."""
    names = header.get(REQUESTS_ENDPOINTS_KEY)
    if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
        return []
    return names


def read_requests(run_dir: Path) -> RequestLog:
    """Read every Locust process's requests file in `run_dir`."""
    chunks: list[np.ndarray] = []
    open_rps, caps, processes = 0.0, [], 0
    endpoints: dict[str, int] = {}  # every process's names, each once
    for path in sorted(run_dir.glob(REQUESTS_FILE_GLOB)):
        header, rows = parse_requests(path.read_text(errors="replace").splitlines())
        processes += 1
        # This file's indices -> the run's; the last entry keeps -1 (unknown) as it is.
        to_run = [endpoints.setdefault(name, len(endpoints)) for name in endpoint_names(header)]
        rows[:, ENDPOINT] = np.asarray([*to_run, -1])[rows[:, ENDPOINT].astype(int)]
        chunks.append(rows)
        open_rps = max(open_rps, float(header.get("open_rps") or 0.0))
        if header.get("max_inflight") is not None:
            caps.append(int(header["max_inflight"]))
    return RequestLog(
        rows=np.concatenate(chunks) if chunks else np.empty((0, _COLUMNS)),
        open_rps=open_rps,
        max_inflight=max(caps) if caps and open_rps > 0 else None,
        processes=processes,
        endpoints=tuple(endpoints),
    )


def latency_ms(rows: np.ndarray) -> np.ndarray:
    """Return each row's latency from its intended start: response + (sent - intended)."""
    return rows[:, RESPONSE_MS] + (rows[:, SENT] - rows[:, INTENDED]) * 1000


def completed(log: RequestLog) -> np.ndarray:
    """Return (done_epoch, latency_ms, failed) of every completed request, warm-up included.

    The per-second timeseries bins these by completion; in an open-model run latency counts
    from the intended start, in a closed loop from the actual send.
    """
    rows = log.rows[np.isin(log.rows[:, OUTCOME], (OUTCOME_OK, OUTCOME_FAILED))]
    failed = (rows[:, OUTCOME] == OUTCOME_FAILED).astype(float)
    return np.column_stack([rows[:, DONE], latency_ms(rows), failed])


def endpoints_in_window(
    log: RequestLog, start_epoch: float, end_epoch: float
) -> dict[str, dict[str, Any]]:
    """Return {endpoint: figures} of the requests that completed in [start_epoch, end_epoch).

    Figures as the window's client columns (`bench.results.ENDPOINT_FIGURES`): `requests`,
    `failures`, `error_rate`, `p50_ms`, `p95_ms`, `p99_ms`, `mean_ms`, latency from the intended
    start. Only endpoints with a completed request appear, by name; their `requests` add up to
    the window's. Requests whose endpoint is unknown (formats 1 and 2) are under `-`.
    """
    rows = log.rows[np.isin(log.rows[:, OUTCOME], (OUTCOME_OK, OUTCOME_FAILED))]
    rows = rows[(rows[:, DONE] >= start_epoch) & (rows[:, DONE] < end_epoch)]
    table = np.asarray([*log.endpoints, UNKNOWN_ENDPOINT], dtype=object)  # [-1]: unknown
    codes = rows[:, ENDPOINT].astype(int)
    names = table[np.where(codes < len(log.endpoints), codes, -1)]
    latencies = latency_ms(rows)
    failed = rows[:, OUTCOME] == OUTCOME_FAILED
    out: dict[str, dict[str, Any]] = {}
    for name in sorted(set(names.tolist())):
        mine = names == name
        ms = latencies[mine]
        p50, p95, p99 = np.percentile(ms, [50, 95, 99])
        failures = int(np.count_nonzero(failed[mine]))
        out[name] = {
            "requests": len(ms),
            "failures": failures,
            "error_rate": failures / len(ms),
            "p50_ms": float(p50),
            "p95_ms": float(p95),
            "p99_ms": float(p99),
            "mean_ms": float(ms.mean()),
        }
    return out


def figures_in_window(log: RequestLog, start_epoch: float, end_epoch: float) -> dict[str, Any]:
    """Return the window's client figures from a RequestLog (see `window_figures`)."""
    rows, outcome = log.rows, log.rows[:, OUTCOME]
    done = completed(log)
    inside = (done[:, 0] >= start_epoch) & (done[:, 0] < end_epoch)
    requests = done[inside, 1:]

    started = outcome != OUTCOME_DROPPED
    # An outstanding arrival killed before sending started (as far as it got) when scheduled.
    start = np.where(np.isnan(rows[:, SENT]), rows[:, INTENDED], rows[:, SENT])
    before_end = started & (start < end_epoch)
    # NaN (never completed) compares False: still in flight.
    finished_by_end = rows[:, DONE] < end_epoch
    inflight_at_end = int(np.count_nonzero(before_end & ~finished_by_end))
    sent_inside = started & (rows[:, SENT] >= start_epoch) & (rows[:, SENT] < end_epoch)

    lag_p95_ms: float | None = None
    if log.open_model and sent_inside.any():
        lag_ms = (rows[sent_inside, SENT] - rows[sent_inside, INTENDED]) * 1000
        lag_p95_ms = float(np.percentile(lag_ms, 95))
    scheduled = (rows[:, INTENDED] >= start_epoch) & (rows[:, INTENDED] < end_epoch)
    dropped = int(np.count_nonzero(scheduled & (outcome == OUTCOME_DROPPED)))
    return {
        "requests": requests,
        "completed": len(requests),
        "failures": int(requests[:, 1].sum()),
        "sent": int(np.count_nonzero(sent_inside)),
        "open_model": log.open_model,
        "open_rps_per_user": log.open_rps,
        "schedule_lag_p95_ms": lag_p95_ms,
        "dropped_arrivals": dropped,
        "inflight_at_end": inflight_at_end,
        "max_inflight": log.max_inflight,
        "cap_reached": dropped > 0,
        "processes": log.processes,
        "endpoints": endpoints_in_window(log, start_epoch, end_epoch),
    }


def window_figures(run_dir: Path, start_epoch: float, end_epoch: float) -> dict[str, Any]:
    """Return the client figures of the window [start_epoch, end_epoch) of a run.

    - `requests`: (latency_ms, failed) rows of the requests that completed in the window;
      latency from the intended start in the open model, from the actual send when closed.
      `completed` and `failures` count them.
    - `sent`: requests sent in the window (completed or not).
    - `schedule_lag_p95_ms`: p95 of (actual send - intended start) over the requests sent in
      the window: how late the load generator sent. None in a closed loop (no schedule) or
      when nothing was sent.
    - `dropped_arrivals`: arrivals scheduled in the window that never started because their
      process had `max_inflight` requests in flight; `cap_reached` is True when there were any.
    - `inflight_at_end`: requests started before `end_epoch` (warm-up included) that had not
      completed by then, in both models, including those still outstanding when their process
      stopped. Not in `requests`: their latency is unknown, and at least end - start.
    - `max_inflight` (the per-process cap; None when closed), `open_model`,
      `open_rps_per_user`, `processes` (files read).
    - `endpoints`: {endpoint: figures} of the same completed requests (`endpoints_in_window`).
    """
    return figures_in_window(read_requests(run_dir), start_epoch, end_epoch)
