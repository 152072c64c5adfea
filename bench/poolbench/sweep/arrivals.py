"""Read the window figures every Locust process recorded and merge them into the run's.

Each Locust process's figures of the measured window are a JSON file, `latency-<pid>.json` from
a single process, `latency-<worker id>.json` written by the master for each worker, local or
remote (the file and its format version are `poolbench.load.latency_file`, which the writer
imports too): counts, exact sums and maxima, and HDR histograms (`poolbench.hdr`) of the
latency from the intended start, overall and per endpoint, of the schedule lag, plus a per-second
series of every request. Merging adds counts and histograms, so the merged quantiles are those of
all the processes' requests together to the histogram's precision. `write_merged` keeps the merge as
`latency.json` in the run directory; `read_requests` reads it back when the per-process files
are gone. Standard library, numpy-free, so the sweep runner needs neither the scenarios nor
Locust.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from hdrh.histogram import HdrHistogram

from poolbench import hdr
from poolbench.load.latency_file import (
    LATENCY_FILE,
    REQUESTS_FILE_GLOB,
    WINDOW_HDR_KEY,
    Latencies,
    RequestLog,
)

QUANTILES = (0.50, 0.95, 0.99)
# The window epochs a process used and the master's markers are the same floats (JSON round
# trip); anything further apart means the figures cover another window.
WINDOW_EPOCH_TOLERANCE_S = 1e-3


def merge_requests(logs: Iterable[RequestLog]) -> RequestLog:
    """Merge processes' files (or merged ones: their `processes` add up)."""
    logs = list(logs)
    if not logs:
        return RequestLog(processes=0)
    caps = [log.max_inflight for log in logs if log.max_inflight is not None]
    open_rps = max(log.open_rps for log in logs)
    return RequestLog(
        processes=sum(log.processes for log in logs),
        open_rps=open_rps,
        max_inflight=max(caps) if caps and open_rps > 0 else None,
        peak_inflight=max(log.peak_inflight for log in logs),
        dropped_arrivals=sum(log.dropped_arrivals for log in logs),
        window=_merge_windows([log.window for log in logs]),
        seconds=_merge_seconds(log.seconds for log in logs),
    )


def _merge_latencies(parts: list[Mapping[str, Any]]) -> dict[str, Any]:
    total = Latencies()
    for part in parts:
        total.merge(Latencies.from_json(part))
    return total.as_json()


def _merge_windows(windows: list[Mapping[str, Any]]) -> dict[str, Any]:
    starts = {w.get("start_epoch") for w in windows}
    ends = {w.get("end_epoch") for w in windows}
    inflight = [w.get("inflight_at_end") for w in windows]
    endpoints = [w.get("endpoints") or {} for w in windows]
    names = sorted({name for e in endpoints for name in e})
    lags = [w["lag_hdr"] for w in windows if w.get("lag_hdr")]
    return {
        "start_epoch": min((s for s in starts if s is not None), default=None),
        "end_epoch": min((e for e in ends if e is not None), default=None),
        # Every process placed its requests against the same window, in time.
        "exact": all(w.get("exact") for w in windows) and len(starts) == len(ends) == 1,
        **_merge_latencies([w for w in windows if WINDOW_HDR_KEY in w]),
        "sent": sum(w.get("sent") or 0 for w in windows),
        "dropped_arrivals": sum(w.get("dropped_arrivals") or 0 for w in windows),
        "inflight_at_end": None if None in inflight else sum(i or 0 for i in inflight),
        "lag_hdr": hdr.encode(hdr.merge(lags)) if lags else None,
        "endpoints": {
            name: _merge_latencies(
                [w["endpoints"][name] for w in windows if name in w["endpoints"]]
            )
            for name in names
        },
    }


def _merge_seconds(series: Iterable[Iterable[list[Any]]]) -> list[list[Any]]:
    merged: dict[int, list[Any]] = {}
    for rows in series:
        for second, requests, failures, encoded in rows:
            entry = merged.setdefault(
                int(second), [0, 0, hdr.new_histogram(hdr.COARSE_SIGNIFICANT_DIGITS)]
            )
            entry[0] += requests
            entry[1] += failures
            entry[2].add(hdr.decode(encoded))
    return [[s, n, f, hdr.encode(h)] for s, (n, f, h) in sorted(merged.items())]


def read_requests(run_dir: Path) -> RequestLog:
    """Merge every Locust process's file in `run_dir` (or read `latency.json` once merged)."""
    paths = sorted(run_dir.glob(REQUESTS_FILE_GLOB))
    if not paths and (run_dir / LATENCY_FILE).exists():
        paths = [run_dir / LATENCY_FILE]
    return merge_requests(RequestLog.loads(path.read_text()) for path in paths)


def write_merged(run_dir: Path, log: RequestLog) -> None:
    """Keep the merge as `latency.json` and remove the per-process files it came from."""
    log.write(run_dir / LATENCY_FILE)
    for path in run_dir.glob(REQUESTS_FILE_GLOB):
        path.unlink()


def latency_figures(latencies: Mapping[str, Any]) -> dict[str, Any]:
    """`requests`, `failures`, `error_rate`, `p50_ms`, `p95_ms`, `p99_ms`, `mean_ms`, `max_ms`.

    Count, failures, mean and max are exact; quantiles are the histogram's (3 significant
    digits). No request: no percentiles and no error rate (NaN): nothing measured must not pass
    an SLO.
    """
    count, failures = int(latencies.get("requests") or 0), int(latencies.get("failures") or 0)
    out: dict[str, Any] = {
        "requests": count,
        "failures": failures,
        "error_rate": failures / count if count else math.nan,
    }
    if count:
        histogram: HdrHistogram = hdr.decode(latencies[WINDOW_HDR_KEY])
        p50, p95, p99 = hdr.quantiles_ms(histogram, QUANTILES, most=float(latencies["max_ms"]))
        out |= {
            "p50_ms": p50,
            "p95_ms": p95,
            "p99_ms": p99,
            "mean_ms": float(latencies["sum_ms"]) / count,
            "max_ms": float(latencies["max_ms"]),
        }
    return out


def figures_in_window(log: RequestLog, start_epoch: float, end_epoch: float) -> dict[str, Any]:
    """Return the window's client figures from a RequestLog (see `window_figures`)."""
    window = log.window
    same = all(
        window.get(key) is not None and abs(window[key] - epoch) <= WINDOW_EPOCH_TOLERANCE_S
        for key, epoch in (("start_epoch", start_epoch), ("end_epoch", end_epoch))
    )
    lag_p95_ms: float | None = None
    if log.open_model and window.get("lag_hdr") and window.get("sent"):
        lag_p95_ms = hdr.quantile_ms(hdr.decode(window["lag_hdr"]), 0.95)
    dropped = int(window.get("dropped_arrivals") or 0)
    return {
        "latency": latency_figures(window),
        "completed": int(window.get("requests") or 0),
        "failures": int(window.get("failures") or 0),
        "sent": int(window.get("sent") or 0),
        "open_model": log.open_model,
        "open_rps_per_user": log.open_rps,
        "schedule_lag_p95_ms": lag_p95_ms,
        "dropped_arrivals": dropped,
        "inflight_at_end": window.get("inflight_at_end"),
        "max_inflight": log.max_inflight,
        "cap_reached": dropped > 0,
        "processes": log.processes,
        "window_exact": bool(window.get("exact")) and same,
        "endpoints": {
            name: {k: v for k, v in latency_figures(e).items() if k != "max_ms"}
            for name, e in (window.get("endpoints") or {}).items()
            if e.get("requests")
        },
    }


def window_figures(run_dir: Path, start_epoch: float, end_epoch: float) -> dict[str, Any]:
    """Return the client figures of the window [start_epoch, end_epoch) of a run.

    - `latency`: `latency_figures` of the requests that completed in the window; latency from
      the intended start in the open model, from the actual send when closed. `completed` and
      `failures` count them.
    - `sent`: requests sent in the window (completed or not).
    - `schedule_lag_p95_ms`: p95 of (actual send - intended start) over the requests sent in
      the window: how late the load generator sent. None in a closed loop (no schedule) or
      when nothing was sent.
    - `dropped_arrivals`: arrivals scheduled in the window that never started because their
      process had `max_inflight` requests in flight; `cap_reached` is True when there were any.
    - `inflight_at_end`: requests started before `end_epoch` (warm-up included) that had not
      completed by then, in both models, including those still outstanding when their process
      stopped. Not in `latency`: their latency is unknown, and at least end - start.
    - `max_inflight` (the per-process cap; None when closed), `open_model`,
      `open_rps_per_user`, `processes` (files merged).
    - `window_exact`: every process placed its requests against this window (a worker whose
      window message came too late, or files of another window, make it False).
    - `endpoints`: {endpoint: figures} of the same completed requests (`latency_figures`
      without `max_ms`); only endpoints with a completed request, their `requests` add up to
      the window's.
    """
    return figures_in_window(read_requests(run_dir), start_epoch, end_epoch)
