"""The adaptive search's choice of runs on simulated verdicts (a real sweep: test_sweep_modes)."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import pytest

from poolbench.errors import UsageError
from poolbench.results import RunRecord
from poolbench.spec import ADAPTIVE, Point, SweepSpec
from poolbench.specfile import load_spec
from poolbench.sweep.search import FAIL, PASS, UNTRUSTED, AdaptiveSearch, run_verdict
from tests.conftest import ROOT

QUICK = ROOT / "bench" / "poolbench" / "specs" / "quick.toml"
SIZES = [1, 2, 3, 4, 5, 6, 8]


def spec(**overrides: Any) -> SweepSpec:
    """quick.toml at 3 repetitions: 21 grid runs."""
    return load_spec(QUICK, {"search": ADAPTIVE, "timing.repetitions": 3, **overrides})


def record(passed: bool, bottleneck: str = "pool") -> RunRecord:
    """A finished run's record, as far as the verdict reads it: 100 rps offered over 6 s."""
    return RunRecord(
        run_id="run",
        figures={
            "rps": 100.0 if passed else 70.0,
            "p95_ms": 40.0 if passed else 900.0,
            "error_rate": 0.0,
            "dropped_arrivals": 0,
            "inflight_at_end": 2,
            "bottleneck": bottleneck,
        },
    )


def search_with(
    sweep: SweepSpec, passes: Callable[[Point], bool]
) -> tuple[list[Point], dict[str, RunRecord]]:
    """Run the search to its end, every run's verdict from `passes`; return the runs in order."""
    search = AdaptiveSearch.of(sweep.points(), sweep.slo, sweep.timing.repetitions)
    finished: dict[str, RunRecord] = {}
    ran = []
    while (point := search.next_point(finished)) is not None:
        assert point.run_id not in finished, "a run chosen twice"
        ran.append(point)
        finished[point.run_id] = record(passes(point))
        assert len(ran) <= len(sweep.points())
    return ran, finished


def grid_optimum(sweep: SweepSpec, passes: Callable[[Point], bool]) -> int | None:
    """What the full grid says: the smallest size that passed every repetition."""
    verdicts: dict[int, list[bool]] = {}
    for point in sweep.points():
        verdicts.setdefault(point.pool_size, []).append(passes(point))
    return min((size for size, v in verdicts.items() if all(v)), default=None)


def search_optimum(ran: list[Point], finished: dict[str, RunRecord], reps: int) -> int | None:
    runs: dict[int, list[bool]] = {}
    for point in ran:
        runs.setdefault(point.pool_size, []).append(record(True) == finished[point.run_id])
    return min((s for s, v in runs.items() if len(v) == reps and all(v)), default=None)


def test_the_verdict_of_a_run_is_the_analysis_verdict() -> None:
    sweep = spec()
    point = sweep.points()[0]
    assert run_verdict(point, record(True), sweep.slo) == PASS
    assert run_verdict(point, record(False), sweep.slo) == FAIL
    # A run a CPU limited says nothing about the pool: it never counts as a pass.
    assert run_verdict(point, record(True, "app_cpu"), sweep.slo) == UNTRUSTED
    assert run_verdict(point, record(False, "load_generator"), sweep.slo) == UNTRUSTED


@pytest.mark.parametrize("boundary", [*SIZES, 99])
@pytest.mark.parametrize("repetitions", [2, 3])
def test_a_monotone_boundary_is_found_in_at_most_40_percent_of_the_runs(
    boundary: int, repetitions: int
) -> None:
    sweep = spec(**{"timing.repetitions": repetitions})

    def passes(point: Point) -> bool:
        return point.pool_size >= boundary

    ran, finished = search_with(sweep, passes)
    assert search_optimum(ran, finished, repetitions) == grid_optimum(sweep, passes)
    assert len(ran) <= 0.4 * len(sweep.points()), [p.run_id for p in ran]
    # Repetitions only at the answer: every other size ran once.
    repeated = {p.pool_size for p in ran if p.repetition > 1}
    assert repeated <= {grid_optimum(sweep, passes)}


def test_a_failed_confirmation_moves_the_answer_up_one_size() -> None:
    sweep = spec()

    def passes(point: Point) -> bool:
        # Pool 3 passes its first repetition by luck and fails its second.
        if point.pool_size == 3:
            return point.repetition == 1
        return point.pool_size >= 4

    ran, finished = search_with(sweep, passes)
    assert search_optimum(ran, finished, 3) == 4 == grid_optimum(sweep, passes)
    # The top, then bisection: 3 passes once, 1 and 2 fail, 3 fails its confirmation, 4 holds.
    assert [p.run_id.split("-")[0] + p.run_id[-3:] for p in ran] == [
        "p8-r1", "p3-r1", "p1-r1", "p2-r1", "p3-r2", "p4-r1", "p4-r2", "p4-r3"
    ]  # fmt: skip


def test_noisy_verdicts_land_within_one_size_of_the_grid() -> None:
    """Noise as a sweep has it: the two sizes at the boundary pass a run by chance (30%)."""
    sweep = spec()
    rng = random.Random(7)
    within, runs, trials = 0, 0, 300
    for _ in range(trials):
        boundary = rng.choice(SIZES[1:])
        below = SIZES[SIZES.index(boundary) - 1]
        luck = {p.run_id: rng.random() < 0.3 for p in sweep.points()}

        def passes(
            point: Point, boundary: int = boundary, below: int = below, luck: dict = luck
        ) -> bool:
            if point.pool_size in (below, boundary):
                return luck[point.run_id] if point.pool_size == below else not luck[point.run_id]
            return point.pool_size > boundary

        ran, finished = search_with(sweep, passes)
        found, truth = search_optimum(ran, finished, 3), grid_optimum(sweep, passes)
        if found is None or truth is None:
            within += found == truth  # nothing met the SLO
        else:
            within += abs(SIZES.index(found) - SIZES.index(truth)) <= 1
        runs += len(ran)
    assert within >= 0.95 * trials
    assert runs / trials <= 0.4 * len(sweep.points())


def test_the_search_resumes_from_the_finished_runs_alone() -> None:
    sweep = spec()

    def passes(point: Point) -> bool:
        return point.pool_size >= 5

    ran, finished = search_with(sweep, passes)
    # A new search object given the first three runs carries on with the same fourth.
    search = AdaptiveSearch.of(sweep.points(), sweep.slo, 3)
    partial = {p.run_id: finished[p.run_id] for p in ran[:3]}
    assert search.next_point(partial) == ran[3]


def test_each_workload_is_searched_and_capacity_points_run_in_full() -> None:
    sweep = load_spec(
        QUICK,
        {
            "search": ADAPTIVE,
            "kind": "both",
            "grid.queries_per_request": [1, 2],
            "timing.repetitions": 1,
        },
    )

    def passes(point: Point) -> bool:
        return point.pool_size >= 2 * point.queries_per_request

    ran, _ = search_with(sweep, passes)
    capacity = [p for p in sweep.points() if p.experiment == "capacity"]
    assert set(capacity) <= set(ran)
    for queries, answer in ((1, 2), (2, 4)):
        slo_runs = [p for p in ran if p.experiment == "slo" and p.queries_per_request == queries]
        assert min(p.pool_size for p in slo_runs if passes(p)) == answer
        assert len(slo_runs) < len(SIZES)


def test_a_capacity_sweep_has_no_boundary_to_search_and_runs_in_full() -> None:
    capacity = load_spec(QUICK, {"open_model_rps": 0, "timing.repetitions": 1})
    assert capacity.search == ADAPTIVE and capacity.kind == "capacity"
    ran, _ = search_with(capacity, lambda point: False)
    assert ran == capacity.points()
    with pytest.raises(UsageError, match="search: must be one of grid, adaptive"):
        load_spec(QUICK, {"search": "binary"})
