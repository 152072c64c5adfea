"""Verdicts with known answers: SLO sweeps, out-of-sample models, both pools, inconclusive."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from poolbench import analyse, load_sweep, summary
from poolbench.analysis.synthetic import make_slo_sweep, make_sweep
from poolbench.cli import app

# An SLO sweep at 90 rps offered, SLO p95 130 ms, three repetitions per pool size. Pool 6 met
# the SLO in every repetition while serving a little less than pool 7 (Poisson noise).
RUNS = [
    *[(4, rep, 80.0, 900.0) for rep in (1, 2, 3)],
    (5, 1, 89.0, 120.0),
    (5, 2, 88.0, 210.0),
    (5, 3, 91.0, 125.0),
    (6, 1, 85.0, 87.0),
    (6, 2, 87.0, 94.0),
    (6, 3, 88.0, 90.0),
    *[(7, rep, 90.0, 60.0) for rep in (1, 2, 3)],
    *[(12, rep, 90.0, 40.0) for rep in (1, 2, 3)],
]


@pytest.fixture
def slo_sweep(tmp_path: Path) -> Path:
    return make_slo_sweep(tmp_path, RUNS)


def test_slo_optimum_is_the_smallest_config_meeting_it_in_every_repetition(
    slo_sweep: Path,
) -> None:
    analysis = analyse(load_sweep(slo_sweep))
    workload = analysis.headline
    assert workload.experiment == "slo"
    # Not ranked by throughput: 6 served 85-88 rps against 7's 90, within Poisson noise.
    assert analysis.recommended is not None and analysis.recommended["pool_size"] == 6
    assert workload.optimum.slo_met and analysis.verdict().startswith("PASS")
    # The next smaller one came close: 2 of 3 repetitions.
    assert "pool_size 5" in workload.optimum.next_smaller
    assert (
        "2 of 3" in workload.optimum.next_smaller
        and "p95 210.0 ms" in workload.optimum.next_smaller
    )


def test_pool_4_fails_for_serving_less_than_offered(tmp_path: Path) -> None:
    # p95 within the SLO is not enough: pool 4 served 70 of 90 rps, beyond 3 sigma of Poisson
    # noise in 6 s (+-11.6 rps): a growing backlog.
    runs = [(4, rep, 70.0, 100.0) for rep in (1, 2, 3)] + [
        (8, rep, 90.0, 40.0) for rep in (1, 2, 3)
    ]
    analysis = analyse(load_sweep(make_slo_sweep(tmp_path, runs)))
    assert analysis.recommended is not None and analysis.recommended["pool_size"] == 8
    assert "served 70.0 of 90.0 rps" in analysis.headline.optimum.next_smaller


def test_no_usl_on_slo_points(slo_sweep: Path) -> None:
    analysis = analyse(load_sweep(slo_sweep))
    assert analysis.headline.usl is None
    assert "capacity sweep" in analysis.headline.usl_note
    document = summary(analysis, [], [])
    assert document["workloads"][0]["usl"] is None
    usl = next(m for m in document["workloads"][0]["models"] if m["name"] == "USL fit")
    assert usl["pool_size"] is None


def test_models_are_fed_from_the_reference_run_out_of_sample(slo_sweep: Path) -> None:
    analysis = analyse(load_sweep(slo_sweep))
    workload = analysis.headline
    # The trusted run with the most connections that is not pool-bound: pool 12.
    assert workload.reference is not None and workload.reference["pool_size"] == 12
    document = summary(analysis, [], [])["workloads"][0]
    little = next(m for m in document["models"] if m["name"] == "Little's law")
    assert little["reference_run"] == workload.reference["run_id"]
    # Offered 90 rps x 21 ms = 1.9 busy; x 1.2 headroom -> 3: judged against the measured 6.
    assert little["inputs"] == {"target_rps": 90.0, "hold_time_ms": 21.0, "headroom": 1.2}
    assert little["pool_size"] == 3 and little["size_error"] == -3
    seed = next(m for m in document["models"] if m["name"] == "seed formula (mean in flight)")
    assert seed["inputs"]["concurrency"] == pytest.approx(90 * 0.021 + 0.5)
    assert seed["inputs"]["queries_per_request"] == 1
    erlang = next(m for m in document["models"] if m["name"] == "Erlang C")
    # The SLO's wait budget: 130 ms p95 minus the 40 ms service p95 at the ample pool.
    assert erlang["inputs"]["wait_budget_ms"] == pytest.approx(90.0)
    assert erlang["inputs"]["wait_quantile"] == 0.95
    assert erlang["inputs"]["hold_time_cv"] == pytest.approx(0.1)


def test_fleet_budget_counts_both_pools(tmp_path: Path) -> None:
    # 12 processes; max_connections 220 - 3 reserved = 217 -> 18 per process. Pool 10 fits on its
    # own (12 x 10 = 120 <= 217) but not with its asyncpg pool of 10 (12 x 20 = 240); pool 8 does
    # (12 x 18 = 216).
    fleet = {"instances": 6, "workers_per_instance": 2, "max_connections": 220,
             "reserved_connections": 3}  # fmt: skip
    sweep = make_sweep(tmp_path, pool_sizes=(4, 8, 10), max_overflows=(0,), fleet=fleet)
    analysis = analyse(load_sweep(sweep))
    assert analysis.fleet is not None and analysis.fleet.per_process == 18
    rec = analysis.recommended
    assert rec is not None and rec["connections"] + rec["pg_max_size"] <= 18
    assert not analysis.fleet.fits(10 + 10) and analysis.fleet.fits(10)
    document = summary(analysis, [], [])["fleet"]
    assert document["recommended_per_process"] == rec["connections"] + 10


def test_every_run_untrusted_is_inconclusive_and_exits_3(tmp_path: Path) -> None:
    sweep = make_slo_sweep(tmp_path, RUNS, bottleneck="host_cpu")
    analysis = analyse(load_sweep(sweep))
    assert analysis.headline.optimum.inconclusive and analysis.recommended is None
    assert analysis.verdict().startswith("INCONCLUSIVE")
    assert "--workers" in analysis.headline.optimum.reason
    runner = CliRunner()
    for command in ("analyze", "report", "recommend"):
        result = runner.invoke(app, [command, str(sweep), "--json", str(tmp_path / "s.json")])
        assert result.exit_code == 3, (command, result.output)
        assert "inconclusive" in result.stderr
    document = json.loads((tmp_path / "s.json").read_text())
    assert document["workloads"][0]["inconclusive"] is True


def test_when_only_the_semaphore_varies_the_smallest_adequate_limit_wins(tmp_path: Path) -> None:
    sweep = make_sweep(tmp_path, pool_sizes=(8,), max_overflows=(0,), http_limits=(2, 5, 10, 20))
    analysis = analyse(load_sweep(sweep))
    rec = analysis.recommended
    # The limit does not change this workload's throughput (within noise): the smallest one.
    assert rec is not None and rec["http_concurrency_limit"] == 2
    assert "smallest http_concurrency_limit" in analysis.headline.optimum.reason
