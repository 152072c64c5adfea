"""Per-endpoint figures from a real sweep: Postgres, app and Locust on loopback, a few seconds."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from poolbench import endpoint_figures, load_sweep
from poolbench.results import ENDPOINTS_CSV_COLUMNS, ENDPOINTS_CSV_FILE, RUN_FILE, RUNS_DIR
from tests.sweep.test_sweep import QUICK, only_dir, read_rows, run_sweep

USERS, ORDERS = "GET /users/[id]", "POST /orders"
# 4 users x 15 arrivals/s: ~120 requests in 2 s, so every weighted task of the mix shows up
# (POST /orders is 2 in 20: none at all has odds of 0.9^120, 3e-6); an endpoint objective
# nothing can meet.
MIX = ["--set", "scenario=mix", "--set", "open_model_rps=15", "--set", "grid.pool_size=[4]"]
MIX += ["--set", 'slo.endpoints={"POST /orders" = {p95_ms = 0.001}}']
MIX += ["--duration", "2", "--warmup", "1", "--users", "4", "--repetitions", "1", "--no-report"]


@pytest.mark.slow
def test_a_mix_keeps_its_figures_per_endpoint(tmp_path: Path) -> None:
    result = run_sweep(QUICK, "--out", str(tmp_path), *MIX, timeout=180)
    assert result.returncode == 0, result.stderr[-2000:]
    sweep_dir = only_dir(tmp_path)
    (run,) = read_rows(sweep_dir)[1]
    with open(sweep_dir / ENDPOINTS_CSV_FILE, newline="") as fh:
        reader = csv.DictReader(fh)
        assert tuple(reader.fieldnames or ()) == ENDPOINTS_CSV_COLUMNS
        rows = {row["endpoint"]: row for row in reader}
    assert {USERS, ORDERS} <= set(rows) and "-" not in rows, rows
    assert {row["run_id"] for row in rows.values()} == {run["run_id"]}
    # The same requests as the run's figures, split by endpoint.
    assert sum(int(row["requests"]) for row in rows.values()) == int(run["requests"]) > 0
    assert sum(int(row["failures"]) for row in rows.values()) == int(run["failures"])
    for row in rows.values():
        assert 0 < float(row["p50_ms"]) <= float(row["p95_ms"]) <= float(row["p99_ms"]), row
    run_json = json.loads((sweep_dir / RUNS_DIR / run["run_id"] / RUN_FILE).read_text())
    assert run_json["endpoints"][ORDERS]["requests"] == int(rows[ORDERS]["requests"])

    # The endpoint objective came through --set and the manifest, and judges the run.
    sweep = load_sweep(sweep_dir)
    figures = endpoint_figures(sweep, run["run_id"])
    assert set(figures) == set(rows)
    reason = sweep.slo.endpoint_failure(figures)
    assert reason is not None and reason.startswith(f"{ORDERS}: p95 "), reason
