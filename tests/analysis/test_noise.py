"""'Cannot be told apart': the optimum against its neighbour, from the repetitions' spread."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from poolbench import analyse, load_sweep, render_analysis
from poolbench.analysis.noise import Interval
from poolbench.analysis.synthetic import make_slo_sweep
from poolbench.cli import app

# Pool 2 misses the 100 ms SLO in one repetition of three, pool 3 meets it in all: pool 3 is the
# optimum, yet their p95 intervals overlap and pool 3's contains the limit.
CLOSE = [
    *((2, rep, 90.0, p95) for rep, p95 in ((1, 95.0), (2, 105.0), (3, 90.0))),
    *((3, rep, 90.0, p95) for rep, p95 in ((1, 92.0), (2, 88.0), (3, 96.0))),
    *((5, rep, 90.0, p95) for rep, p95 in ((1, 70.0), (2, 72.0), (3, 71.0))),
]
# Pool 2 is far over the limit, pool 3 far under it with a tight spread.
APART = [
    *((2, rep, 90.0, p95) for rep, p95 in ((1, 300.0), (2, 310.0), (3, 305.0))),
    *((3, rep, 90.0, p95) for rep, p95 in ((1, 60.0), (2, 62.0), (3, 61.0))),
]


def test_overlapping_pair_cannot_be_told_apart(tmp_path: Path) -> None:
    analysis = analyse(load_sweep(make_slo_sweep(tmp_path, CLOSE, slo_p95_ms=100)))
    noise = analysis.headline.noise
    assert analysis.recommended is not None and analysis.recommended["pool_size"] == 3
    assert noise is not None and noise.neighbour == "pool 2"
    assert noise.apart is False and noise.slo_within_noise is True
    # p95 92.0 (sd 4, t 4.303 over sqrt 3: +- 9.9) vs 96.7 (sd 7.6: +- 19.0).
    assert noise.lines[0] == (
        "pool 3 and pool 2: p95 92.0 +- 9.9 ms vs 96.7 +- 19 ms, 90.0 +- 0.0 rps vs "
        "90.0 +- 0.0 rps, cannot be told apart at 3 repetitions"
    )
    assert "the SLO verdict is within noise at 3 repetitions" in noise.lines[1]


def test_clearly_apart_pair_is_told_apart(tmp_path: Path) -> None:
    analysis = analyse(load_sweep(make_slo_sweep(tmp_path, APART, slo_p95_ms=130)))
    noise = analysis.headline.noise
    assert noise is not None and noise.apart is True and noise.apart_on == "p95_ms"
    assert noise.slo_within_noise is False
    assert noise.lines == [
        "pool 3 and pool 2: p95 61.0 +- 2.5 ms vs 305 +- 12 ms, 90.0 +- 0.0 rps vs "
        "90.0 +- 0.0 rps, told apart on p95 at 3 repetitions"
    ]


def test_one_repetition_says_the_spread_is_unknown(tmp_path: Path) -> None:
    runs = [(2, 1, 90.0, 150.0), (3, 1, 90.0, 80.0)]
    noise = analyse(load_sweep(make_slo_sweep(tmp_path, runs, slo_p95_ms=100))).headline.noise
    assert noise is not None and noise.apart is None and noise.slo_within_noise is None
    assert "spread unknown with 1 repetition" in noise.lines[0]
    assert "spread unknown at 1 repetition" in noise.lines[1]


def test_interval_overlap_and_containment() -> None:
    a = Interval(mean=82, half_width=9, reps=3)
    assert a.overlaps(Interval(mean=78, half_width=11, reps=3)) is True
    assert a.overlaps(Interval(mean=100, half_width=8.9, reps=3)) is False
    assert a.overlaps(Interval(mean=100, half_width=None, reps=1)) is None
    assert a.contains(90) is True and a.contains(92) is False


def test_verdict_in_analyze_json_and_report(tmp_path: Path) -> None:
    sweep = make_slo_sweep(tmp_path, CLOSE, slo_p95_ms=100)
    out = tmp_path / "summary.json"
    result = CliRunner().invoke(app, ["analyze", str(sweep), "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert "noise: pool 3 and pool 2:" in result.output
    assert "cannot be told apart at 3 repetitions" in " ".join(result.output.split())
    noise = json.loads(out.read_text())["workloads"][0]["noise"]
    assert noise["apart"] is False and noise["slo_within_noise"] is True
    html = render_analysis(analyse(load_sweep(sweep)), tmp_path / "r.html").read_text()
    assert "Noise: pool 3 and pool 2:" in html and "cannot be told apart" in html
