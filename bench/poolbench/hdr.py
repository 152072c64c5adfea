"""Latency histograms (HdrHistogram): bounded memory, mergeable, percentiles to 3 digits.

One definition of the histograms that the scenarios (per Locust process), the app's telemetry
windows and the sweep's readers share: values are recorded in microseconds from 1 us to one hour
(longer values are clamped to the hour; the exact max is kept beside the histogram where it
matters), at `SIGNIFICANT_DIGITS` significant digits, so a quantile read back is within one part
in 1,000 of a recorded value's (the histogram's precision). Memory is fixed by the range and the
precision (`HdrHistogram.counts_len` 8-byte counters), whatever the number of values. Histograms
travel as HdrHistogram's compressed base64 `encode()` text and add up exactly (`merge`).

Standard library and `hdrh` only: Locust processes import it.
"""

from __future__ import annotations

from collections.abc import Iterable

from hdrh.histogram import HdrHistogram

SIGNIFICANT_DIGITS = 3
# The per-second time series needs less: 2 digits (1 %) is 7x smaller to keep and to encode.
COARSE_SIGNIFICANT_DIGITS = 2
LOWEST_US = 1
HIGHEST_US = 3_600_000_000  # one hour: past any timeout, and an open model's worst backlog
US_PER_MS = 1000.0


def new_histogram(digits: int = SIGNIFICANT_DIGITS) -> HdrHistogram:
    """Return an empty latency histogram (microseconds, 1 us to an hour)."""
    return HdrHistogram(LOWEST_US, HIGHEST_US, digits)


def record_ms(histogram: HdrHistogram, value_ms: float) -> None:
    """Add one value in milliseconds (negative ones as 0, past the hour as the hour)."""
    histogram.record_value(min(HIGHEST_US, max(0, round(value_ms * US_PER_MS))))


def encode(histogram: HdrHistogram) -> str:
    """The histogram as compressed base64 text (HdrHistogram's own encoding)."""
    return histogram.encode().decode("ascii")


def decode(text: str) -> HdrHistogram:
    """The histogram `encode` wrote."""
    return HdrHistogram.decode(text.encode("ascii"))


def merge(encoded: Iterable[str], digits: int = SIGNIFICANT_DIGITS) -> HdrHistogram:
    """One histogram holding every value of the encoded ones (exact: counts add up)."""
    total = new_histogram(digits)
    for text in encoded:
        total.add(decode(text))
    return total


def quantile_ms(histogram: HdrHistogram, q: float, most: float | None = None) -> float:
    """The q-quantile (0..1) in milliseconds; 0 for an empty histogram.

    A value reads back as its bucket's upper edge, which can pass the largest value recorded:
    `most`, the exact maximum when the caller keeps it, caps it (no p99 above the max).
    """
    if not histogram.get_total_count():
        return 0.0
    value = histogram.get_value_at_percentile(q * 100) / US_PER_MS
    return value if most is None else min(value, most)


def quantiles_ms(
    histogram: HdrHistogram, qs: Iterable[float], most: float | None = None
) -> list[float]:
    """`quantile_ms` for each of `qs`."""
    return [quantile_ms(histogram, q, most) for q in qs]
