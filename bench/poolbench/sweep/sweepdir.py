"""A sweep's directory: the manifest, resume, atomic run directories, runs.csv, endpoints.csv."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from poolbench.errors import UsageError
from poolbench.results import (
    ENDPOINTS_CSV_FILE,
    FAILED_DIR,
    LOGS_DIR,
    MANIFEST_FILE,
    RUN_FILE,
    RUNS_CSV_FILE,
    RUNS_DIR,
    WORKER_SCRIPT,
    csv_row,
    endpoint_rows,
    finished_runs,
    read_manifest,
    still_running,
    sweep_ending,
    write_endpoints_csv,
    write_json,
    write_runs_csv,
)
from poolbench.secrets import MASK, dsn_password, redact_files, scrub_secrets
from poolbench.spec import Point
from poolbench.sweep.metadata import now


class SweepDir:
    """One results directory: manifest.json, runs.csv, endpoints.csv, `runs/<run_id>/`, `logs/`.

    A run is written to `runs/.<run_id>.tmp` and renamed when complete, so a run directory
    exists only once it is whole; `--resume` skips every run_id that has one.
    """

    def __init__(self, root: Path, points: list[Point], manifest: dict[str, Any]) -> None:
        self.root = root
        self.points = points
        self.manifest = manifest
        self.runs_dir = root / RUNS_DIR
        self.logs = root / LOGS_DIR
        self.runs: dict[str, dict[str, Any]] = {}
        # How the sweep being resumed ended, when it did not finish (see results.sweep_ending).
        self.previous_ending: str | None = None

    def open(self, *, resume: bool) -> SweepDir:
        """Create the directories, write the manifest, drop half-written runs, load the rest."""
        try:
            for directory in (self.runs_dir, self.logs):
                directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UsageError(f"{self.root}: cannot create the results directory: {exc}") from None
        previous = read_manifest(self.root) if resume else None
        if previous is not None:
            if still_running(previous):
                pid = previous["runner"]["pid"]
                raise UsageError(f"{self.root}: process {pid} is still sweeping it; stop it first")
            self.previous_ending = sweep_ending(previous)
            self.manifest["started_at"] = previous.get("started_at", self.manifest["started_at"])
            self.manifest["resumed_at"] = [*previous.get("resumed_at", []), now()]
            self.manifest["failed_runs"] = previous.get("failed_runs", [])
        write_json(self.root / MANIFEST_FILE, self.manifest)
        for stale in self.runs_dir.glob(".*.tmp"):
            shutil.rmtree(stale, ignore_errors=True)  # a run cut short last time
        self.runs = finished_runs(self.root)
        return self

    def todo(self) -> list[Point]:
        """The points without a finished run, in run order."""
        return [p for p in self.points if p.run_id not in self.runs]

    def new_run(self, point: Point) -> Path:
        """An empty temporary directory for a run about to be measured."""
        tmp = self.runs_dir / f".{point.run_id}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        return tmp

    def commit_run(self, tmp: Path, record: dict[str, Any], dsns: list[str]) -> None:
        """Write run.json, scrub the DSNs' passwords, rename into place, update the tables."""
        run_id = record["run_id"]
        write_json(tmp / RUN_FILE, record)
        for dsn in dsns:
            redact_files(tmp, dsn)
        final = self.runs_dir / run_id
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        self.runs[run_id] = record
        self.write_runs_csv()
        self.write_endpoints_csv()

    def fail_run(self, tmp: Path, point: Point, cause: str, dsns: list[str]) -> Path:
        """Keep a failed run's files under logs/failed/ and record why in the manifest.

        The run gets no run directory, so the analysis never sees it and `--resume` redoes it.
        """
        for dsn in dsns:
            redact_files(tmp, dsn)
            if password := dsn_password(dsn):
                cause = cause.replace(password, MASK)
        kept = self.logs / FAILED_DIR / f"{point.run_id}-{now().replace(':', '')}"
        kept.parent.mkdir(exist_ok=True)
        os.replace(tmp, kept)
        failure = {"run_id": point.run_id, "error": scrub_secrets(cause), "at": now()}
        self.manifest["failed_runs"] = [*self.manifest.get("failed_runs", []), failure]
        return kept

    def rows(self) -> Iterator[dict[str, Any]]:
        """runs.csv rows of the finished runs, in point order."""
        for point in self.points:
            if point.run_id in self.runs:
                yield csv_row(point.as_dict(), self.runs[point.run_id]["figures"])

    def write_runs_csv(self) -> None:
        """Rewrite runs.csv from the finished runs."""
        write_runs_csv(self.root / RUNS_CSV_FILE, self.rows())

    def endpoint_rows(self) -> Iterator[dict[str, Any]]:
        """endpoints.csv rows of the finished runs, in point order (none for older runs)."""
        for point in self.points:
            if point.run_id in self.runs:
                yield from endpoint_rows(point.run_id, self.runs[point.run_id].get("endpoints", {}))

    def write_endpoints_csv(self) -> None:
        """Rewrite endpoints.csv from the finished runs."""
        write_endpoints_csv(self.root / ENDPOINTS_CSV_FILE, self.endpoint_rows())

    def close(self, status: str) -> None:
        """Rewrite the tables and record how the sweep ended in the manifest."""
        self.write_runs_csv()
        self.write_endpoints_csv()
        self.manifest |= {"finished_at": now(), "status": status, "finished_runs": len(self.runs)}
        write_json(self.root / MANIFEST_FILE, self.manifest)

    def write_worker_script(self, run_id: str, count: int, command: str) -> Path:
        """Write the next run's remote worker command where a user (or a loop) can pick it up."""
        path = self.root / WORKER_SCRIPT
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(
            "#!/bin/sh\n"
            f"# One remote Locust worker for run {run_id}: start {count} of these in all, from a\n"
            "# poolbench checkout with its virtualenv active. Workers exit when the run ends;\n"
            "# this file is rewritten before every run.\n"
            f"{command}\n"
        )
        tmp.chmod(0o755)
        os.replace(tmp, path)
        return path
