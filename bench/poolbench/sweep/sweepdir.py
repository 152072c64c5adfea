"""A sweep's directory: the manifest, resume, atomic run directories, runs.csv, endpoints.csv."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import replace
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
    Manifest,
    RunRecord,
    csv_row,
    endpoint_rows,
    finished_runs,
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

    def __init__(self, root: Path, points: list[Point], manifest: Manifest) -> None:
        self.root = root
        self.points = points
        self.manifest = manifest
        self.runs_dir = root / RUNS_DIR
        self.logs = root / LOGS_DIR
        self.records: dict[str, RunRecord] = {}
        # How the sweep being resumed ended, when it did not finish (see results.sweep_ending).
        self.previous_ending: str | None = None

    def open(self, *, resume: bool) -> SweepDir:
        """Create the directories, write the manifest, drop half-written runs, load the rest."""
        try:
            for directory in (self.runs_dir, self.logs):
                directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UsageError(f"{self.root}: cannot create the results directory: {exc}") from None
        previous = Manifest.read(self.root) if resume else None
        if previous is not None:
            if previous.still_running():
                pid = (previous.runner or {}).get("pid")
                raise UsageError(f"{self.root}: process {pid} is still sweeping it; stop it first")
            self.previous_ending = previous.ending()
            self.manifest = replace(
                self.manifest,
                started_at=previous.started_at or self.manifest.started_at,
                resumed_at=(*previous.resumed_at, now()),
                failed_runs=previous.failed_runs or (),
                target_stack=previous.target_stack,
            )
        self._write_manifest()
        for stale in self.runs_dir.glob(".*.tmp"):
            shutil.rmtree(stale, ignore_errors=True)  # a run cut short last time
        self.records = finished_runs(self.root)
        return self

    def todo(self) -> list[Point]:
        """The points without a finished run, in run order."""
        return [p for p in self.points if p.run_id not in self.records]

    def new_run(self, point: Point) -> Path:
        """An empty temporary directory for a run about to be measured."""
        tmp = self.runs_dir / f".{point.run_id}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        return tmp

    def commit_run(
        self,
        tmp: Path,
        record: RunRecord,
        dsns: list[str],
        *,
        target_stack: dict[str, Any] | None = None,
    ) -> None:
        """Write run.json, scrub the DSNs' passwords, rename into place, update the tables.

        The target's stack, when the run's telemetry gave one that differs from the manifest's,
        goes into the manifest (the service's versions, apart from poolbench's own).
        """
        run_id = record.run_id
        write_json(tmp / RUN_FILE, record.as_json())
        for dsn in dsns:
            redact_files(tmp, dsn)
        final = self.runs_dir / run_id
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        self.records[run_id] = record
        self.write_runs_csv()
        self.write_endpoints_csv()
        if target_stack is not None and target_stack != self.manifest.target_stack:
            self.manifest = replace(self.manifest, target_stack=target_stack)
            self._write_manifest()

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
        failed = (*(self.manifest.failed_runs or ()), failure)
        self.manifest = replace(self.manifest, failed_runs=failed)
        return kept

    def rows(self) -> Iterator[dict[str, Any]]:
        """runs.csv rows of the finished runs, in point order, their point as the run recorded it.

        A target of the user's own records the pools it reported (`LoadTarget.recorded_point`).
        """
        for point in self.points:
            if (record := self.records.get(point.run_id)) is not None:
                yield csv_row(point.as_dict() | record.point, record.figures)

    def write_runs_csv(self) -> None:
        """Rewrite runs.csv from the finished runs."""
        write_runs_csv(self.root / RUNS_CSV_FILE, self.rows())

    def endpoint_rows(self) -> Iterator[dict[str, Any]]:
        """endpoints.csv rows of the finished runs, in point order (none for older runs)."""
        for point in self.points:
            if point.run_id in self.records:
                yield from endpoint_rows(point.run_id, self.records[point.run_id].endpoints)

    def write_endpoints_csv(self) -> None:
        """Rewrite endpoints.csv from the finished runs."""
        write_endpoints_csv(self.root / ENDPOINTS_CSV_FILE, self.endpoint_rows())

    def close(self, status: str) -> None:
        """Rewrite the tables and record how the sweep ended in the manifest."""
        self.write_runs_csv()
        self.write_endpoints_csv()
        self.manifest = replace(
            self.manifest, finished_at=now(), status=status, finished_runs=len(self.records)
        )
        self._write_manifest()

    def _write_manifest(self) -> None:
        write_json(self.root / MANIFEST_FILE, self.manifest.as_json())

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
