"""The latency file: a Locust process's window figures (or a merge), in both directions.

The Locust processes write it (`poolbench.load.listeners`) and the sweep runner reads and merges
it (`poolbench.sweep.arrivals`); both import this module, which needs neither gevent nor Locust
(standard library and `poolbench.hdr` only).

`latency-<pid>.json` from a single process, `latency-<worker id>.json` written by the master for
each worker; the runner merges them into `latency.json` (same layout, `processes` instead of
`pid`) and removes them. Format 4 (REQUESTS_FORMAT): one JSON object with `format`, `pid` (or
`processes`), `open_rps` (per user; 0 = closed loop), `max_inflight` (the cap, null in a closed
loop), `peak_inflight` and `dropped_arrivals` (whole run, warm-up included: diagnostics),
`window` and `seconds`:

- `window`: `start_epoch`, `end_epoch`, `exact`, `requests`, `failures`, `sum_ms`, `max_ms`, `hdr`
  (the latency histogram, HdrHistogram's compressed base64 encoding), `sent`, `dropped_arrivals`,
  `inflight_at_end`, `lag_hdr` (null in a closed loop) and `endpoints`: {endpoint: {requests,
  failures, sum_ms, max_ms, hdr}}. An endpoint is Locust's request_type and name, e.g.
  `GET /users/[id]` or `POST /orders`.
- `seconds`: `[second, requests, failures, coarse hdr]` per completion second.

Formats 1 to 3 were raw request lines (`latency-<pid>.txt`), read only by the sweep that wrote
them; nothing reads them now.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from poolbench import hdr

REQUESTS_FORMAT = 4
LATENCY_FILE_PREFIX = "latency-"
LATENCY_FILE_SUFFIX = ".json"
LATENCY_FILE = "latency.json"  # the run's merged figures, same layout, `processes` added
REQUESTS_FILE_GLOB = f"{LATENCY_FILE_PREFIX}*{LATENCY_FILE_SUFFIX}"
WINDOW_HDR_KEY = "hdr"


def latency_file_name(process: str | int) -> str:
    """The file of one process's figures: its pid, or a worker id made filename-safe."""
    safe = "".join(c if c.isalnum() else "_" for c in str(process))
    return f"{LATENCY_FILE_PREFIX}{safe}{LATENCY_FILE_SUFFIX}"


def write_file(path: Path, data: Mapping[str, Any]) -> None:
    """Write a file's JSON object (`RequestLog.as_json`, or a worker's as it sent it)."""
    path.write_text(json.dumps(data) + "\n")


class Latencies:
    """Count, failures, exact sum and max, and an HDR histogram of latencies in milliseconds.

    One entry of a file's `window` (overall, and per endpoint): the Locust processes record into
    it, the runner merges entries with `merge`; `as_json` / `from_json` are its layout.
    """

    def __init__(self) -> None:
        self.histogram = hdr.new_histogram()
        self.requests = 0
        self.failures = 0
        self.sum_ms = 0.0
        self.max_ms = 0.0

    def add(self, latency_ms: float, failed: bool) -> None:
        hdr.record_ms(self.histogram, latency_ms)
        self.requests += 1
        self.failures += failed
        self.sum_ms += latency_ms
        self.max_ms = max(self.max_ms, latency_ms)

    def merge(self, other: Latencies) -> None:
        """Add another entry's requests (exact: counts and histograms add up)."""
        self.histogram.add(other.histogram)
        self.requests += other.requests
        self.failures += other.failures
        self.sum_ms += other.sum_ms
        self.max_ms = max(self.max_ms, other.max_ms)

    def as_json(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "failures": self.failures,
            "sum_ms": self.sum_ms,
            "max_ms": self.max_ms,
            WINDOW_HDR_KEY: hdr.encode(self.histogram),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Latencies:
        latencies = cls()
        latencies.histogram = hdr.decode(data[WINDOW_HDR_KEY])
        latencies.requests = data.get("requests") or 0
        latencies.failures = data.get("failures") or 0
        latencies.sum_ms = data.get("sum_ms") or 0.0
        latencies.max_ms = data.get("max_ms") or 0.0
        return latencies


@dataclass(frozen=True, kw_only=True)
class RequestLog:
    """One Locust process's window figures (`pid` set), or several processes' merged.

    `window` holds the counts, `max_ms`, the encoded histograms (`hdr`, `lag_hdr`), `endpoints`
    ({name: {requests, failures, sum_ms, max_ms, hdr}}), `inflight_at_end`, `start_epoch`,
    `end_epoch` and `exact`; `seconds` is `[second, requests, failures, coarse hdr]` rows.
    `open_rps` is the per-user arrival rate (0 for a closed loop) and `max_inflight` the
    per-process cap on concurrent open-model requests (None when closed).
    """

    processes: int = 1
    pid: int | None = None  # one process's file; None once merged
    open_rps: float = 0.0
    max_inflight: int | None = None
    peak_inflight: int = 0
    dropped_arrivals: int = 0
    window: dict[str, Any] = field(default_factory=dict)
    seconds: list[list[Any]] = field(default_factory=list)

    @property
    def open_model(self) -> bool:
        return self.open_rps > 0

    def as_json(self) -> dict[str, Any]:
        """The file's JSON object: `pid` for one process's file, `processes` for a merge."""
        source = {"pid": self.pid} if self.pid is not None else {"processes": self.processes}
        return {
            "format": REQUESTS_FORMAT,
            **source,
            "open_rps": self.open_rps,
            "max_inflight": self.max_inflight,
            "peak_inflight": self.peak_inflight,
            "dropped_arrivals": self.dropped_arrivals,
            "window": self.window,
            "seconds": self.seconds,
        }

    def write(self, path: Path) -> None:
        """Write the file."""
        write_file(path, self.as_json())

    @classmethod
    def from_json(cls, data: Any) -> RequestLog:
        """Read a file's JSON object; ValueError if it is of another format."""
        if not isinstance(data, dict) or data.get("format") != REQUESTS_FORMAT:
            found = data.get("format") if isinstance(data, dict) else None
            raise ValueError(f"requests file format {found}, expected {REQUESTS_FORMAT}")
        max_inflight = data.get("max_inflight")
        return cls(
            processes=int(data.get("processes") or 1),
            pid=data.get("pid"),
            open_rps=float(data.get("open_rps") or 0.0),
            max_inflight=None if max_inflight is None else int(max_inflight),
            peak_inflight=int(data.get("peak_inflight") or 0),
            dropped_arrivals=int(data.get("dropped_arrivals") or 0),
            window=data.get("window") or {},
            seconds=data.get("seconds") or [],
        )

    @classmethod
    def loads(cls, text: str) -> RequestLog:
        """Read a file's text; ValueError if it is unreadable or of another format."""
        return cls.from_json(json.loads(text))
