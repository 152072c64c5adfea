"""Before/after comparison: Welch's t-test verdicts with known answers, and `compare` exit codes."""

from __future__ import annotations

import math
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from poolbench.analysis.compare import MATCH_COLUMNS, compare_tables
from poolbench.analysis.synthetic import make_sweep
from tests.conftest import ROOT

TIGHT = np.array([100.0, 101.0, 99.0])  # mean 100, sample variance 1
TIGHTER = np.array([100.0, 100.1, 99.9])  # mean 100, sample variance 0.01
WIDE = np.array([50.0, 100.0, 150.0])  # mean 100, sample variance 2500


def _runs(
    pool_size: int,
    rps: Sequence[float],
    *,
    p95_ms: Sequence[float] | None = None,
    error_rate: Sequence[float] | None = None,
    bottleneck: Sequence[str] | None = None,
    duration_s: int = 10,
) -> pd.DataFrame:
    """One config's repetitions as runs.csv rows (only the columns a comparison reads)."""
    n = len(rps)
    return pd.DataFrame(
        dict.fromkeys(MATCH_COLUMNS, 0)
        | {
            "scenario": "single_query",
            "pool_size": pool_size,
            "duration_s": duration_s,
            "rps": np.asarray(rps, dtype=float),
            "p95_ms": np.asarray(p95_ms if p95_ms is not None else [50.0] * n, dtype=float),
            "p99_ms": 80.0,
            "error_rate": np.asarray(error_rate if error_rate is not None else [0.0] * n),
            "bottleneck": list(bottleneck) if bottleneck is not None else ["pool"] * n,
        }
    )


def _row(before: pd.DataFrame, after: pd.DataFrame, **options: float) -> dict:
    deltas = compare_tables(before, after, **options)
    assert len(deltas) == 1
    return deltas.iloc[0].to_dict()


# --- verdicts with known answers -----------------------------------------------------------


def test_a_tight_ten_percent_drop_is_significant_and_worse() -> None:
    row = _row(_runs(4, TIGHT), _runs(4, TIGHT * 0.9))
    assert row["rps_delta_pct"] == pytest.approx(-10.0)
    assert row["rps_p"] < 0.001
    assert row["rps_change"] == "worse"
    assert (row["reps_before"], row["reps_after"]) == (3, 3)


def test_welch_p_value_by_hand_and_by_scipy() -> None:
    before, after = TIGHT, TIGHT - 10  # means 100 and 90, both sample variances 1
    row = _row(_runs(4, before), _runs(4, after))
    # Welch: t = 10 / sqrt(1/3 + 1/3); df = (2/3)^2 / ((1/3)^2/2 + (1/3)^2/2) = 4.
    t = 10 / math.sqrt(2 / 3)
    assert row["rps_p"] == pytest.approx(2 * stats.t.sf(t, 4))
    assert row["rps_p"] == pytest.approx(2.5522e-4, rel=1e-3)
    assert row["rps_p"] == pytest.approx(stats.ttest_ind(before, after, equal_var=False).pvalue)


def test_better_is_up_for_throughput_and_down_for_latency() -> None:
    row = _row(
        _runs(4, TIGHT, p95_ms=TIGHT / 2),
        _runs(4, TIGHT * 1.1, p95_ms=TIGHT / 2 * 0.9),
    )
    assert (row["rps_change"], row["p95_change"]) == ("better", "better")
    worse = _row(_runs(4, TIGHT, p95_ms=TIGHT / 2), _runs(4, TIGHT, p95_ms=TIGHT / 2 * 1.1))
    assert (worse["rps_change"], worse["p95_change"]) == ("same", "worse")
    assert worse["p95_delta_pct"] == pytest.approx(10.0) and worse["p95_p"] < 0.001


def test_the_same_ten_percent_with_a_huge_spread_is_not_significant() -> None:
    row = _row(_runs(4, WIDE), _runs(4, WIDE * 0.9))
    assert row["rps_delta_pct"] == pytest.approx(-10.0)
    assert row["rps_p"] > 0.5
    assert row["rps_change"] == "same"
    # A lax enough significance level calls it.
    assert _row(_runs(4, WIDE), _runs(4, WIDE * 0.9), alpha=0.9)["rps_change"] == "worse"


def test_a_significant_change_below_the_tolerance_is_the_same() -> None:
    row = _row(_runs(4, TIGHTER), _runs(4, TIGHTER * 0.98))
    assert row["rps_delta_pct"] == pytest.approx(-2.0)
    assert row["rps_p"] < 0.001
    assert row["rps_change"] == "same"
    lower = _row(_runs(4, TIGHTER), _runs(4, TIGHTER * 0.98), threshold_pct=1)
    assert lower["rps_change"] == "worse"


def test_one_repetition_is_untested() -> None:
    row = _row(_runs(4, [100.0]), _runs(4, TIGHT * 0.5))
    assert row["rps_delta_pct"] == pytest.approx(-50.0)
    assert math.isnan(row["rps_p"]) and math.isnan(row["p95_p"])
    assert (row["rps_change"], row["p95_change"], row["error_change"]) == ("untested",) * 3


def test_untrusted_runs_are_left_out_of_the_test() -> None:
    cpu_bound = _runs(4, [*TIGHT, 10.0], bottleneck=["pool"] * 3 + ["host_cpu"])
    row = _row(cpu_bound, _runs(4, TIGHT * 0.9))
    clean = _row(_runs(4, TIGHT), _runs(4, TIGHT * 0.9))
    assert (row["reps_before"], row["excluded_reps_before"]) == (3, 1)
    assert row["rps_before"] == pytest.approx(100.0)
    assert row["rps_p"] == pytest.approx(clean["rps_p"])
    only_untrusted = _runs(4, TIGHT, bottleneck=["load_generator"] * 3)
    untested = _row(only_untrusted, _runs(4, TIGHT * 0.5))
    assert (untested["reps_before"], untested["excluded_reps_before"]) == (0, 3)
    assert untested["rps_before"] == pytest.approx(100.0)  # shown, as analyze shows it
    assert untested["rps_change"] == "untested"


def test_errors_appearing_are_worse_and_no_errors_is_the_same() -> None:
    row = _row(_runs(4, TIGHT), _runs(4, TIGHT, error_rate=[0.02, 0.03, 0.025]))
    assert row["error_change"] == "worse" and row["error_p"] < 0.05
    assert row["error_delta"] == pytest.approx(0.025)
    quiet = _row(_runs(4, TIGHT), _runs(4, TIGHT))
    assert quiet["error_change"] == "same" and math.isnan(quiet["error_p"])


def test_configs_match_across_durations_and_only_when_in_both() -> None:
    before = pd.concat([_runs(2, TIGHT), _runs(4, TIGHT)])
    after = pd.concat([_runs(4, TIGHT * 0.9, duration_s=30), _runs(8, TIGHT)])
    deltas = compare_tables(before, after)
    assert deltas["pool_size"].tolist() == [4]
    assert deltas.loc[0, "rps_change"] == "worse"


# --- the command -----------------------------------------------------------------------------


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from poolbench.cli import main; main()", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )


def _sweep(root: Path, name: str, *, p95_factor_at_pool_4: float = 1.0) -> Path:
    """A small synthetic sweep (same seed, so same figures); pool 4's p95 scaled."""
    sweep = make_sweep(
        root, name=name, pool_sizes=(2, 4, 8), max_overflows=(0,), history=False, seed=11
    )
    runs = pd.read_csv(sweep / "runs.csv")
    runs.loc[runs["pool_size"] == 4, "p95_ms"] *= p95_factor_at_pool_4
    runs.to_csv(sweep / "runs.csv", index=False)
    return sweep


def test_compare_fails_on_a_significant_regression(tmp_path: Path) -> None:
    before = _sweep(tmp_path, "base-20250101-120000")
    after = _sweep(tmp_path, "slow-20250102-120000", p95_factor_at_pool_4=1.25)
    p95 = [pd.read_csv(s / "runs.csv").query("pool_size == 4")["p95_ms"] for s in (before, after)]
    p_value = stats.ttest_ind(*p95, equal_var=False).pvalue
    p_clause = "p<0.001" if p_value < 0.001 else f"p={p_value:.3f}"
    out = tmp_path / "cmp.html"
    args = ["compare", str(before), str(after), "--out", str(out)]

    failed = _cli(*args, "--fail-on-regression")
    assert failed.returncode == 1, failed.stderr
    assert f"regression: pool_size=4 max_overflow=0: p95 +25.0% ({p_clause})" in failed.stderr
    assert failed.stderr.count("regression:") == 1
    assert failed.stdout.strip().splitlines()[-1] == str(out)
    assert "+25.0% worse" in failed.stdout and "untested" not in failed.stdout
    assert "Untrusted runs (bottleneck app_cpu, host_cpu, load_generator) left out" in (
        failed.stdout
    )
    html = out.read_text()
    assert 'class="cell-worse"' in html and "+25.0% worse" in html
    assert f"pool_size=4 max_overflow=0: p95 +25.0% ({p_clause.replace('<', '&lt;')})" in html

    passed = _cli(*args)
    assert passed.returncode == 0, passed.stderr
    assert "regression: pool_size=4" in passed.stderr
