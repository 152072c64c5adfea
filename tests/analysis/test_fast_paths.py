"""The vectorised analysis paths give what the simple per-row definitions give."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from poolbench.analysis.aggregate import (
    CONFIG_COLUMNS,
    aggregate,
    group_mode,
    matching,
    mode,
    t_quantiles,
    untrusted,
)
from poolbench.analysis.load import load_sweep
from poolbench.analysis.optimum import config_verdicts, run_failure
from poolbench.analysis.synthetic import make_slo_sweep


def test_group_mode_is_each_groups_mode_ties_to_the_first_seen() -> None:
    rng = np.random.default_rng(3)
    groups = pd.Series(rng.integers(0, 60, 600))
    values = pd.Series(rng.choice(["pool", "none", "app_cpu", "load_generator"], 600))
    values[rng.random(600) < 0.1] = None
    expected = [mode(values[groups == g].dropna()) for g in range(60)]
    assert group_mode(values, groups).tolist() == expected
    # Two of each: the value seen first wins, as value_counts() orders ties.
    assert group_mode(pd.Series(["b", "a", "a", "b"]), pd.Series([0, 0, 0, 0])).tolist() == ["b"]


def test_t_quantiles_are_scipy_stats() -> None:
    counts = pd.Series([1, 2, 3, 5, 30])
    expected = [np.nan] + [stats.t.ppf(0.975, n - 1) for n in (2, 3, 5, 30)]
    assert np.array_equal(t_quantiles(counts).to_numpy(), np.array(expected), equal_nan=True)


def test_config_verdicts_match_a_scan_of_every_run(tmp_path: Path) -> None:
    runs = [(pool, rep, 90.0 - (pool == 2) * 12 * rep, 60.0 + 50 / pool) for pool in (2, 3, 5)
            for rep in (1, 2, 3)]  # fmt: skip
    sweep = load_sweep(make_slo_sweep(tmp_path, runs, slo_p95_ms=84))
    frame = sweep.runs.copy()
    frame.loc[frame["run_id"] == "p3-o0-s20-u30-q1-r2", "bottleneck"] = "app_cpu"
    table = aggregate(frame)
    keys = [c for c in CONFIG_COLUMNS if c in frame.columns]
    got = config_verdicts(table, frame, sweep.slo, CONFIG_COLUMNS)
    trusted = frame[~untrusted(frame)]
    for verdict, row in zip(got, table.to_dict("records"), strict=True):
        same = trusted[matching(trusted, {k: row[k] for k in keys})]
        assert verdict.failures == [run_failure(r, sweep.slo) for r in same.to_dict("records")]
    # Pool 2's p95 (85 ms) misses 84 ms every time; pool 3 has two trusted repetitions left.
    assert [(v.passed, len(v.failures)) for v in got] == [(0, 3), (2, 2), (3, 3)]
