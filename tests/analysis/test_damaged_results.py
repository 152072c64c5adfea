"""Damaged results: a torn runs.csv, a corrupt manifest, a sweep cut off (no processes).

run.json is the truth; runs.csv is an index of it that a crash or a full disk can cut.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from poolbench import load_sweep
from poolbench.analysis.synthetic import make_sweep
from poolbench.results import MANIFEST_FILE, RUNS_CSV_FILE, RunRecord
from poolbench.specfile import spec_from_dict
from poolbench.sweep.metadata import manifest
from poolbench.sweep.sweepdir import SweepDir

SPEC = {"scenario": "single_query", "grid": {"pool_size": [2, 4, 8]}}
BOTTLENECKS = {2: "pool", 4: "pool", 8: "none"}


def write_sweep(root: Path, *, status: str = "finished") -> SweepDir:
    """A sweep directory whose runs went through SweepDir, as a real sweep's do."""
    spec = spec_from_dict(SPEC, source="damaged.toml")
    sweep = SweepDir(root, spec.points(), manifest(spec, "damaged.toml", None, 1, None))
    sweep.open(resume=False)
    for point in spec.points():
        tmp = sweep.new_run(point)
        figures: dict[str, Any] = {
            "requests": 1000,
            "failures": 0,
            "rps": 20.0 * point.pool_size,
            "p95_ms": 400.0 / point.pool_size,
            "bottleneck": BOTTLENECKS[point.pool_size],
        }
        record = {"run_id": point.run_id, "point": point.as_dict(), "figures": figures}
        sweep.commit_run(tmp, RunRecord.from_json(record), [])
    sweep.close(status)
    return sweep


def cut(path: Path, at: str) -> None:
    """Cut a file just after the first occurrence of `at` (a write torn mid-line)."""
    text = path.read_text()
    path.write_text(text[: text.index(at) + len(at)])


def by_pool(root: Path) -> dict[int, str]:
    runs = load_sweep(root).runs
    return dict(zip(runs["pool_size"].astype(int), runs["bottleneck"], strict=True))


def test_a_row_cut_inside_a_label_is_rebuilt_from_run_json(tmp_path: Path) -> None:
    write_sweep(tmp_path)
    text = (tmp_path / RUNS_CSV_FILE).read_text()
    last = text.splitlines()[-2]  # the pool-4 row: its label is "pool"
    assert last.endswith(",pool")
    cut(tmp_path / RUNS_CSV_FILE, last[:-2])  # "...,po": once read as the label "none"
    sweep = load_sweep(tmp_path)
    assert by_pool(tmp_path) == BOTTLENECKS
    assert any("is torn: skipped" in p and "line 3" in p for p in sweep.problems), sweep.problems
    assert any("lacks run p8" in p and "rebuilt from its run.json" in p for p in sweep.problems)


def test_a_row_naming_no_finished_run_is_skipped(tmp_path: Path) -> None:
    write_sweep(tmp_path)
    path = tmp_path / RUNS_CSV_FILE
    lines = path.read_text().splitlines(keepends=True)
    # A cut inside a run id, stitched to the next row by a later append: a phantom run.
    phantom = lines[1].replace("p2-", "p2x-", 1)
    path.write_text("".join([lines[0], phantom, *lines[1:]]))
    sweep = load_sweep(tmp_path)
    assert sorted(sweep.runs["run_id"]) == sorted(r.split(",")[0] for r in lines[1:])
    assert any("names run p2x-" in p and "no finished run" in p for p in sweep.problems)


def test_a_hand_made_table_keeps_whole_rows_only(tmp_path: Path) -> None:
    sweep_dir = make_sweep(tmp_path)  # flat run.json files: runs.csv is all there is
    path = sweep_dir / RUNS_CSV_FILE
    whole = len(load_sweep(sweep_dir).runs)
    text = path.read_text()
    path.write_text(text[: text.rindex(",")])  # the last row loses its last cell
    sweep = load_sweep(sweep_dir)
    assert len(sweep.runs) == whole - 1
    assert any("is torn: skipped" in p for p in sweep.problems), sweep.problems


@pytest.mark.parametrize("damage", ["{not json", '["a list"]', '{"status": "finished"}'])
def test_a_corrupt_manifest_does_not_stop_the_analysis(tmp_path: Path, damage: str) -> None:
    write_sweep(tmp_path)
    (tmp_path / MANIFEST_FILE).write_text(damage)
    sweep = load_sweep(tmp_path)
    assert len(sweep.runs) == 3 and sweep.spec is None
    assert any("SLO and fleet unknown" in p for p in sweep.problems), sweep.problems


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        ({"status": "running", "runner": {"pid": 1, "host": "elsewhere"}}, "was cut off"),
        ({"status": "interrupted"}, "was interrupted"),
        (
            {"status": "failed", "failed_runs": [{"run_id": "p4-x", "error": "the database went"}]},
            "stopped when run p4-x failed: the database went",
        ),
    ],
)
def test_an_unfinished_sweep_says_how_it_ended(
    tmp_path: Path, edit: dict[str, Any], expected: str
) -> None:
    write_sweep(tmp_path)
    path = tmp_path / MANIFEST_FILE
    path.write_text(json.dumps(json.loads(path.read_text()) | edit))
    problems = load_sweep(tmp_path).problems
    assert any(expected in p and "3 of 3 runs finished" in p for p in problems), problems


def test_a_finished_sweep_has_no_such_problem(tmp_path: Path) -> None:
    write_sweep(tmp_path)
    assert load_sweep(tmp_path).problems == []
