"""Load a sweep directory (or plain Locust CSV output) into a typed Sweep of tidy tables.

The runs table; each run's per-endpoint figures when the sweep has them; each run's history.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from poolbench.analysis.history import RunHistory, run_history
from poolbench.errors import UsageError
from poolbench.fmt import opt_float
from poolbench.objectives import Fleet, Slo
from poolbench.results import (
    BOOL_COLUMNS,
    BOTTLENECKS,
    ENDPOINT_FIGURES,
    ENDPOINTS_CSV_COLUMNS,
    ENDPOINTS_CSV_FILE,
    ENDPOINTS_STRING_COLUMNS,
    LOCUST_HISTORY_FILE,
    LOCUST_HISTORY_SUFFIX,
    LOCUST_STATS_SUFFIX,
    MANIFEST_FILE,
    RUNS_CSV_COLUMNS,
    RUNS_CSV_FILE,
    RUNS_DIR,
    STRING_COLUMNS,
    Manifest,
    RunRecord,
    csv_row,
    finished_runs,
    read_manifest,
)
from poolbench.secrets import scrub_tree
from poolbench.spec import SweepSpec
from poolbench.specfile import spec_from_manifest

# Without these no analysis is possible; the rest may be missing (e.g. an external target with
# no app telemetry) and the affected figures are shown as blanks.
REQUIRED_COLUMNS = ("run_id", "repetition", "pool_size", "max_overflow", "rps", "p95_ms")


def empty_endpoints() -> pd.DataFrame:
    """An endpoints table without rows: the endpoints.csv columns, typed."""
    return pd.DataFrame(
        {
            column: pd.Series(dtype=object if column in ENDPOINTS_STRING_COLUMNS else float)
            for column in ENDPOINTS_CSV_COLUMNS
        }
    )


@dataclass(frozen=True, kw_only=True)
class Sweep:
    """One loaded sweep: its runs, manifest (secrets scrubbed) and the spec it ran."""

    root: Path
    name: str
    runs: pd.DataFrame
    manifest: dict[str, Any] = field(default_factory=dict)
    # None for plain Locust output, or when the manifest's spec cannot be read.
    spec: SweepSpec | None = None
    # "sweep" for a poolbench results directory, "locust" for plain Locust CSV output.
    source: str = "sweep"
    history_paths: dict[str, Path] = field(default_factory=dict)
    # What could not be read, for the warnings.
    problems: list[str] = field(default_factory=list)
    # endpoints.csv: one row per run and endpoint; empty when the sweep has none (plain Locust
    # output, sweeps from before it) or it is unreadable (then a problem says so).
    endpoints: pd.DataFrame = field(default_factory=empty_endpoints)

    @property
    def slo(self) -> Slo:
        """The spec's SLO; none for plain Locust output."""
        return self.spec.slo if self.spec is not None else Slo.unset()

    def fleet(self, **overrides: int | None) -> Fleet | None:
        """The spec's fleet with overrides on top; None when neither says anything."""
        given = {k: v for k, v in overrides.items() if v is not None}
        if self.spec is not None:
            return self.spec.fleet.with_overrides(**given)
        return Fleet().with_overrides(**given) if given else None

    def history(self, run_id: str) -> RunHistory | None:
        """One run's per-second history and measured window; None when it has none."""
        path = self.history_paths.get(run_id)
        return None if path is None else run_history(path)


def endpoint_figures(sweep: Sweep, run_id: str) -> dict[str, dict[str, Any]]:
    """One run's figures per endpoint, {name: {requests, failures, error_rate, p95_ms, ...}}.

    What `Slo.endpoint_failure` takes; blanks are NaN, and a run without rows gives {}.
    """
    frame = sweep.endpoints
    rows = frame.loc[frame["run_id"] == run_id, ["endpoint", *ENDPOINT_FIGURES]]
    return {
        str(row["endpoint"]): {column: row[column] for column in ENDPOINT_FIGURES}
        for row in rows.to_dict("records")
    }


def connections(frame: pd.DataFrame) -> pd.Series:
    """Connections one process may open: pool_size + max_overflow."""
    return frame["pool_size"] + frame["max_overflow"].fillna(0)


def load_sweep(path: Path | str) -> Sweep:
    """Load a sweep directory, a Locust `*_stats.csv` file, or a Locust CSV prefix."""
    path = Path(path)
    if path.is_dir():
        if (path / RUNS_CSV_FILE).is_file():
            return _load_results_dir(path)
        stats_files = sorted(path.glob(f"*{LOCUST_STATS_SUFFIX}"))
        if len(stats_files) == 1:
            return _load_locust(stats_files[0])
        raise UsageError(f"{path}: no {RUNS_CSV_FILE} (not a sweep directory)")
    if path.is_file() and path.name.endswith(LOCUST_STATS_SUFFIX):
        return _load_locust(path)
    prefixed = path.with_name(path.name + LOCUST_STATS_SUFFIX)
    if prefixed.is_file():
        return _load_locust(prefixed)
    if path.exists():
        raise UsageError(f"{path}: not a sweep directory or a Locust *_stats.csv file")
    raise UsageError(f"{path}: no such sweep directory or Locust CSV prefix")


def _read_csv(path: Path, text: str | None = None) -> pd.DataFrame:
    """Read a CSV file, or `text` standing in for it; a problem is one UsageError line."""
    try:
        frame = pd.read_csv(path if text is None else io.StringIO(text))
    except pd.errors.EmptyDataError:
        raise UsageError(f"{path}: empty file") from None
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UsageError(f"{path}: cannot parse CSV ({first})") from None
    except OSError as exc:
        raise UsageError(f"{path}: {exc.strerror or exc}") from None
    return frame


def _load_results_dir(root: Path) -> Sweep:
    runs_csv = root / RUNS_CSV_FILE
    problems: list[str] = []
    records = finished_runs(root)
    frame = _read_csv(runs_csv, _checked_rows(root, records, problems))
    problems += _telemetry_notes(records)
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise UsageError(f"{runs_csv}: missing required columns: {', '.join(missing)}")
    if frame.empty:
        raise UsageError(f"{runs_csv}: no runs" + (f" ({problems[0]})" if problems else ""))
    runs = _normalise(frame, runs_csv)
    # Secrets never leave here: everything downstream sees the scrubbed copy.
    manifest: dict[str, Any] = {}
    try:
        manifest = scrub_tree(read_manifest(root) or {})
    except UsageError as exc:
        problems.append(f"the manifest is unreadable, SLO and fleet unknown: {exc}")
    spec: SweepSpec | None = None
    if manifest:
        try:
            spec = spec_from_manifest(manifest, str(root / MANIFEST_FILE))
        except UsageError as exc:
            problems.append(f"the manifest's spec is unreadable, SLO and fleet unknown: {exc}")
        try:
            ending = Manifest.from_json(manifest).ending()
        except ValueError as exc:
            ending = None
            problems.append(f"the manifest is unreadable, how the sweep ended unknown: {exc}")
        if ending:
            planned = manifest.get("points", "?")
            problems.append(
                f"the sweep {ending}; {len(runs)} of {planned} runs finished and only they are "
                "analysed (poolbench sweep --resume finishes it)"
            )
    history = {
        run_id: p
        for run_id in runs["run_id"]
        if (p := root / RUNS_DIR / str(run_id) / LOCUST_HISTORY_FILE).is_file()
    }
    endpoints = _load_endpoints(root / ENDPOINTS_CSV_FILE, problems)
    return Sweep(
        root=root,
        name=root.name,
        runs=runs,
        manifest=manifest,
        spec=spec,
        history_paths=history,
        problems=problems,
        endpoints=endpoints,
    )


def _telemetry_notes(records: dict[str, RunRecord]) -> list[str]:
    """Say which runs read a target's Prometheus text instead of /telemetry, and what it lacked."""
    fallback = [r for r in records.values() if r.telemetry_source]
    if not fallback:
        return []
    missing = list(dict.fromkeys(m for r in fallback for m in r.telemetry_missing or ()))
    shown = ", ".join(missing[:6]) + (f" and {len(missing) - 6} more" if len(missing) > 6 else "")
    return [
        f"{len(fallback)} runs read the target's {fallback[0].telemetry_source} (it serves "
        f"no /telemetry): figures from cumulative counters only"
        + (f"; missing: {shown}" if missing else "")
    ]


def _checked_rows(root: Path, records: dict[str, RunRecord], problems: list[str]) -> str:
    """runs.csv's text with torn rows dropped, checked against the run directories.

    run.json is the truth: a row whose run has a run.json is rebuilt from it, a run missing
    from runs.csv is added back, and a row naming no finished run is dropped. Without run.json
    files (hand-made tables) a row is kept only if it is whole. Each repair is a problem.
    """
    path = root / RUNS_CSV_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise UsageError(f"{path}: cannot parse CSV ({exc})") from None
    except OSError as exc:
        raise UsageError(f"{path}: {exc.strerror or exc}") from None
    lines = text.splitlines(keepends=True)
    if not lines:
        raise UsageError(f"{path}: empty file")
    header = next(csv.reader(lines[:1]))
    rows: dict[str, list[str]] = {}
    for number, line in enumerate(lines[1:], start=2):
        cells = next(csv.reader([line]), [])
        run_id = cells[0] if cells else ""
        if not line.endswith("\n") or len(cells) != len(header):
            problems.append(f"{path.name} line {number} ({run_id or 'blank'}) is torn: skipped")
        elif run_id:
            rows[run_id] = cells
    out = io.StringIO()
    if not records:
        writer = csv.writer(out)
        writer.writerow(header)
        writer.writerows(rows.values())
        return out.getvalue()
    for run_id in rows.keys() - records.keys():
        problems.append(f"{path.name} names run {run_id}, which has no finished run: skipped")
    for run_id in records.keys() - rows.keys():
        problems.append(f"{path.name} lacks run {run_id}: rebuilt from its run.json")
    order = [r for r in rows if r in records] + sorted(records.keys() - rows.keys())
    dict_writer = csv.DictWriter(out, fieldnames=list(RUNS_CSV_COLUMNS))
    dict_writer.writeheader()
    for run_id in order:
        record = records[run_id]
        dict_writer.writerow(csv_row(record.point, record.figures))
    return out.getvalue()


def _load_endpoints(path: Path, problems: list[str]) -> pd.DataFrame:
    """Read endpoints.csv, typed; missing (older sweeps) is no rows, unreadable a problem too."""
    if not path.is_file():
        return empty_endpoints()
    try:
        # As text first: an endpoint is a name, never a number or a missing value.
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        problems.append(f"{path.name} is unreadable, no per-endpoint figures: {first}")
        return empty_endpoints()
    missing = [c for c in ENDPOINTS_CSV_COLUMNS if c not in frame.columns]
    if missing:
        problems.append(f"{path.name} lacks {', '.join(missing)}, no per-endpoint figures")
        return empty_endpoints()
    out = frame.loc[:, list(ENDPOINTS_CSV_COLUMNS)].copy()
    for column in ENDPOINT_FIGURES:
        out[column] = pd.to_numeric(out[column], errors="coerce").astype(float)
    return out.reset_index(drop=True)


def _normalise(frame: pd.DataFrame, source: Path) -> pd.DataFrame:
    """Give every known column its type, adding blanks for optional ones that are missing."""
    out = frame.copy()
    for column in RUNS_CSV_COLUMNS:
        if column not in out.columns:
            out[column] = np.nan if column not in STRING_COLUMNS else ""
    for column in RUNS_CSV_COLUMNS:
        if column in STRING_COLUMNS:
            out[column] = out[column].astype(object).where(out[column].notna(), "").astype(str)
        elif column in BOOL_COLUMNS:
            out[column] = out[column].map(_truthy).astype(bool)
        else:
            converted = pd.to_numeric(out[column], errors="coerce")
            bad = converted.isna() & out[column].notna()
            if column in REQUIRED_COLUMNS and bad.any():
                row = int(np.flatnonzero(bad.to_numpy())[0]) + 2  # header is line 1
                raise UsageError(f"{source}: line {row}: {column} is not a number")
            out[column] = converted.astype(float)
    if out["error_rate"].isna().all() and out["requests"].notna().any():
        out["error_rate"] = out["failures"] / out["requests"].where(out["requests"] > 0)
    out.loc[~out["bottleneck"].isin(BOTTLENECKS), "bottleneck"] = "none"
    out["connections"] = connections(out)
    return out


def _truthy(value: object) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in {"1", "true", "yes"}
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return False
    return bool(value)


def _load_locust(stats_csv: Path) -> Sweep:
    """Read one Locust run: its Aggregated row becomes a run with an unknown config."""
    frame = _read_csv(stats_csv)
    needed = ("Name", "Request Count", "Failure Count", "Requests/s", "95%")
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        raise UsageError(f"{stats_csv}: not Locust stats output (missing {', '.join(missing)})")
    aggregated = frame[frame["Name"] == "Aggregated"]
    if aggregated.empty:
        raise UsageError(f"{stats_csv}: no Aggregated row")
    row = aggregated.iloc[-1]
    prefix = stats_csv.name[: -len(LOCUST_STATS_SUFFIX)]
    requests = float(row["Request Count"])
    failures = float(row["Failure Count"])
    record: dict[str, Any] = {
        "run_id": prefix or "locust",
        "repetition": 1,
        "pool_size": np.nan,
        "max_overflow": np.nan,
        "requests": requests,
        "failures": failures,
        "error_rate": failures / requests if requests else np.nan,
        "rps": float(row["Requests/s"]),
        "p50_ms": opt_float(row.get("50%")),
        "p95_ms": opt_float(row.get("95%")),
        "p99_ms": opt_float(row.get("99%")),
        "mean_ms": opt_float(row.get("Average Response Time")),
        "max_ms": opt_float(row.get("Max Response Time")),
        "bottleneck": "none",
    }
    runs = _normalise(pd.DataFrame([record]), stats_csv)
    history = stats_csv.with_name(f"{prefix}{LOCUST_HISTORY_SUFFIX}")
    return Sweep(
        root=stats_csv.parent,
        name=prefix or stats_csv.stem,
        runs=runs,
        source="locust",
        history_paths={record["run_id"]: history} if history.is_file() else {},
    )
