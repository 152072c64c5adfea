"""HDR latency histograms (poolbench.hdr): quantiles agree with numpy's on the raw values."""

from __future__ import annotations

import numpy as np
import pytest

from poolbench import hdr

# One part in 10**digits: the precision `SIGNIFICANT_DIGITS` promises for a value read back.
PRECISION = 10.0**-hdr.SIGNIFICANT_DIGITS


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_quantiles_agree_with_numpy_within_the_precision(seed: int) -> None:
    rng = np.random.default_rng(seed)
    # Latency-like: a lognormal body from ~0.1 ms plus a tail of slow ones up to seconds.
    values_ms = np.concatenate(
        [rng.lognormal(np.log(20), 0.6, 20_000), rng.uniform(500, 5000, 200), [0.05, 2e6]]
    )
    histogram = hdr.new_histogram()
    for value in values_ms:
        hdr.record_ms(histogram, float(value))
    merged = hdr.merge([hdr.encode(histogram)])
    assert merged.get_total_count() == len(values_ms)
    for q in (0.50, 0.90, 0.95, 0.99, 0.999):
        # HDR answers a recorded value's bucket at the nearest rank (numpy "inverted_cdf").
        exact = float(np.percentile(values_ms, q * 100, method="inverted_cdf"))
        assert hdr.quantile_ms(merged, q) == pytest.approx(exact, rel=PRECISION, abs=1e-3)


def test_merged_histograms_count_every_value_once() -> None:
    rng = np.random.default_rng(7)
    parts = [rng.exponential(30, 5000) for _ in range(3)]
    encoded = []
    for part in parts:
        histogram = hdr.new_histogram()
        for value in part:
            hdr.record_ms(histogram, float(value))
        encoded.append(hdr.encode(histogram))
    every = np.concatenate(parts)
    merged = hdr.merge(encoded)
    assert merged.get_total_count() == len(every)
    exact = float(np.percentile(every, 95, method="inverted_cdf"))
    assert hdr.quantile_ms(merged, 0.95) == pytest.approx(exact, rel=PRECISION, abs=1e-3)


def test_out_of_range_values_are_clamped_not_lost() -> None:
    histogram = hdr.new_histogram()
    for value_ms in (-1.0, 0.0, 1e12):
        hdr.record_ms(histogram, value_ms)
    assert histogram.get_total_count() == 3
    assert hdr.quantile_ms(histogram, 1.0) == pytest.approx(hdr.HIGHEST_US / 1000, rel=PRECISION)
    assert hdr.quantile_ms(hdr.new_histogram(), 0.5) == 0.0


def test_no_quantile_reads_back_above_the_exact_max() -> None:
    # 176.9411 ms lands in a bucket whose upper edge is 177.023 ms.
    histogram = hdr.new_histogram()
    for _ in range(100):
        hdr.record_ms(histogram, 176.9411)
    assert hdr.quantile_ms(histogram, 0.99) > 176.9411
    assert hdr.quantile_ms(histogram, 0.99, most=176.9411) == 176.9411
