"""A locustfile of the user's own, anywhere on disk, with nothing poolbench-specific in it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.sweep.test_sweep import QUICK, TINY_ONE, only_dir, read_rows, run_sweep
from tests.test_spec import PLAIN_LOCUSTFILE


@pytest.mark.slow
def test_a_plain_locustfile_runs_with_the_measured_window(tmp_path: Path) -> None:
    mine = tmp_path / "elsewhere" / "shop_load.py"
    mine.parent.mkdir()
    mine.write_text(PLAIN_LOCUSTFILE)
    out = tmp_path / "results"
    result = run_sweep(QUICK, "--out", str(out), *TINY_ONE, "--locustfile", str(mine))
    assert result.returncode == 0, result.stderr[-2000:]
    sweep_dir = only_dir(out)
    (row,) = read_rows(sweep_dir)[1]
    assert row["scenario"] == "shop_load" and int(row["requests"]) > 50
    assert float(row["failures"]) == 0
    run = json.loads((sweep_dir / "runs" / row["run_id"] / "run.json").read_text())
    # The window came from poolbench.load's listeners (own_locustfile.py ran the user's file).
    assert 1.5 < run["window"]["window_s"] < 5  # --duration 2, on a busy host
    assert run["figures"]["latency_source"] == "hdr"
    assert list(run["endpoints"]) == ["GET /users/[id]"]
    manifest = json.loads((sweep_dir / "manifest.json").read_text())
    assert manifest["spec"]["locustfile"] == str(mine)


WEIGHTED_LOCUSTFILE = """\
from locust import HttpUser, task

STARTS = []


class Shopper(HttpUser):
    def on_start(self):
        # once per simulated client: a login would go here
        self.client.get("/users/1", name="login")

    @task(3)
    def user(self):
        self.client.get("/users/1", name="/users/[id]")

    @task(1)
    def orders(self):
        self.client.get("/users/1/orders", name="/users/[id]/orders")
"""


@pytest.mark.slow
def test_a_plain_locustfile_runs_in_the_open_model(tmp_path: Path) -> None:
    """Its users become Poisson arrivals: on_start once per client, tasks by weight."""
    mine = tmp_path / "weighted.py"
    mine.write_text(WEIGHTED_LOCUSTFILE)
    out = tmp_path / "results"
    tiny = [arg.replace("open_model_rps=0", "open_model_rps=20") for arg in TINY_ONE]
    tiny += ["--duration", "4", "--locustfile", str(mine)]
    result = run_sweep(QUICK, "--out", str(out), *tiny)
    assert result.returncode == 0, result.stderr[-2000:]
    sweep_dir = only_dir(out)
    (row,) = read_rows(sweep_dir)[1]
    assert row["experiment"] == "slo" and float(row["offered_rps"]) == 80  # 4 users x 20/s
    run = json.loads((sweep_dir / "runs" / row["run_id"] / "run.json").read_text())
    endpoints = run["endpoints"]
    # The logins ran before the window (one per client, in the warm-up), never as arrivals.
    assert "GET login" not in endpoints
    served = {name: endpoints[name]["requests"] for name in endpoints}
    assert set(served) == {"GET /users/[id]", "GET /users/[id]/orders"}
    total = sum(served.values())
    assert 55 < total / run["window"]["window_s"] < 105  # 80/s offered
    assert 0.6 < served["GET /users/[id]"] / total < 0.9  # weights 3:1
    assert run["open_model"]["rps_per_user"] == 20 and not run["open_model"]["cap_reached"]
