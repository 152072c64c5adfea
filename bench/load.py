"""Load a sweep directory (or plain Locust CSV output) into tidy DataFrames."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.errors import UsageError
from bench.pg import redact_dsn

POINT_COLUMNS = (
    "run_id",
    "scenario",
    "repetition",
    "pool_size",
    "max_overflow",
    "http_concurrency_limit",
    "users",
    "pg_max_size",
    "pg_max_connections",
    "queries_per_request",
    "sim_latency_ms",
    "think_time_s",
    "spawn_rate",
    "duration_s",
)
CLIENT_COLUMNS = (
    "requests",
    "failures",
    "error_rate",
    "rps",
    "p50_ms",
    "p95_ms",
    "p99_ms",
    "mean_ms",
    "max_ms",
)
TELEMETRY_COLUMNS = (
    "acquire_wait_mean_ms",
    "acquire_wait_p95_ms",
    "acquire_wait_p99_ms",
    "hold_time_mean_ms",
    "hold_time_p95_ms",
    "peak_checked_out",
    "pool_timeouts",
    "connections_opened",
)
DB_COLUMNS = ("pg_peak_connections", "pg_xact_commit")
CPU_COLUMNS = (
    "app_cpu_pct",
    "locust_cpu_pct",
    "pg_cpu_pct",
    "app_peak_rss_mb",
    "locust_peak_rss_mb",
    "pg_peak_rss_mb",
    "locust_cpu_warning",
    "host_cores",
)
RUNS_COLUMNS = (
    POINT_COLUMNS + CLIENT_COLUMNS + TELEMETRY_COLUMNS + DB_COLUMNS + CPU_COLUMNS + ("bottleneck",)
)
# Without these no analysis is possible; the rest may be missing (e.g. an external target with
# no app telemetry) and the affected figures are shown as blanks.
REQUIRED_COLUMNS = ("run_id", "repetition", "pool_size", "max_overflow", "rps", "p95_ms")

# A config is everything that defines a point except the repetition.
CONFIG_COLUMNS = tuple(c for c in POINT_COLUMNS if c not in ("run_id", "repetition"))
# Axes that change the workload rather than the pool: optima are found per workload.
WORKLOAD_COLUMNS = ("scenario", "users", "queries_per_request", "sim_latency_ms", "think_time_s")
BOTTLENECKS = ("pool", "app_cpu", "database", "load_generator", "none")
# Runs limited by something other than the pool say nothing about pool sizing.
UNTRUSTED_BOTTLENECKS = ("app_cpu", "load_generator")
CONFIDENCE = 0.95

_STRING_COLUMNS = ("run_id", "scenario", "bottleneck")
_PASSWORD_RE = re.compile(r"(://[^:/@\s]*:)[^@\s]*@")
_URL_RE = re.compile(r"^[a-z][a-z0-9+.-]*://", re.IGNORECASE)
_SECRET_KEY_RE = re.compile(r"password|passwd|secret|token", re.IGNORECASE)
_LOCUST_STATS_SUFFIX = "_stats.csv"


@dataclass(frozen=True, kw_only=True)
class Sweep:
    """One loaded sweep: its runs, manifest and resolved spec."""

    root: Path
    name: str
    runs: pd.DataFrame
    manifest: dict[str, Any] = field(default_factory=dict)
    spec: dict[str, Any] = field(default_factory=dict)
    # "sweep" for a poolbench results directory, "locust" for plain Locust CSV output.
    source: str = "sweep"
    history_paths: dict[str, Path] = field(default_factory=dict)


def scrub_secrets(text: str) -> str:
    """Replace any `scheme://user:password@` password in free text with `***`."""
    return _PASSWORD_RE.sub(r"\1***@", text)


def scrub_tree(value: Any) -> Any:
    """Return a copy of a JSON-like value with every DSN password in its strings redacted."""
    if isinstance(value, dict):
        return {
            str(k): "***" if _SECRET_KEY_RE.search(str(k)) else scrub_tree(v)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [scrub_tree(v) for v in value]
    if isinstance(value, str):
        if _URL_RE.match(value.strip()):
            try:
                value = redact_dsn(value.strip())
            except ValueError:  # unparseable URL: the regex below still scrubs it
                pass
        return scrub_secrets(value)
    return value


def load_sweep(path: Path) -> Sweep:
    """Load a sweep directory, a Locust `*_stats.csv` file, or a Locust CSV prefix."""
    path = Path(path)
    if path.is_dir():
        if (path / "runs.csv").is_file():
            return _load_results_dir(path)
        stats_files = sorted(path.glob(f"*{_LOCUST_STATS_SUFFIX}"))
        if len(stats_files) == 1:
            return _load_locust(stats_files[0])
        raise UsageError(f"{path}: no runs.csv (not a sweep directory)")
    if path.is_file() and path.name.endswith(_LOCUST_STATS_SUFFIX):
        return _load_locust(path)
    prefixed = path.with_name(path.name + _LOCUST_STATS_SUFFIX)
    if prefixed.is_file():
        return _load_locust(prefixed)
    if path.exists():
        raise UsageError(f"{path}: not a sweep directory or a Locust *_stats.csv file")
    raise UsageError(f"{path}: no such sweep directory or Locust CSV prefix")


def _read_csv(path: Path) -> pd.DataFrame:
    try:
        frame = pd.read_csv(path)
    except pd.errors.EmptyDataError:
        raise UsageError(f"{path}: empty file") from None
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UsageError(f"{path}: cannot parse CSV ({first})") from None
    except OSError as exc:
        raise UsageError(f"{path}: {exc.strerror or exc}") from None
    return frame


def _load_results_dir(root: Path) -> Sweep:
    runs_csv = root / "runs.csv"
    frame = _read_csv(runs_csv)
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise UsageError(f"{runs_csv}: missing required columns: {', '.join(missing)}")
    if frame.empty:
        raise UsageError(f"{runs_csv}: no runs")
    runs = _normalise(frame, runs_csv)
    manifest = _read_manifest(root / "manifest.json")
    spec = manifest.get("spec") if isinstance(manifest.get("spec"), dict) else {}
    history = {
        run_id: p
        for run_id in runs["run_id"]
        if (p := root / "runs" / str(run_id) / "locust_stats_history.csv").is_file()
    }
    return Sweep(
        root=root,
        name=root.name,
        runs=runs,
        manifest=manifest,
        spec=spec or {},
        history_paths=history,
    )


def _read_manifest(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise UsageError(f"{path}: expected a JSON object")
    # Secrets never leave this function: everything downstream sees the scrubbed copy.
    scrubbed: dict[str, Any] = scrub_tree(data)
    return scrubbed


def _normalise(frame: pd.DataFrame, source: Path) -> pd.DataFrame:
    """Give every known column its type, adding blanks for optional ones that are missing."""
    out = frame.copy()
    for column in RUNS_COLUMNS:
        if column not in out.columns:
            out[column] = np.nan if column not in _STRING_COLUMNS else ""
    for column in RUNS_COLUMNS:
        if column in _STRING_COLUMNS:
            out[column] = out[column].fillna("").astype(str)
        elif column == "locust_cpu_warning":
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
    out["connections"] = out["pool_size"] + out["max_overflow"].fillna(0)
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
    prefix = stats_csv.name[: -len(_LOCUST_STATS_SUFFIX)]
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
        "p50_ms": _get(row, "50%"),
        "p95_ms": _get(row, "95%"),
        "p99_ms": _get(row, "99%"),
        "mean_ms": _get(row, "Average Response Time"),
        "max_ms": _get(row, "Max Response Time"),
        "bottleneck": "none",
    }
    runs = _normalise(pd.DataFrame([record]), stats_csv)
    history = stats_csv.with_name(f"{prefix}_stats_history.csv")
    return Sweep(
        root=stats_csv.parent,
        name=prefix or stats_csv.stem,
        runs=runs,
        source="locust",
        history_paths={record["run_id"]: history} if history.is_file() else {},
    )


def _get(row: pd.Series, column: str) -> float:
    value = pd.to_numeric(row.get(column, np.nan), errors="coerce")
    return float(value) if pd.notna(value) else math.nan


def t_half_width(std: float, n: int, confidence: float = CONFIDENCE) -> float:
    """Half-width of the t-distribution confidence interval of a mean (NaN for n < 2)."""
    if n < 2 or not math.isfinite(std):
        return math.nan
    from scipy import stats  # imported on use: scipy.stats alone costs ~0.5 s of CLI start-up

    return float(stats.t.ppf((1 + confidence) / 2, n - 1) * std / math.sqrt(n))


def _mode(values: pd.Series) -> str:
    counts = values.value_counts()
    return str(counts.index[0]) if not counts.empty else "none"


def aggregate(runs: pd.DataFrame) -> pd.DataFrame:
    """Collapse repetitions: one row per config with means, 95% CIs and the modal bottleneck."""
    keys = list(CONFIG_COLUMNS)
    # An untrusted repetition (CPU- or load-generator-bound) would drag its config's mean; drop it
    # when the config has trusted repetitions, keep it (and its label) when it has none.
    untrusted = runs["bottleneck"].isin(UNTRUSTED_BOTTLENECKS)
    config_id = runs.groupby(keys, dropna=False, sort=False).ngroup()
    has_trusted = (~untrusted).groupby(config_id).transform("any")
    kept = runs[~untrusted | ~has_trusted]
    excluded = untrusted & has_trusted
    grouped = kept.groupby(keys, dropna=False, sort=True)
    mean_columns = [
        "rps",
        "p50_ms",
        "p95_ms",
        "p99_ms",
        "mean_ms",
        "error_rate",
        "acquire_wait_p95_ms",
        "acquire_wait_p99_ms",
        "hold_time_mean_ms",
        "hold_time_p95_ms",
        "app_cpu_pct",
        "locust_cpu_pct",
        "pg_cpu_pct",
    ]
    table = grouped[mean_columns].mean()
    maxima = grouped[["peak_checked_out", "pg_peak_connections"]].max()
    totals = grouped[["pool_timeouts", "requests", "failures"]].sum(min_count=1)
    spread = grouped[["rps", "p95_ms"]].std(ddof=1)
    counts = grouped.size().rename("reps")
    bottleneck = grouped["bottleneck"].agg(_mode)
    warned = grouped["locust_cpu_warning"].any()
    out = pd.concat(
        [
            table,
            maxima,
            totals,
            spread.add_suffix("_std"),
            counts,
            bottleneck,
            warned,
        ],
        axis=1,
    ).reset_index()
    excluded_by_config = (
        runs.assign(_excluded=excluded.to_numpy())
        .groupby(keys, dropna=False, sort=True)["_excluded"]
        .sum()
        .to_numpy()
    )
    out["excluded_reps"] = excluded_by_config.astype(int)
    from scipy import stats  # imported on use: scipy.stats alone costs ~0.5 s of CLI start-up

    # The t quantile depends only on n, so compute it once per distinct n (fast for 1,000s).
    quantiles = {
        n: float(stats.t.ppf((1 + CONFIDENCE) / 2, n - 1)) if n >= 2 else math.nan
        for n in out["reps"].unique()
    }
    factor = out["reps"].map(quantiles) / np.sqrt(out["reps"])
    out["rps_ci"] = out["rps_std"] * factor
    out["p95_ms_ci"] = out["p95_ms_std"] * factor
    out["connections"] = out["pool_size"] + out["max_overflow"].fillna(0)
    return out


def read_history(path: Path) -> pd.DataFrame:
    """Read a Locust stats history CSV: the Aggregated rows, seconds since the first sample."""
    try:
        frame = pd.read_csv(path)
    except (OSError, ValueError, pd.errors.ParserError):
        return pd.DataFrame()
    if "Name" not in frame.columns or "Timestamp" not in frame.columns:
        return pd.DataFrame()
    rows = frame[frame["Name"] == "Aggregated"].copy()
    if rows.empty:
        return rows
    for column in ("Timestamp", "User Count", "Requests/s", "Failures/s", "50%", "95%", "99%"):
        if column in rows.columns:
            rows[column] = pd.to_numeric(rows[column], errors="coerce")
    rows["t_s"] = rows["Timestamp"] - rows["Timestamp"].min()
    return rows
