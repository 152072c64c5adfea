"""run.json and manifest.json as records: both ways, older files, and who knows the sample app."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from poolbench.results import (
    FORMAT_VERSION,
    MANIFEST_FILE,
    RUN_FILE,
    RUNS_DIR,
    Manifest,
    RunRecord,
    finished_runs,
)
from poolbench.shipped import SPECS_DIR
from poolbench.spec import Point, SweepSpec
from poolbench.specfile import load_spec
from poolbench.sweep.managed import app_env, point_settings
from poolbench.sweep.metadata import manifest
from poolbench.sweep.sweepdir import SweepDir

PACKAGE = Path(__file__).resolve().parents[2] / "bench" / "poolbench"
# The keys a run.json has had since format 2 (what the analysis and the tests read).
RUN_KEYS = {
    "format_version", "run_id", "point", "figures", "window", "locust_processes",
    "locust_workers", "remote_workers", "locust_requests", "open_model", "requests_by_name",
    "endpoints", "sampler_errors", "app_worker_requests", "max_processes", "finished_at",
}  # fmt: skip


def closed() -> tuple[Point, SweepSpec]:
    spec = load_spec(SPECS_DIR / "quick.toml", {"open_model_rps": 0, "timing.repetitions": 1})
    return spec.points()[0], spec


def a_record(**overrides: object) -> RunRecord:
    point, _ = closed()
    values: dict[str, object] = {
        "run_id": point.run_id,
        "point": point.as_dict(),
        "figures": {"rps": 12.5, "p95_ms": 40.0, "bottleneck": "pool"},
        "window": {"start_epoch": 1.0, "end_epoch": 3.0, "window_s": 2.0, "exact": True},
        "locust_processes": 1,
        "endpoints": {"GET /users/[id]": {"requests": 10, "p95_ms": 40.0}},
        "sampler_errors": ("pg: gone",),
        "finished_at": "2026-01-01T00:00:00+00:00",
    }
    return RunRecord(**(values | overrides))  # type: ignore[arg-type]


def test_a_run_record_reads_back_what_it_wrote() -> None:
    record = a_record()
    data = json.loads(json.dumps(record.as_json()))
    assert set(data) == RUN_KEYS and data["format_version"] == FORMAT_VERSION
    assert RunRecord.from_json(data) == record


def test_the_prometheus_fallback_keys_are_written_only_when_it_was_used() -> None:
    plain = a_record().as_json()
    assert "telemetry_source" not in plain and "telemetry_missing" not in plain
    fallback = a_record(telemetry_source="/metrics", telemetry_missing=("peak_checked_out",))
    data = json.loads(json.dumps(fallback.as_json()))
    assert data["telemetry_source"] == "/metrics"
    assert data["telemetry_missing"] == ["peak_checked_out"]
    assert RunRecord.from_json(data) == fallback


def test_an_older_or_hand_made_run_json_still_reads() -> None:
    record = RunRecord.from_json({"format_version": 1, "run_id": "p2", "figures": {"rps": 1}})
    assert record.format_version == 1 and record.endpoints == {} and record.point == {}
    # Keys a newer writer added are skipped, not an error.
    assert RunRecord.from_json({"run_id": "p2", "figures": {}, "new_key": 1}).run_id == "p2"


@pytest.mark.parametrize(
    "data",
    [[], {"figures": {}}, {"run_id": "p2"}, {"run_id": "p2", "figures": []}],
    ids=["not an object", "no run_id", "no figures", "figures not an object"],
)
def test_a_run_json_that_is_no_finished_run_is_refused(data: object) -> None:
    with pytest.raises(ValueError):
        RunRecord.from_json(data)


def test_finished_runs_skips_what_is_no_finished_run(tmp_path: Path) -> None:
    good, other = tmp_path / RUNS_DIR / "p2", tmp_path / RUNS_DIR / "p4"
    for run_dir in (good, other):
        run_dir.mkdir(parents=True)
    (good / RUN_FILE).write_text(json.dumps({"run_id": "p2", "figures": {"rps": 1}}))
    (other / RUN_FILE).write_text('{"run_id": "p4", "fig')  # torn
    assert list(finished_runs(tmp_path)) == ["p2"]


def test_a_manifest_reads_back_and_writes_later_keys_only_once_they_happen() -> None:
    _, spec = closed()
    new = manifest(spec, "quick.toml", None, 1, None)
    data = json.loads(json.dumps(new.as_json()))
    assert data["status"] == "running" and data["format_version"] == FORMAT_VERSION
    assert not {"resumed_at", "failed_runs", "finished_runs"} & set(data)
    assert Manifest.from_json(data) == new


def test_a_sweep_directory_writes_its_manifest_and_runs_through_the_records(
    tmp_path: Path,
) -> None:
    point, spec = closed()
    sweep = SweepDir(tmp_path, [point], manifest(spec, "quick.toml", None, 1, None))
    sweep.open(resume=False)
    sweep.commit_run(sweep.new_run(point), a_record(), [])
    sweep.fail_run(sweep.new_run(point), point, "the database went away", [])
    sweep.close("failed")
    written = Manifest.read(tmp_path)
    assert written is not None and written.finished_runs == 1
    assert written.ending() == f"stopped when run {point.run_id} failed: the database went away"
    assert finished_runs(tmp_path) == {point.run_id: a_record()}
    resumed = SweepDir(tmp_path, [point], manifest(spec, "quick.toml", None, 1, None))
    resumed.open(resume=True)
    data = json.loads((tmp_path / MANIFEST_FILE).read_text())
    assert len(data["resumed_at"]) == 1 and len(data["failed_runs"]) == 1
    assert data["started_at"] == written.started_at and resumed.todo() == []


def test_a_hand_made_manifest_reads_and_a_bad_version_does_not() -> None:
    assert Manifest.from_json({"spec": {"scenario": "single_query"}}).ending() is None
    with pytest.raises(ValueError, match="format_version"):
        Manifest.from_json({"format_version": "two"})


def test_the_sample_apps_settings_come_from_its_target_module() -> None:
    point, spec = closed()
    env = app_env(point, spec, database_url="postgresql+asyncpg://x/y", downstream_url="http://d")
    assert env["DB_POOL_SIZE"] == str(point.pool_size)
    assert point_settings(point).items() <= env.items()


def imports_of(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_only_the_managed_target_imports_the_sample_app() -> None:
    importers = {
        str(path.relative_to(PACKAGE))
        for path in PACKAGE.rglob("*.py")
        if any(name.startswith("poolbench.sample_app") for name in imports_of(path))
    }
    assert importers == {"sweep/managed.py"}
