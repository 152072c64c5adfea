"""Loading, aggregation, optimum, thresholds and the analysis commands on synthetic sweeps."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from scipy import stats
from typer.testing import CliRunner

from poolbench import Fleet, Slo, aggregate, analyse, find_optimum, load_sweep, parse_threshold
from poolbench.analysis.synthetic import SECRET, make_sweep, write_locust_stats
from poolbench.cli import app
from poolbench.errors import UsageError
from tests.conftest import ROOT

runner = CliRunner()


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_sweep(tmp_path_factory.mktemp("sweeps"))


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from poolbench.cli import main; main()", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )


# --- load and aggregate --------------------------------------------------------------------


def test_load_and_aggregate(sweep_dir: Path) -> None:
    sweep = load_sweep(sweep_dir)
    assert sweep.source == "sweep" and len(sweep.runs) == 60
    assert sweep.spec is not None and sweep.spec.slo.p95_ms == 250
    assert len(sweep.history_paths) == 60
    table = aggregate(sweep.runs)
    assert len(table) == 20
    row = table[(table["pool_size"] == 8) & (table["max_overflow"] == 0)].iloc[0]
    reps = sweep.runs[(sweep.runs["pool_size"] == 8) & (sweep.runs["max_overflow"] == 0)]
    assert row["reps"] == 3
    assert row["rps"] == pytest.approx(reps["rps"].mean())
    half = stats.t.ppf(0.975, 2) * reps["rps"].std(ddof=1) / math.sqrt(3)
    assert row["rps_ci"] == pytest.approx(half)
    assert row["p95_ms_ci"] > 0


def test_untrusted_repetition_is_left_out_of_the_mean(sweep_dir: Path) -> None:
    table = aggregate(load_sweep(sweep_dir).runs)
    row = table[(table["pool_size"] == 48) & (table["max_overflow"] == 4)].iloc[0]
    assert row["reps"] == 2 and row["excluded_reps"] == 1
    assert row["bottleneck"] == "none"


def test_manifest_secrets_are_scrubbed_on_load(sweep_dir: Path) -> None:
    manifest = json.dumps(load_sweep(sweep_dir).manifest)
    assert SECRET not in manifest
    assert "bench:***@" in manifest


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda d: None, "no runs.csv"),
        (lambda d: (d / "runs.csv").write_text(""), "empty file"),
        (lambda d: (d / "runs.csv").write_text("run_id,rps\nx,1\n"), "missing required columns"),
        (
            lambda d: (d / "runs.csv").write_text(
                "run_id,repetition,pool_size,max_overflow,rps,p95_ms\nx,1,2,0,fast,10\n"
            ),
            "line 2: rps is not a number",
        ),
        (
            lambda d: (d / "runs.csv").write_text(
                "run_id,repetition,pool_size,max_overflow,rps,p95_ms\nx,1,2\n"
            ),
            r"no runs \(runs.csv line 2 \(x\) is torn",
        ),
    ],
)
def test_bad_sweep_dirs_are_usage_errors(tmp_path: Path, setup, message: str) -> None:  # type: ignore[no-untyped-def]
    setup(tmp_path)
    with pytest.raises(UsageError, match=message):
        load_sweep(tmp_path)


def test_cli_bad_input_is_one_error_line(tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "runs.csv").write_bytes(b"run_id,rps\n\x00\x01\x02,1,2,3\n")
    for args in (
        ("analyze", str(tmp_path / "missing")),
        ("report", str(corrupt)),
        ("analyze", str(tmp_path)),  # a directory with no runs.csv
    ):
        result = _cli(*args)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2, result.stderr
        assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
        assert "Traceback" not in result.stderr


def test_cli_runner_bad_input(tmp_path: Path) -> None:
    result = runner.invoke(app, ["recommend", str(tmp_path / "nope")])
    assert result.exit_code == 2
    assert result.stderr.startswith("error:") and len(result.stderr.strip().splitlines()) == 1


# --- optimum -------------------------------------------------------------------------------


def _table(rows: list[tuple[float, float, float, float, str]]) -> pd.DataFrame:
    """(connections, rps, p95_ms, error_rate, bottleneck) rows as an aggregated table."""
    frame = pd.DataFrame(rows, columns=["connections", "rps", "p95_ms", "error_rate", "bottleneck"])
    frame["pool_size"] = frame["connections"]
    frame["max_overflow"] = 0.0
    return frame


CURVE = [
    (2, 200, 400, 0.0, "pool"),
    (4, 400, 180, 0.0, "pool"),
    (8, 760, 90, 0.0, "pool"),
    (16, 790, 80, 0.0, "none"),
    (32, 800, 78, 0.0, "none"),
    (64, 900, 70, 0.0, "load_generator"),
]


def test_optimum_is_smallest_within_tolerance() -> None:
    slo = Slo(p95_ms=200, max_error_rate=0.01)
    optimum = find_optimum(_table(CURVE), slo)
    assert optimum.row is not None and optimum.row["connections"] == 8
    assert optimum.slo_met and optimum.best_rps == 800  # the load-generator-bound run is ignored
    assert optimum.excluded_configs == 1
    strict = find_optimum(_table(CURVE), slo, tolerance=0.0)
    assert strict.row is not None and strict.row["connections"] == 32
    loose = find_optimum(_table(CURVE), slo, tolerance=0.6)
    assert loose.row is not None and loose.row["connections"] == 4


def test_optimum_respects_slo() -> None:
    rows = [*CURVE[:3], (16, 790, 80, 0.05, "none"), (32, 800, 300, 0.0, "none")]
    optimum = find_optimum(_table(rows), Slo(p95_ms=100, max_error_rate=0.01))
    assert optimum.row is not None and optimum.row["connections"] == 8
    failing = find_optimum(_table(CURVE), Slo(p95_ms=10))
    assert not failing.slo_met
    assert "no config meets the SLO" in failing.reason


def test_optimum_prefers_configs_in_fleet_budget() -> None:
    fleet = Fleet(instances=2, workers_per_instance=2, max_connections=30, reserved_connections=2)
    assert fleet.per_process == 7
    optimum = find_optimum(_table(CURVE), Slo.unset(), fleet)
    assert optimum.row is not None and optimum.row["connections"] == 4
    assert optimum.fits_fleet is True and "break the fleet budget" in optimum.reason
    tiny = Fleet(instances=4, workers_per_instance=4, max_connections=20, reserved_connections=3)
    broken = find_optimum(_table(CURVE), Slo.unset(), tiny)
    assert broken.fits_fleet is False


def test_fleet_overrides(tmp_path: Path) -> None:
    spec_fleet = Fleet(instances=2, workers_per_instance=4, max_connections=200)
    fleet = spec_fleet.with_overrides(instances=3, reserved_connections=None)
    assert (fleet.instances, fleet.workers_per_instance, fleet.reserved_connections) == (3, 4, 3)
    assert fleet.fits(16) and not fleet.fits(17)  # 12 processes x 16 = 192 <= 197
    with pytest.raises(UsageError):
        Fleet().with_overrides(max_connections=3, reserved_connections=3)
    locust = load_sweep(write_locust_stats(tmp_path / "run"))
    assert locust.fleet() is None and locust.fleet(instances=2) is not None


def test_analysis_of_synthetic_sweep(sweep_dir: Path) -> None:
    sweep = load_sweep(sweep_dir)
    analysis = analyse(sweep)
    rec = analysis.recommended
    assert rec is not None and rec["connections"] == 24 and rec["max_overflow"] == 0
    assert analysis.verdict().startswith("PASS")
    assert analysis.headline.usl is not None
    names = {c.model.name: c for c in analysis.headline.models}
    assert "corrected formula" not in names  # with measured inputs it is Little's law again
    # Fed from the reference run (an ample pool, not pool-bound), judged against the optimum.
    reference = analysis.headline.reference
    assert reference is not None and reference["bottleneck"] == "none"
    assert reference["connections"] == 52  # 48 + 4: the largest trusted config
    seed = names["seed formula (mean in flight)"]
    assert seed.model.inputs["concurrency"] == pytest.approx(24, rel=0.01)  # measured in flight
    assert seed.model.pool_size == 36 and seed.size_error == 12  # 24 / 1 query x 1.5
    assert any("load-generator-bound" in w for w in analysis.warnings)
    assert any("pool timeouts" in w for w in analysis.warnings)


def test_seed_formula_error_grows_with_queries(tmp_path: Path) -> None:
    sweep = load_sweep(make_sweep(tmp_path, queries=(1, 2, 4), history=False))
    analysis = analyse(sweep)
    by_queries = {w.key["queries_per_request"]: w for w in analysis.workloads}
    seed = [by_queries[q].models[0].model.pool_size for q in (1.0, 2.0, 4.0)]
    optimum = [by_queries[q].optimum.row["connections"] for q in (1.0, 2.0, 4.0)]  # type: ignore[index]
    assert seed == [36, 18, 9]
    # Every user holds a connection for its whole request whatever the query count.
    assert all(o >= 20 for o in optimum)
    assert by_queries[4.0].models[0].size_error < -10  # type: ignore[operator]


def test_not_enough_pool_sizes_for_usl(tmp_path: Path) -> None:
    sweep = load_sweep(make_sweep(tmp_path, pool_sizes=(2, 4, 8), history=False))
    analysis = analyse(sweep)
    assert analysis.headline.usl is None
    assert "not enough points" in analysis.headline.usl_note
    assert any("USL fit skipped" in w for w in analysis.warnings)


# --- thresholds ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "metric", "op", "value"),
    [
        ("p95_ms>200", "p95_ms", ">", 200),
        (" error_rate >= 0.01 ", "error_rate", ">=", 0.01),
        ("rps<1e3", "rps", "<", 1000),
        ("p99_ms<=.5", "p99_ms", "<=", 0.5),
        ("p50_ms==3", "p50_ms", "==", 3),
    ],
)
def test_threshold_parsing(text: str, metric: str, op: str, value: float) -> None:
    threshold = parse_threshold(text)
    assert (threshold.metric, threshold.op, threshold.value) == (metric, op, value)


@pytest.mark.parametrize("text", ["p95>200", "p95_ms=>200", "p95_ms>", "p95_ms>abc", "", "rps!=1"])
def test_bad_thresholds(text: str) -> None:
    with pytest.raises(UsageError, match="bad threshold"):
        parse_threshold(text)


def test_threshold_exit_codes(sweep_dir: Path) -> None:
    failing = runner.invoke(
        app, ["analyze", str(sweep_dir), "--fail-on", "p95_ms>1", "--fail-on", "rps<1"]
    )
    assert failing.exit_code == 1
    assert failing.stderr.strip().splitlines() == [
        line for line in failing.stderr.strip().splitlines() if line.startswith("threshold failed")
    ]
    assert "threshold failed: p95_ms>1" in failing.stderr and "rps<1" not in failing.stderr
    passing = runner.invoke(app, ["analyze", str(sweep_dir), "--fail-on", "p95_ms>100000"])
    assert passing.exit_code == 0, passing.stderr
    bad = _cli("analyze", str(sweep_dir), "--fail-on", "p95>>1")
    assert bad.returncode == 2
    assert bad.stderr.startswith("error: bad threshold") and len(bad.stderr.splitlines()) == 1


def test_analyze_output_and_json(sweep_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "summary.json"
    result = runner.invoke(
        app, ["analyze", str(sweep_dir), "--json", str(out), "--fail-on", "error_rate>0.5"]
    )
    assert result.exit_code == 0, result.stderr
    assert "Recommended: pool_size=24 max_overflow=0" in result.stdout
    assert "Sizing models vs measured optimum" in result.stdout
    document = json.loads(out.read_text())
    assert document["recommendation"]["pool_size"] == 24
    assert document["slo"]["met"] is True
    models = document["workloads"][0]["models"]
    assert {m["name"] for m in models} >= {"seed formula (mean in flight)", "USL fit"}
    assert all("inputs" in m and m["reference_run"] for m in models)
    assert document["thresholds"] == [
        {"threshold": "error_rate>0.5", "actual": 0.0, "failed": False}
    ]


def test_fleet_override_flags_budget(sweep_dir: Path) -> None:
    result = runner.invoke(
        app, ["analyze", str(sweep_dir), "--instances", "10", "--workers-per-instance", "4"]
    )
    assert result.exit_code == 0, result.stderr
    # 40 processes share 97 connections: 2 each; the smallest measured config is 1.
    assert "10 instances x 4 workers" in result.stdout
    assert "fleet budget" in result.stdout


# --- recommend, size, compare, plain Locust ------------------------------------------------


def test_recommend_snippet(sweep_dir: Path) -> None:
    result = runner.invoke(app, ["recommend", str(sweep_dir), "--idle-timeout-s", "300"])
    assert result.exit_code == 0, result.stderr
    text = result.stdout
    for expected in (
        "DB_POOL_SIZE=24",
        "DB_MAX_OVERFLOW=0",
        "DB_POOL_TIMEOUT_S=1",
        "DB_POOL_RECYCLE_S=240",
        "DB_POOL_PRE_PING=true",
        "pool_size=24,",
        "pool_pre_ping=True,",
        "statement_cache_size",
        "server_idle_timeout",
        # Both pools count: the asyncpg pool, unused by this workload, is kept at 2.
        "PG_POOL_MAX_SIZE=2",
        "# fleet (both pools, 24 + 2 per process): "
        "1 instances x 2 workers x 26 connections = 52 <= 100 - 3 reserved = 97",
    ):
        assert expected in text, expected
    assert SECRET not in text


def test_size_command(tmp_path: Path) -> None:
    out = tmp_path / "size.json"
    args = ["size", "--concurrency", "32", "--queries-per-request", "4", "--per-query-ms", "5"]
    result = runner.invoke(
        app, [*args, "--db-cores", "4", "--max-connections", "100", "--json", str(out)]
    )
    assert result.exit_code == 0, result.stderr
    assert "seed formula" in result.stdout and "corrected formula" in result.stdout
    models = {m["name"]: m for m in json.loads(out.read_text())["models"]}
    assert models["seed formula (mean in flight)"]["pool_size"] == 12  # 32 / 4 x 1.5
    assert models["HikariCP"]["pool_size"] == 8
    assert models["corrected formula"]["pool_size"] == 32
    assert models["corrected formula"]["fits_fleet"] is True
    missing = runner.invoke(app, ["size", "--concurrency", "8"])
    assert missing.exit_code == 2 and missing.stderr.startswith("error: give --hold-time-ms")


def _scaled_copy(source: Path, target: Path, factor: float) -> Path:
    target.mkdir()
    (target / "manifest.json").write_text((source / "manifest.json").read_text())
    runs = pd.read_csv(source / "runs.csv")
    runs["rps"] = runs["rps"] * factor
    runs["p95_ms"] = runs["p95_ms"] / factor
    runs.to_csv(target / "runs.csv", index=False)
    return target


def test_compare(sweep_dir: Path, tmp_path: Path) -> None:
    after = _scaled_copy(sweep_dir, tmp_path / "after-20250102-120000", 1.25)
    out = tmp_path / "cmp.html"
    result = runner.invoke(app, ["compare", str(sweep_dir), str(after), "--out", str(out)])
    assert result.exit_code == 0, result.stderr
    assert "+25.0%" in result.stdout and "-20.0%" in result.stdout
    assert result.stdout.strip().splitlines()[-1] == str(out)
    html = out.read_text()
    assert 'class="cell-better"' in html and 'class="cell-worse"' not in html
    assert sweep_dir.name in html and after.name in html


def test_plain_locust_csv(tmp_path: Path) -> None:
    stats_csv = write_locust_stats(tmp_path / "run1", rps=120, p95_ms=180)
    for target in (tmp_path / "run1", stats_csv):
        sweep = load_sweep(target)
        assert sweep.source == "locust" and sweep.runs.loc[0, "p95_ms"] == 180
    result = runner.invoke(app, ["analyze", str(tmp_path / "run1"), "--fail-on", "p95_ms>100"])
    assert result.exit_code == 1
    assert "plain Locust output" in result.stdout
    assert "threshold failed: p95_ms>100 (p95_ms = 180" in result.stderr
    report = runner.invoke(app, ["report", str(stats_csv), "--out", str(tmp_path / "r.html")])
    assert report.exit_code == 0, report.stderr
    assert 'data-chart="timeseries"' in (tmp_path / "r.html").read_text()
    no_pool = runner.invoke(app, ["recommend", str(stats_csv)])
    assert no_pool.exit_code == 2 and "no pool config" in no_pool.stderr


def test_models_are_skipped_for_a_workload_that_holds_no_connection(tmp_path: Path) -> None:
    from poolbench import analyse, load_sweep

    sweep_dir = make_sweep(tmp_path, history=False)
    runs_csv = sweep_dir / "runs.csv"
    frame = pd.read_csv(runs_csv)
    frame["peak_checked_out"] = 0  # a fan-out handler: never checks out a DB connection
    frame["hold_time_mean_ms"] = 0.0
    frame.to_csv(runs_csv, index=False)
    analysis = analyse(load_sweep(sweep_dir))
    assert analysis.headline.models == []
    assert any("no run checked out a database connection" in w for w in analysis.warnings)
