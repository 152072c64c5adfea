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
    # The window came from poolbench.load's listeners (window_plugin.py, beside the user's file).
    assert 1.5 < run["window"]["window_s"] < 5  # --duration 2, on a busy host
    assert run["figures"]["latency_source"] == "hdr"
    assert list(run["endpoints"]) == ["GET /users/[id]"]
    manifest = json.loads((sweep_dir / "manifest.json").read_text())
    assert manifest["spec"]["locustfile"] == str(mine)
