"""Sizing models against known answers: USL worked example, Erlang C, Little's law."""

from __future__ import annotations

import heapq
import math

import numpy as np
import pytest

from poolbench.analysis.models import (
    SizingInputs,
    allen_cunneen,
    busy_connections,
    corrected_pool,
    deadlock_floor,
    erlang_b,
    erlang_c,
    erlang_pool,
    fit_usl,
    hikari_pool,
    littles_pool,
    mean_wait_ms,
    request_hold_time_ms,
    seed_formula,
    size_all,
    throughput_ceiling_rps,
    usl_peak,
    usl_throughput,
    wait_quantile_ms,
    wait_tail,
)

# codahale/usl README: measurements and the model its CLI prints for them.
CODAHALE_N = [1, 18, 36, 72, 108, 144, 216]
CODAHALE_X = [65, 996, 1652, 1853, 1829, 1775, 1702]
CODAHALE_SIGMA, CODAHALE_KAPPA, CODAHALE_LAMBDA = 0.0277299, 0.000104343, 89.9878


def test_seed_formula_divides_by_queries() -> None:
    assert seed_formula(32, 1) == 48
    assert seed_formula(32, 4) == 12
    assert seed_formula(1, 10) == 1
    with pytest.raises(ValueError):
        seed_formula(10, 0)


def test_littles_law() -> None:
    assert busy_connections(rps=100, hold_time_ms=50) == pytest.approx(5.0)
    assert throughput_ceiling_rps(pool_size=10, hold_time_ms=50) == pytest.approx(200.0)
    assert littles_pool(100, 50, headroom=1.2) == 6
    assert littles_pool(100, 50, headroom=1.0) == 5  # exact products are not rounded up
    assert request_hold_time_ms(4, per_query_ms=5, overhead_ms=2) == pytest.approx(22.0)


def test_corrected_formula_grows_with_queries_while_seed_shrinks() -> None:
    rate = 200.0
    corrected = [corrected_pool(rate, request_hold_time_ms(q, 10)) for q in (1, 2, 4, 8)]
    seeds = [seed_formula(64, q) for q in (1, 2, 4, 8)]
    assert corrected == sorted(corrected) and corrected[0] < corrected[-1]
    assert seeds == sorted(seeds, reverse=True) and seeds[0] > seeds[-1]
    # No request holds two connections: never more than the concurrent requests.
    assert corrected_pool(1000, 100, concurrency=16) == 16


def test_hikari_and_deadlock_floor() -> None:
    assert hikari_pool(4) == 8
    assert hikari_pool(4, effective_spindles=2) == 10
    assert deadlock_floor(max_threads=8, connections_per_task=2) == 9
    assert deadlock_floor(max_threads=8, connections_per_task=1) == 1


def test_usl_formula_matches_worked_example() -> None:
    peak = usl_peak(CODAHALE_SIGMA, CODAHALE_KAPPA)
    assert int(peak) == 96
    assert usl_throughput(96, CODAHALE_SIGMA, CODAHALE_KAPPA, CODAHALE_LAMBDA) == pytest.approx(
        1883.76, abs=0.01
    )
    # The README's predictions at 10..300 clients.
    expected = [714.778987, 1721.000603, 1883.278957, 1808.481681, 1686.571797]
    got = usl_throughput(
        np.array([10, 50, 100, 150, 200]), CODAHALE_SIGMA, CODAHALE_KAPPA, CODAHALE_LAMBDA
    )
    np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_usl_fit_reproduces_codahale() -> None:
    fit = fit_usl(CODAHALE_N, CODAHALE_X)
    assert fit.sigma == pytest.approx(CODAHALE_SIGMA, rel=1e-3)
    assert fit.kappa == pytest.approx(CODAHALE_KAPPA, rel=1e-3)
    assert fit.lam == pytest.approx(CODAHALE_LAMBDA, rel=1e-3)
    assert int(fit.peak_n) == 96
    assert fit.peak_rps == pytest.approx(1883.76, rel=1e-3)
    assert 0.95 < fit.r2 <= 1


def test_usl_fit_recovers_generated_parameters() -> None:
    rng = np.random.default_rng(3)
    n = np.repeat([1, 2, 4, 8, 16, 32, 64, 96, 128, 192], 3).astype(float)
    x = usl_throughput(n, 0.0277, 0.000104, 89.99) * (1 + rng.normal(0, 0.01, n.size))
    fit = fit_usl(n, x)
    assert fit.sigma == pytest.approx(0.0277, rel=0.15)
    assert fit.kappa == pytest.approx(0.000104, rel=0.15)
    assert fit.lam == pytest.approx(89.99, rel=0.05)
    assert fit.peak_n == pytest.approx(96, rel=0.1)
    assert fit.r2 > 0.99


def test_usl_needs_six_distinct_points() -> None:
    with pytest.raises(ValueError, match="not enough points"):
        fit_usl([1, 2, 4, 8, 16, 16, 16], [10, 20, 39, 75, 140, 141, 139])


def test_usl_without_coherency_has_no_peak() -> None:
    n = np.array([1, 2, 4, 8, 16, 32], dtype=float)
    fit = fit_usl(n, usl_throughput(n, 0.05, 0.0, 100.0))
    assert fit.kappa == 0.0
    assert math.isinf(fit.peak_n)
    assert fit.peak_rps == pytest.approx(100 / 0.05, rel=0.01)
    assert 1 <= fit.knee_n() <= 32


def _erlang_c_direct(c: int, a: float) -> float:
    """Textbook closed form, an independent check of the recursion."""
    top = a**c / math.factorial(c) * c / (c - a)
    return top / (sum(a**k / math.factorial(k) for k in range(c)) + top)


def test_erlang_known_values() -> None:
    assert erlang_b(1, 1.0) == pytest.approx(0.5)
    assert erlang_c(2, 1.0) == pytest.approx(1 / 3)
    assert erlang_c(1, 0.7) == pytest.approx(0.7)  # M/M/1: P(wait) = utilisation
    for c, a in ((3, 2.0), (10, 8.5), (25, 20.0)):
        assert erlang_c(c, a) == pytest.approx(_erlang_c_direct(c, a), rel=1e-9)
    assert erlang_c(4, 4.0) == 1.0  # overloaded
    # Stable far beyond where factorials overflow a float.
    assert 0 < erlang_c(2000, 1950.0) < 1


def test_wait_tail_and_pool_choice() -> None:
    arrival_rps, hold_ms = 400.0, 50.0  # 20 Erlangs
    c = erlang_pool(arrival_rps, hold_ms, wait_ms=5)
    assert wait_tail(c, arrival_rps, hold_ms, 5) <= 0.01
    assert wait_tail(c - 1, arrival_rps, hold_ms, 5) > 0.01
    assert wait_tail(c, arrival_rps, hold_ms, 0) == pytest.approx(erlang_c(c, 20.0))
    p99 = wait_quantile_ms(c, arrival_rps, hold_ms, 0.99)
    assert p99 <= 5
    assert wait_tail(c, arrival_rps, hold_ms, p99) == pytest.approx(0.01, rel=1e-6) or p99 == 0
    assert math.isinf(wait_quantile_ms(20, arrival_rps, hold_ms))


def test_size_all_gives_every_model() -> None:
    inputs = SizingInputs(
        concurrency=32, queries_per_request=4, hold_time_ms=20, db_cores=4, peak_concurrency=40
    )
    results = {r.name: r for r in size_all(inputs, usl_note="needs a sweep", corrected=True)}
    assert list(results) == [
        "seed formula (mean in flight)",
        "seed formula (peak in flight)",
        "Little's law",
        "HikariCP",
        "USL fit",
        "Erlang C",
        "corrected formula",
    ]
    assert results["seed formula (mean in flight)"].pool_size == 12
    assert results["seed formula (peak in flight)"].pool_size == 15
    assert results["seed formula (peak in flight)"].inputs["concurrency"] == 40
    assert results["HikariCP"].pool_size == 8
    assert results["USL fit"].pool_size is None and results["USL fit"].note == "needs a sweep"
    # 32 concurrent requests each holding a connection for the whole request: 32 busy.
    assert results["corrected formula"].pool_size == 32
    assert results["Erlang C"].pool_size is not None and results["Erlang C"].pool_size > 32
    assert results["Little's law"].inputs == {
        "target_rps": 1600.0,
        "hold_time_ms": 20,
        "headroom": 1.2,
    }
    # Measured inputs make the corrected rule Little's law again: it is only on request.
    assert "corrected formula" not in {r.name for r in size_all(inputs)}


def _simulated_mean_wait_ms(servers: int, rate: float, hold_ms: float, n: int = 60_000) -> float:
    """FIFO G/G/c by simulation: Poisson arrivals, constant holds (M/D/c)."""
    rng = np.random.default_rng(7)
    arrivals = np.cumsum(rng.exponential(1000.0 / rate, n))
    free = [0.0] * servers  # when each connection is next free, as a heap
    waits = np.empty(n)
    for i, t in enumerate(arrivals):
        start = max(t, heapq.heappop(free))
        waits[i] = start - t
        heapq.heappush(free, start + hold_ms)
    return float(waits[n // 10 :].mean())  # drop the warm-up


def test_allen_cunneen_matches_a_simulated_m_d_c_queue() -> None:
    servers, rate, hold_ms = 4, 160.0, 20.0  # 80% busy
    mmc = mean_wait_ms(servers, rate, hold_ms)
    md_c = mean_wait_ms(servers, rate, hold_ms, allen_cunneen(1.0, 0.0))
    simulated = _simulated_mean_wait_ms(servers, rate, hold_ms)
    assert md_c == pytest.approx(mmc / 2)
    # Constant holds halve the M/M/c wait; Allen-Cunneen is within 10% of the simulation.
    assert md_c == pytest.approx(simulated, rel=0.10)
    assert mmc > 1.6 * simulated


def test_erlang_sizes_to_the_wait_budget_and_hold_variability() -> None:
    rate, hold_ms = 400.0, 20.0  # 8 Erlangs
    loose = erlang_pool(rate, hold_ms, wait_ms=50, quantile=0.95)
    strict = erlang_pool(rate, hold_ms, wait_ms=1, quantile=0.95)
    assert loose < strict
    constant = erlang_pool(rate, hold_ms, wait_ms=5, quantile=0.95, variability=0.5)
    exponential = erlang_pool(rate, hold_ms, wait_ms=5, quantile=0.95)
    assert 8 < constant <= exponential
    assert wait_tail(constant, rate, hold_ms, 5, 0.5) <= 0.05
    assert wait_tail(constant - 1, rate, hold_ms, 5, 0.5) > 0.05
