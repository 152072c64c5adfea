"""Window summaries and cumulative bucket counts: the two ways a wait is kept.

A window (`/telemetry`) records its samples into an HDR histogram (`poolbench.hdr`): fixed memory
whatever the number of samples, percentiles within the histogram's precision (3 significant
digits), and the histogram itself in `/telemetry` (`hdr`, encoded) so several workers' windows
merge exactly. Count, sum, sum of squares (for the standard deviation) and max are kept exactly
beside it. Cumulative bucket counts (`/telemetry/totals`, Prometheus histograms) are O(1) and
never reset, so an observer takes the difference of two readings for any window it likes.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import asdict, dataclass
from typing import Any

from poolbench import hdr

# Seconds; from sub-millisecond checkouts of an idle pool to waits that hit a 30 s pool_timeout.
LATENCY_BUCKETS_S = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
    0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip


def percentile(sorted_values: list[float], q: float) -> float:
    """Return the q-quantile (0..1) by linear interpolation, as numpy's default does."""
    if not sorted_values:
        return 0.0
    rank = q * (len(sorted_values) - 1)
    low = math.floor(rank)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (rank - low)


@dataclass(frozen=True, kw_only=True)
class WindowStats:
    """Summary of the current window in milliseconds: count, sum, mean, std and max exact,
    quantiles to the histogram's precision; `hdr` is the histogram (`poolbench.hdr.encode`)."""

    count: int
    sum: float
    mean: float
    std: float
    p50: float
    p95: float
    p99: float
    max: float
    hdr: str

    def as_dict(self) -> dict[str, Any]:
        """The /telemetry form."""
        return asdict(self)


class WindowHistogram:
    """Samples in milliseconds for the current window, in an HDR histogram (bounded memory)."""

    def __init__(self) -> None:
        self._histogram = hdr.new_histogram()
        self.count = 0
        self.total = 0.0
        self.total_sq = 0.0
        self.max = 0.0

    def observe(self, value_ms: float) -> None:
        """Add one sample."""
        hdr.record_ms(self._histogram, value_ms)
        self.count += 1
        self.total += value_ms
        self.total_sq += value_ms * value_ms
        self.max = max(self.max, value_ms)

    def reset(self) -> None:
        """Drop every sample."""
        self._histogram.reset()
        self.count = 0
        self.total = 0.0
        self.total_sq = 0.0
        self.max = 0.0

    def summary(self) -> WindowStats:
        """Return count, sum, mean, std, p50/p95/p99, max and the encoded histogram."""
        mean = self.total / self.count if self.count else 0.0
        # Population std from the exact sums: the hold time's variability for Allen-Cunneen.
        variance = max(0.0, self.total_sq / self.count - mean * mean) if self.count else 0.0
        p50, p95, p99 = hdr.quantiles_ms(self._histogram, (0.50, 0.95, 0.99), most=self.max)
        return WindowStats(
            count=self.count,
            sum=round(self.total, 4),
            mean=round(mean, 4),
            std=round(math.sqrt(variance), 4),
            p50=round(p50, 4),
            p95=round(p95, 4),
            p99=round(p99, 4),
            max=round(self.max, 4),
            hdr=hdr.encode(self._histogram),
        )


class Totals:
    """Cumulative count, sum and sum of squares of a duration in seconds, plus bucket counts.

    Never reset: the difference of two readings is any window's count, mean and standard
    deviation (from the sum of squares), and its percentiles to a bucket's width.
    """

    __slots__ = ("count", "sum_s", "sum_sq_s2", "_buckets")

    def __init__(self) -> None:
        self.count = 0
        self.sum_s = 0.0
        self.sum_sq_s2 = 0.0
        self._buckets = [0] * len(LATENCY_BUCKETS_S)  # per bucket, not cumulative

    def observe(self, value_s: float) -> None:
        """Add one duration."""
        self.count += 1
        self.sum_s += value_s
        self.sum_sq_s2 += value_s * value_s
        index = bisect.bisect_left(LATENCY_BUCKETS_S, value_s)
        if index < len(self._buckets):
            self._buckets[index] += 1

    def cumulative_buckets(self) -> list[list[float]]:
        """`[[le_s, count of values <= le_s], ...]` like a Prometheus histogram (no +Inf)."""
        running = 0
        out: list[list[float]] = []
        for bound, count in zip(LATENCY_BUCKETS_S, self._buckets, strict=True):
            running += count
            out.append([bound, running])
        return out
