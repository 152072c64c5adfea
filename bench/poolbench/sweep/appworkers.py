"""The sample app's worker processes as one app: their telemetry, reset and read together.

Every uvicorn worker is a process with its own pools and its own `/telemetry`; a request to the
shared port lands on one of them. The runner reaches each worker on its private port
(`poolbench.sweep.appserver`), resets them all when the window opens, reads them all when it ends,
and combines the snapshots into one in the same layout, for the whole app:

- counts (completed requests, statements, timeouts, connections opened, calls) are summed;
- figures "now" and the time-averaged requests in flight are summed (exact);
- peaks (`peak_*`, `inflight_peak`) are the sum of the per-worker peaks: an upper bound of the
  simultaneous peak (exact with one worker; workers need not peak at the same moment);
- a timing histogram's count, sum and max are exact, its mean is sample-weighted (exact) and its
  std pooled over the workers' samples (exact); its quantiles (p50, p95, p99) come from the
  workers' HDR histograms (`hdr`, `poolbench.hdr`) added up, so they are the quantiles over all
  samples to the histogram's precision, and the sum is kept as `hdr`. A worker that gives no
  `hdr` (a target instrumented before it existed) leaves the quantiles unknown (None);
- settings per process (`pool_size`, `max_overflow`, `limit`) are summed: the app's capacity;
- `statements_per_request` is recomputed from the sums; `window_s` is the longest window.

The per-worker snapshots are kept next to the combined one in telemetry.json (`per_worker`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from poolbench import hdr
from poolbench.instrumentation.prometheus import parse_metrics
from poolbench.instrumentation.readings import Reading, merge_missing, window_between
from poolbench.instrumentation.routes import METRICS_PATH

HISTOGRAM_KEYS = frozenset({"count", "sum", "mean", "p50", "p95", "p99", "max"})
QUANTILES = ("p50", "p95", "p99")


@dataclass(frozen=True, kw_only=True)
class AppWorkers:
    """The app's URL (the shared port) and each worker's private URL."""

    url: str
    worker_urls: tuple[str, ...]

    def reset(self, client: httpx.Client) -> bool:
        """POST /telemetry/reset to every worker; False if any refused (no telemetry)."""
        return all(client.post(f"{u}/telemetry/reset").status_code < 300 for u in self.worker_urls)

    def read(self, client: httpx.Client) -> dict[str, Any]:
        """GET /telemetry of every worker, combined (see the module docstring)."""
        return combine([client.get(f"{u}/telemetry").json() for u in self.worker_urls])


def combine(snapshots: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """One snapshot for the whole app; with one worker, that worker's snapshot unchanged."""
    if len(snapshots) == 1:
        return dict(snapshots[0])
    combined = _merge(snapshots)
    requests = combined.get("requests")
    if isinstance(requests, dict) and "statements" in requests:
        done = requests.get("completed") or 0
        requests["statements_per_request"] = (
            round(requests["statements"] / done, 4) if done else None
        )
    return combined | {"app_workers": len(snapshots), "per_worker": [dict(s) for s in snapshots]}


def _merge(parts: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in parts[0]:
        values = [p.get(key) for p in parts]
        present = [v for v in values if v is not None]
        if not present:
            out[key] = None
        elif all(isinstance(v, Mapping) for v in present):
            if HISTOGRAM_KEYS <= set(present[0]):
                out[key] = _histogram(present)
            else:
                out[key] = _merge(present)
        elif all(_is_number(v) for v in present):
            out[key] = max(present) if key == "window_s" else sum(present)
        else:
            out[key] = present[0]
    return out


def _histogram(parts: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    counted = [p for p in parts if (p.get("count") or 0) > 0]
    count = sum(p.get("count") or 0 for p in parts)
    total = sum(p.get("sum") or 0.0 for p in parts)
    mean = total / count if count else 0.0
    out: dict[str, Any] = {
        "count": count,
        "sum": round(total, 4),
        "mean": round(mean, 4),
        "max": max((p.get("max") or 0.0 for p in parts), default=0.0),
    }
    if all("std" in p for p in counted) and counted:
        second_moment = sum(p["count"] * (p["std"] ** 2 + p["mean"] ** 2) for p in counted)
        out["std"] = round(math.sqrt(max(0.0, second_moment / count - mean**2)), 4)
    elif "std" in parts[0]:
        out["std"] = 0.0
    if not all(isinstance(p.get("hdr"), str) for p in parts):
        return out | dict.fromkeys(QUANTILES)
    merged = hdr.merge(p["hdr"] for p in parts)
    for q in QUANTILES:
        out[q] = round(hdr.quantile_ms(merged, int(q[1:]) / 100, most=out["max"]), 4)
    return out | {"hdr": hdr.encode(merged)}


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


@dataclass(frozen=True, kw_only=True)
class MetricsWindow:
    """A target without `/telemetry`: its Prometheus `/metrics` at the window's edges, differenced.

    Only cumulative series can be differenced, so figures a window needs a reset for (peaks,
    exact quantiles) are missing; `missing` names each one the target did not give.
    """

    start: Reading
    missing: tuple[str, ...]
    opened: float  # time.monotonic() at the first reading

    @classmethod
    def open(cls, client: httpx.Client) -> MetricsWindow | None:
        """Read /metrics now; None when the target serves no Prometheus text there."""
        try:
            response = client.get(METRICS_PATH)
            if response.status_code != 200:
                return None
            reading, missing = parse_metrics(response.text)
        except (httpx.HTTPError, ValueError):
            return None
        return cls(start=reading, missing=tuple(missing), opened=time.monotonic())

    def close(self, client: httpx.Client) -> tuple[dict[str, Any], tuple[str, ...]]:
        """Read /metrics again: the window in the /telemetry layout, and what is missing."""
        response = client.get(METRICS_PATH)
        reading, missing = parse_metrics(response.text)
        window = window_between(self.start, reading, elapsed_s=time.monotonic() - self.opened)
        return window.telemetry(), merge_missing(self.missing, missing, window.missing)
