"""endpoints.csv: written by the sweep directory, read into `Sweep.endpoints` (no processes)."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

import pandas as pd

from poolbench import endpoint_figures, load_sweep
from poolbench.results import (
    ENDPOINTS_CSV_COLUMNS,
    ENDPOINTS_CSV_FILE,
    RUN_FILE,
    RUNS_DIR,
    RunRecord,
)
from poolbench.specfile import spec_from_dict
from poolbench.sweep.metadata import manifest
from poolbench.sweep.sweepdir import SweepDir

ORDERS = "POST /orders"
USERS = "GET /users/[id]"
SPEC = {
    "scenario": "mix",
    "grid": {"pool_size": [2, 4]},
    "slo": {"p95_ms": 100, "endpoints": {ORDERS: {"p95_ms": 300}}},
}


def endpoint(requests: int, failures: int, p95_ms: float) -> dict[str, Any]:
    return {
        "requests": requests,
        "failures": failures,
        "error_rate": failures / requests,
        "p50_ms": p95_ms / 2,
        "p95_ms": p95_ms,
        "p99_ms": p95_ms * 1.5,
        "mean_ms": p95_ms / 2,
    }


def write_sweep(root: Path, endpoints: list[dict[str, dict[str, Any]] | None]) -> SweepDir:
    """A sweep directory of the spec's points, each run with these endpoint figures."""
    spec = spec_from_dict(SPEC, source="endpoints.toml")
    sweep = SweepDir(root, spec.points(), manifest(spec, "endpoints.toml", None, 1, None))
    sweep.open(resume=False)
    for point, by_endpoint in zip(spec.points(), endpoints, strict=True):
        tmp = sweep.new_run(point)
        record: dict[str, Any] = {
            "format_version": 1,
            "run_id": point.run_id,
            "point": point.as_dict(),
            "figures": {"requests": 100, "failures": 1, "rps": 50.0, "p95_ms": 80.0},
        }
        if by_endpoint is not None:  # a run recorded before endpoints existed has none
            record["endpoints"] = by_endpoint
        sweep.commit_run(tmp, RunRecord.from_json(record), [])
    sweep.close("finished")
    return sweep


def test_endpoints_csv_has_a_row_per_run_and_endpoint_and_loads_typed(tmp_path: Path) -> None:
    runs = [
        {ORDERS: endpoint(20, 1, 412.0), USERS: endpoint(80, 0, 30.0)},
        {ORDERS: endpoint(20, 0, 250.0), USERS: endpoint(80, 1, 40.0)},
    ]
    sweep_dir = write_sweep(tmp_path, runs)
    with open(tmp_path / ENDPOINTS_CSV_FILE, newline="") as fh:
        reader = csv.DictReader(fh)
        assert tuple(reader.fieldnames or ()) == ENDPOINTS_CSV_COLUMNS
        rows = list(reader)
    run_ids = [p.run_id for p in sweep_dir.points]
    assert [(r["run_id"], r["endpoint"]) for r in rows] == [
        (run_ids[0], ORDERS),
        (run_ids[0], USERS),
        (run_ids[1], ORDERS),
        (run_ids[1], USERS),
    ]
    run_json = json.loads((tmp_path / RUNS_DIR / run_ids[0] / RUN_FILE).read_text())
    assert run_json["endpoints"][ORDERS]["p95_ms"] == 412.0

    sweep = load_sweep(tmp_path)
    assert list(sweep.endpoints.columns) == list(ENDPOINTS_CSV_COLUMNS)
    assert len(sweep.endpoints) == 4 and sweep.endpoints["p95_ms"].dtype == float
    first = endpoint_figures(sweep, run_ids[0])
    assert first[ORDERS]["requests"] == 20 and first[ORDERS]["error_rate"] == 0.05
    assert first[USERS]["p95_ms"] == 30.0
    # The spec's endpoint objective, through the manifest, judges each run.
    assert sweep.slo.endpoint_failure(first) == "POST /orders: p95 412.0 ms > 300 ms"
    assert sweep.slo.endpoint_failure(endpoint_figures(sweep, run_ids[1])) is None
    assert endpoint_figures(sweep, "no-such-run") == {}


def test_a_run_without_endpoint_figures_has_no_rows_and_fails_an_endpoint_slo(
    tmp_path: Path,
) -> None:
    write_sweep(tmp_path, [None, {ORDERS: endpoint(5, 0, 10.0)}])
    sweep = load_sweep(tmp_path)
    first, second = (p.run_id for p in spec_from_dict(SPEC, source="x").points())
    assert endpoint_figures(sweep, first) == {}
    assert sweep.slo.endpoint_failure(endpoint_figures(sweep, first)) == (
        "POST /orders: no request completed"
    )
    assert sweep.slo.endpoint_failure(endpoint_figures(sweep, second)) is None


def test_a_missing_endpoints_csv_is_an_empty_table(tmp_path: Path) -> None:
    write_sweep(tmp_path, [{ORDERS: endpoint(5, 0, 10.0)}] * 2)
    (tmp_path / ENDPOINTS_CSV_FILE).unlink()  # a sweep from before endpoints.csv
    sweep = load_sweep(tmp_path)
    assert sweep.endpoints.empty and list(sweep.endpoints.columns) == list(ENDPOINTS_CSV_COLUMNS)
    assert sweep.problems == []


def test_blanks_read_as_nan_and_names_stay_names(tmp_path: Path) -> None:
    write_sweep(tmp_path, [{ORDERS: endpoint(5, 0, 10.0)}] * 2)
    run_id = load_sweep(tmp_path).runs["run_id"].iloc[0]
    with open(tmp_path / ENDPOINTS_CSV_FILE, "a", newline="") as fh:
        csv.writer(fh).writerow([run_id, "NA", 0, 0, "", "", "", "", ""])
    sweep = load_sweep(tmp_path)
    figures = endpoint_figures(sweep, run_id)
    assert figures["NA"]["requests"] == 0 and math.isnan(figures["NA"]["p95_ms"])


def test_an_unreadable_endpoints_csv_is_a_problem_not_an_error(tmp_path: Path) -> None:
    write_sweep(tmp_path, [{ORDERS: endpoint(5, 0, 10.0)}] * 2)
    (tmp_path / ENDPOINTS_CSV_FILE).write_text("run_id,endpoint\nx,y\n")
    sweep = load_sweep(tmp_path)
    assert sweep.endpoints.empty
    assert any(ENDPOINTS_CSV_FILE in problem for problem in sweep.problems)
    assert isinstance(sweep.endpoints, pd.DataFrame)
