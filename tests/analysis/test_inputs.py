"""One builder of the models' inputs: a sweep's reference run and a live window alike."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from poolbench.analysis.analyse import analyse
from poolbench.analysis.inputs import (
    CONCURRENCY,
    HOLD_TIME,
    HOLD_TIME_CV,
    QUERIES,
    Measured,
    SizingOptions,
    StandIn,
    measured_inputs,
)
from poolbench.analysis.load import load_sweep
from poolbench.analysis.synthetic import make_sweep
from poolbench.results import RUNS_CSV_FILE

OPTIONS = SizingOptions(db_cores=4)


def figures(**overrides: Any) -> Measured:
    values: dict[str, Any] = {
        "concurrency": 6.0,
        "queries_per_request": 2.0,
        "hold_time_ms": 20.0,
        "target_rps": 200.0,
        "hold_time_cv": 0.3,
    }
    return Measured(**(values | overrides))


def test_measured_figures_feed_every_model() -> None:
    built = measured_inputs(figures(), OPTIONS)
    assert built.missing == frozenset() and built.notes == ()
    assert built.inputs.hold_time_cv == 0.3 and built.inputs.wait_quantile == 0.99
    assert all(m.pool_size is not None for m in built.models() if m.name != "USL fit")


def test_an_unmeasured_figure_without_a_stand_in_blanks_the_models_that_need_it() -> None:
    # A sweep's reference run without users once fed the seed formula 1 request in flight.
    built = measured_inputs(figures(concurrency=None, queries_per_request=0), OPTIONS)
    assert built.missing == {CONCURRENCY, QUERIES}
    models = {m.name: m for m in built.models()}
    seed = models["seed formula (mean in flight)"]
    assert seed.pool_size is None
    assert seed.note == "missing input: concurrency, queries_per_request"
    assert models["Little's law"].pool_size is not None


def test_a_stand_in_is_used_only_when_the_figure_is_missing_and_is_named() -> None:
    stand_ins = {
        CONCURRENCY: StandIn(value=24.0, note="concurrency is the spec's users"),
        HOLD_TIME: StandIn(value=30.0, note="hold time is the mean request time"),
    }
    built = measured_inputs(figures(hold_time_ms=0, stand_ins=stand_ins), OPTIONS)
    assert built.inputs.concurrency == 6.0  # measured: the stand-in is not used
    assert built.inputs.hold_time_ms == 30.0  # a 0 ms hold is no measurement
    assert built.notes == ("hold time is the mean request time",)


def test_the_slo_sets_erlang_cs_budget_when_the_service_time_is_known() -> None:
    built = measured_inputs(figures(service_p95_ms=90.0), OPTIONS, slo_p95_ms=250.0)
    assert (built.inputs.wait_budget_ms, built.inputs.wait_quantile) == (160.0, 0.95)
    # A live window has no service p95: Erlang C keeps the p99 budget even with an SLO.
    live = measured_inputs(figures(), OPTIONS, slo_p95_ms=250.0)
    assert (live.inputs.wait_budget_ms, live.inputs.wait_quantile) == (OPTIONS.p99_wait_ms, 0.99)


def test_workers_share_the_load_one_pool_each() -> None:
    built = measured_inputs(figures(workers=2, peak_concurrency=10.0), OPTIONS)
    assert (built.inputs.concurrency, built.inputs.peak_concurrency) == (3.0, 5.0)
    assert built.inputs.target_rps == 100.0 and "2 workers" in built.note


def test_a_sweep_without_hold_time_cv_says_so_as_observe_does(tmp_path: Path) -> None:
    # analyze once sized Erlang C for exponential holds here, where observe said it could not.
    sweep_dir = make_sweep(tmp_path, max_overflows=(0,), history=False)
    path = sweep_dir / RUNS_CSV_FILE
    with path.open() as fh:
        rows = list(csv.DictReader(fh))
    for row in rows:
        row[HOLD_TIME_CV] = ""
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    workload = analyse(load_sweep(sweep_dir)).headline
    erlang = next(c.model for c in workload.models if c.model.name == "Erlang C")
    assert erlang.pool_size is None and erlang.note == "missing input: hold_time_cv"
    little = next(c.model for c in workload.models if c.model.name == "Little's law")
    assert little.pool_size is not None
    assert workload.inputs is not None and "not measured: hold_time_cv" in workload.inputs_note
