"""One Locust process's figures of the measured window and per second, in bounded memory.

Every completion, send and dropped arrival is an event with an epoch (`time.time()` seconds);
`WindowRecorder` places each against the window's edges once they are known, `SecondSeries`
counts every request (warm-up included) per completion second. No gevent or Locust here:
`poolbench.load.tracking` feeds them from Locust's events.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Iterable
from typing import Any

from poolbench import hdr
from poolbench.load.latency_file import Latencies

# Event kinds a process classifies against the window: (kind, epoch, ...).
# (DONE, completed epoch, latency_ms, failed, endpoint, sent epoch); (SENT, epoch, lag_ms);
# (DROP, intended epoch).
DONE, SENT, DROP = "done", "sent", "drop"


class SecondSeries:
    """Per completion second: requests, failures and a coarse latency histogram (the report's
    time series). Memory: one entry of a few hundred bytes per second of the run."""

    def __init__(self) -> None:
        self.closed: dict[int, list[Any]] = {}  # second -> [requests, failures, encoded]
        self.open: dict[int, list[Any]] = {}  # the last two seconds: [requests, failures, hist]

    def add(self, done_epoch: float, latency_ms: float, failed: bool) -> None:
        second = math.floor(done_epoch)
        entry = self.open.get(second)
        if entry is None:
            for old in [old for old in self.open if old < second - 1]:
                self._close(old)
            entry = self.open[second] = [0, 0, hdr.new_histogram(hdr.COARSE_SIGNIFICANT_DIGITS)]
        entry[0] += 1
        entry[1] += failed
        hdr.record_ms(entry[2], latency_ms)

    def _close(self, second: int) -> None:
        count, failures, histogram = self.open.pop(second)
        if second in self.closed:  # a late completion (the clock stepped back): add up
            before = self.closed[second]
            count, failures = count + before[0], failures + before[1]
            histogram.add(hdr.decode(before[2]))
        self.closed[second] = [count, failures, hdr.encode(histogram)]

    def rows(self) -> list[list[Any]]:
        """`[second, requests, failures, encoded histogram]` per second, in order."""
        for second in list(self.open):
            self._close(second)
        return [[second, *self.closed[second]] for second in sorted(self.closed)]


class WindowRecorder:
    """This process's figures of the measured window, in memory bounded whatever the run's length.

    An event is placed (counted in the window or not) once the window's edges it depends on are
    known. A process that marks the window itself (a single Locust process) knows them at once;
    a worker learns the master's `start` and `end` epochs from its messages, so it holds its
    events of the last `hold_s` seconds unplaced: those that completed between an edge and the
    message that carries it are placed exactly. `exact` turns False if a message came later.
    `open_model`: record the schedule lag of sends (a closed loop has no schedule).
    """

    def __init__(self, *, open_model: bool = False) -> None:
        self.open_model = open_model
        self.hold_s = 0.0
        self.start_epoch: float | None = None
        self.end_epoch: float | None = None
        self.exact = True
        self.held: deque[tuple[Any, ...]] = deque()
        self.discarded_max = -math.inf  # latest event dropped before `start` was known
        self.placed_max = -math.inf  # latest event counted before `end` was known
        self.latency = Latencies()
        self.endpoints: dict[str, Latencies] = {}
        self.lag = hdr.new_histogram()
        self.sent = 0
        self.dropped = 0
        self.inflight_at_end: int | None = None

    def add(self, event: tuple[Any, ...]) -> None:
        if self.end_epoch is not None or self.hold_s <= 0:
            self._place(event)
            return
        self.held.append(event)
        horizon = time.time() - self.hold_s
        while self.held and self.held[0][1] < horizon:
            self._place(self.held.popleft())

    def _place(self, event: tuple[Any, ...]) -> None:
        kind, epoch = event[0], event[1]
        if self.start_epoch is None:
            self.discarded_max = max(self.discarded_max, epoch)
            return
        if epoch < self.start_epoch or (self.end_epoch is not None and epoch >= self.end_epoch):
            return
        if self.end_epoch is None:
            self.placed_max = max(self.placed_max, epoch)
        if kind == DONE:
            _, _, latency_ms, failed, endpoint, _ = event
            self.latency.add(latency_ms, failed)
            latencies = self.endpoints.get(endpoint)
            if latencies is None:  # not setdefault: a histogram is 184 KiB to make
                latencies = self.endpoints[endpoint] = Latencies()
            latencies.add(latency_ms, failed)
        elif kind == SENT:
            self.sent += 1
            if self.open_model:
                hdr.record_ms(self.lag, event[2])
        else:
            self.dropped += 1

    def begin(self, epoch: float) -> None:
        self.start_epoch = epoch
        self.exact &= self.discarded_max < epoch

    def finish(self, epoch: float, pending: Iterable[list[Any]]) -> None:
        """Close the window at `epoch`; `pending` are the requests still in flight now.

        Each pending request is `[intended_epoch, sent_epoch, endpoint]` (sent NaN: an
        open-model arrival killed or still waiting before its first send).
        """
        if self.start_epoch is None or self.end_epoch is not None:
            return
        self.end_epoch = epoch
        self.exact &= self.placed_max < epoch
        # Started before the end, not completed by then: in flight now, or completed since.
        inflight = sum(1 for intended, sent, _ in pending if started(intended, sent) < epoch)
        inflight += sum(1 for e in self.held if e[0] == DONE and e[1] >= epoch and e[5] < epoch)
        self.inflight_at_end = inflight
        while self.held:
            self._place(self.held.popleft())

    def as_json(self) -> dict[str, Any]:
        """The latency file's `window` (`poolbench.load.latency_file`)."""
        return {
            "start_epoch": self.start_epoch,
            "end_epoch": self.end_epoch,
            "exact": self.exact,
            **self.latency.as_json(),
            "sent": self.sent,
            "dropped_arrivals": self.dropped,
            "inflight_at_end": self.inflight_at_end,
            "lag_hdr": hdr.encode(self.lag) if self.open_model else None,
            "endpoints": {name: e.as_json() for name, e in sorted(self.endpoints.items())},
        }


def started(intended: float, sent: float) -> float:
    """When a request started: its send, or for an arrival killed before sending, its schedule."""
    return intended if math.isnan(sent) else sent
