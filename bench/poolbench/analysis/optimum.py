"""The optimum of one workload.

An SLO sweep (open model at the target rate): the smallest config that meets the SLO in every
repetition. A capacity sweep (closed loop): the smallest config within a tolerance of the best
throughput. Neither ever falls back to runs a CPU or the load generator limited.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from poolbench.analysis.aggregate import (
    CONFIG_COLUMNS,
    at_optimum,
    eligible,
    matching,
    meets_slo,
    untrusted,
)
from poolbench.analysis.models import DEFAULT_TOLERANCE
from poolbench.analysis.semaphore import LIMIT, smallest_adequate_limit
from poolbench.fmt import num, opt_float
from poolbench.objectives import Demand, Fleet, Slo


@dataclass(frozen=True, kw_only=True)
class Optimum:
    """The chosen config of one workload and why."""

    row: dict[str, Any] | None
    slo_met: bool
    fits_fleet: bool | None
    best_rps: float
    reason: str
    excluded_configs: int = 0
    # No trusted run at all: there is no pool recommendation, only what to change.
    inconclusive: bool = False
    # SLO sweeps: how close the next smaller config came.
    next_smaller: str = ""


# Every config was limited by something other than the pool: what to change.
INCONCLUSIVE_ADVICE = (
    "every run was limited by the app's CPU, the host's CPU or the load generator, so none says "
    "anything about the pool: lower the load (fewer users or a lower open_model_rps), give "
    "Locust more processes (--workers N) or machines (--remote-workers N), or move Postgres off "
    "this host (--dsn)"
)
# A served rate this many Poisson standard deviations below the offered rate is a shortfall.
NOISE_SIGMAS = 3.0
# More requests in flight at the window's end than this many times offered x p95 is a backlog.
BACKLOG_FACTOR = 4.0
MIN_BACKLOG = 5


def inconclusive(table: pd.DataFrame) -> Optimum:
    """The verdict when no trusted run exists."""
    return Optimum(
        row=None,
        slo_met=False,
        fits_fleet=None,
        best_rps=math.nan,
        reason=f"inconclusive: {INCONCLUSIVE_ADVICE}",
        excluded_configs=len(table),
        inconclusive=True,
    )


def find_optimum(
    table: pd.DataFrame,
    slo: Slo,
    fleet: Fleet | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
) -> Optimum:
    """Capacity: the fewest connections meeting the SLO within `tolerance` of the best rps."""
    if table.empty:
        return Optimum(
            row=None, slo_met=False, fits_fleet=None, best_rps=math.nan, reason="no runs"
        )
    bad = untrusted(table)
    candidates = eligible(table)
    notes: list[str] = []
    if candidates.empty:
        return inconclusive(table)
    passing = candidates[meets_slo(candidates, slo)]
    slo_met = not passing.empty
    pool = passing if slo_met else candidates
    if not slo_met and slo.is_set:
        notes.append(f"no config meets the SLO ({slo.describe()}); showing the best throughput")
    best_rps = float(pool["rps"].max())
    near = pool[pool["rps"] >= (1 - tolerance) * best_rps]
    near, fits, fleet_notes = _within_fleet(pool, near, fleet)
    notes += fleet_notes
    chosen = near.sort_values(
        ["connections", "rps", "p95_ms"], ascending=[True, False, True], kind="stable"
    ).iloc[0]
    # When only the semaphore varies at that pool: the smallest adequate limit, not the fastest.
    axes = [c for c in CONFIG_COLUMNS if c != LIMIT and c in table]
    same_pool = table[matching(table, {c: chosen.get(c) for c in axes})]
    adequate = smallest_adequate_limit(same_pool, slo, tolerance)
    if adequate is not None and adequate[LIMIT] != chosen[LIMIT]:
        chosen = pd.Series(adequate)
        notes.append(f"the smallest {LIMIT} within {tolerance:.0%} of the best at this pool")
    within = (1 - chosen["rps"] / best_rps) if best_rps > 0 else 0.0
    reason = (
        f"fewest connections ({chosen['connections']:g}) within {tolerance:.0%} of the best "
        f"throughput {best_rps:.1f} rps ({within:.1%} below)"
    )
    if slo_met and slo.is_set:
        reason += f", meeting the SLO ({slo.describe()})"
    elif slo.is_set:
        notes.append(f"this config fails because: {slo.failure(chosen.to_dict())}")
    return Optimum(
        row={str(k): v for k, v in chosen.to_dict().items()},
        slo_met=slo_met if slo.is_set else True,
        fits_fleet=fits,
        best_rps=best_rps,
        reason="; ".join([reason, *notes]),
        excluded_configs=int(bad.sum()),
    )


def _within_fleet(
    pool: pd.DataFrame, near: pd.DataFrame, fleet: Fleet | None
) -> tuple[pd.DataFrame, bool | None, list[str]]:
    """Narrow `near` to configs the fleet budget allows; never to an empty frame."""
    if fleet is None:
        return near, None, []
    fitting = pool[[fleet.fits(d) for d in demands(pool)]]
    near_fitting = near[[fleet.fits(d) for d in demands(near)]]
    if not near_fitting.empty:
        return near_fitting, True, []
    if not fitting.empty:
        # Nothing near the best fits the budget: the best that fits beats one that can't run.
        note = (
            f"the fastest configs break the fleet budget ({fleet.per_process} connections "
            "per process); chose the best that fits"
        )
        return fitting[fitting["rps"] == fitting["rps"].max()], True, [note]
    return near, False, [f"no measured config fits the fleet budget ({fleet.budget} connections)"]


# The columns `Demand.of` reads.
DEMAND_COLUMNS = (
    "pool_size", "max_overflow", "pg_max_size", "app_workers", "pg_peak_connections",
    "pgbouncer_pool_size", "pooler",
)  # fmt: skip


def demands(frame: pd.DataFrame) -> list[Demand]:
    """What each config (row) asks of the fleet's connection budget (`Demand.of`)."""
    columns = [c for c in DEMAND_COLUMNS if c in frame.columns]
    return [Demand.of(row) for row in frame[columns].to_dict("records")]


def run_failure(
    run: Mapping[Any, Any], slo: Slo, endpoints: Mapping[str, Mapping[str, Any]] | None = None
) -> str | None:
    """Why one SLO-sweep run misses the objective, or None.

    Meeting it means: p95 and errors within bounds (`Slo.failure`), and the served rate within
    Poisson noise of the offered rate with no dropped arrivals and no growing backlog (an
    overloaded pool serves less than is offered, whatever its p95 in a short window).
    """
    reason = slo.failure(run) or slo.endpoint_failure(endpoints or {})
    if reason is not None:
        return reason
    # A figure the run lacks breaks no rule: missing counts as 0 (an unmeasured rate as met).
    offered = opt_float(run.get("offered_rps")) or 0.0
    window_s = opt_float(run.get("duration_s")) or 0.0
    if not offered > 0:
        return None
    served = opt_float(run.get("rps"))
    noise = NOISE_SIGMAS * math.sqrt(offered / window_s) if window_s > 0 else 0.0
    if served is not None and served < offered - noise:
        return f"served {served:.1f} of {offered:.1f} rps offered (noise +-{noise:.1f})"
    dropped = opt_float(run.get("dropped_arrivals")) or 0.0
    if dropped > 0:
        return f"{dropped:.0f} arrivals dropped at the in-flight cap"
    backlog = opt_float(run.get("inflight_at_end")) or 0.0
    expected = offered * (opt_float(run.get("p95_ms")) or 0.0) / 1000
    if backlog > max(MIN_BACKLOG, BACKLOG_FACTOR * expected):
        return f"{backlog:.0f} requests still in flight at the end (a growing backlog)"
    return None


def _limit(row: Mapping[str, Any]) -> float:
    """The semaphore limit as a sort key; NaN without one (as before: a NaN never compares)."""
    limit = opt_float(row.get(LIMIT))
    return math.nan if limit is None else limit


@dataclass(frozen=True, kw_only=True)
class ConfigVerdict:
    """One config of an SLO sweep: did each of its trusted repetitions meet the SLO?"""

    row: dict[str, Any]
    failures: list[str | None]

    @property
    def passed(self) -> int:
        return sum(f is None for f in self.failures)

    @property
    def meets(self) -> bool:
        """Met the SLO in every trusted repetition (and had at least one)."""
        return bool(self.failures) and self.passed == len(self.failures)

    def describe(self) -> str:
        """`pool 5 (5 connections) met the SLO in 1 of 3 repetitions; worst: ...`."""
        worst = next((f for f in self.failures if f is not None), None)
        text = (
            f"pool_size {self.row['pool_size']:g} ({self.row['connections']:g} connections) met "
            f"the SLO in {self.passed} of {len(self.failures)} trusted repetitions"
        )
        return text + (f"; it failed on: {worst}" if worst else "")


def config_verdicts(
    table: pd.DataFrame,
    runs: pd.DataFrame,
    slo: Slo,
    config_columns: Sequence[str],
    endpoints: Callable[[str], Mapping[str, Mapping[str, Any]]] | None = None,
) -> list[ConfigVerdict]:
    """Each config's per-repetition SLO verdicts, untrusted repetitions left out.

    `endpoints(run_id)` gives a run's per-endpoint figures for endpoint objectives.
    """
    trusted = runs[~untrusted(runs)]
    keys = [c for c in config_columns if c in runs.columns]
    # Each run's verdict once, filed under its config (not a scan of every run per config).
    by_config: dict[tuple[Any, ...], list[str | None]] = {}
    for key, run in zip(config_keys(trusted, keys), trusted.to_dict("records"), strict=True):
        failure = run_failure(run, slo, endpoints(str(run["run_id"])) if endpoints else None)
        by_config.setdefault(key, []).append(failure)
    return [
        ConfigVerdict(row={str(k): v for k, v in row.items()}, failures=by_config.get(key, []))
        for key, row in zip(config_keys(table, keys), table.to_dict("records"), strict=True)
    ]


def config_keys(frame: pd.DataFrame, keys: Sequence[str]) -> list[tuple[Any, ...]]:
    """Each row's values in `keys` as a hashable tuple (blanks as None, so blank matches blank)."""
    if frame.empty:
        return []
    columns = frame[list(keys)].astype(object)
    return list(columns.where(columns.notna(), None).itertuples(index=False, name=None))


def find_slo_optimum(
    table: pd.DataFrame,
    runs: pd.DataFrame,
    slo: Slo,
    fleet: Fleet | None,
    config_columns: Sequence[str],
    endpoints: Callable[[str], Mapping[str, Mapping[str, Any]]] | None = None,
) -> Optimum:
    """SLO sweep: the fewest connections that met the SLO in every repetition.

    Configs are not ranked by throughput: the served rate is set by the offered rate, and
    Poisson noise alone moves it by several percent in a short window.
    """
    if table.empty:
        return Optimum(
            row=None, slo_met=False, fits_fleet=None, best_rps=math.nan, reason="no runs"
        )
    if untrusted(runs).all():
        return inconclusive(table)
    verdicts = sorted(
        (v for v in config_verdicts(table, runs, slo, config_columns, endpoints) if v.failures),
        # Fewest connections, then the smallest semaphore limit that met it, then the best p95.
        key=lambda v: (v.row["connections"], _limit(v.row), v.row["p95_ms"]),
    )
    best_rps = float(table["rps"].max())
    passing = [v for v in verdicts if v.meets]
    fits: bool | None = None
    notes: list[str] = []
    if fleet is not None and passing:
        fitting = [v for v in passing if fleet.fits(Demand.of(v.row))]
        fits = bool(fitting)
        if fitting:
            passing = fitting
        else:
            notes.append(f"no config that met the SLO fits the fleet budget ({fleet.budget})")
    if passing:
        chosen = passing[0]
        reason = (
            f"fewest connections ({chosen.row['connections']:g}) that met the SLO "
            f"({slo.describe()}) and served the offered "
            f"{num(chosen.row.get('offered_rps'))} rps in all "
            f"{len(chosen.failures)} trusted repetitions"
        )
    else:
        # Nothing met it: show the config that came closest (most repetitions met, then p95).
        chosen = max(verdicts, key=lambda v: (v.passed, -v.row["p95_ms"]))
        reason = f"no config met the SLO ({slo.describe()}) in every repetition"
        notes.append(f"closest: {chosen.describe()}")
    smaller = [v for v in verdicts if v.row["connections"] < chosen.row["connections"]]
    return Optimum(
        row=chosen.row,
        slo_met=bool(passing),
        fits_fleet=fits if fleet is not None else None,
        best_rps=best_rps,
        reason="; ".join([reason, *notes]),
        excluded_configs=int(untrusted(table).sum()),
        next_smaller=smaller[-1].describe() if smaller and passing else "",
    )


def throughput_curve(table: pd.DataFrame) -> pd.Series:
    """The best trusted throughput at each connection count, by connections."""
    return eligible(table).groupby("connections")["rps"].max().sort_index()


def measured_rps_at(
    table: pd.DataFrame, connections: float, curve: pd.Series | None = None
) -> float | None:
    """Measured throughput at a pool size, interpolated between measured sizes (None outside).

    `curve` is `throughput_curve(table)` when the caller already has it (one per workload).
    """
    curve = throughput_curve(table) if curve is None else curve
    if curve.empty:
        return None
    xs = curve.index.to_numpy(dtype=float)
    if connections < xs.min() or connections > xs.max():
        return None
    return float(np.interp(connections, xs, curve.to_numpy(dtype=float)))


def usl_series(table: pd.DataFrame, optimum: Mapping[str, Any] | None) -> tuple[pd.DataFrame, Any]:
    """The throughput-vs-pool-size series to fit: one max_overflow, other pool axes fixed."""
    candidates = at_optimum(eligible(table), dict(optimum) if optimum is not None else None)
    if candidates.empty:
        return candidates, None
    sizes = candidates.groupby("max_overflow", dropna=False)["pool_size"].nunique()
    preferred = None if optimum is None else optimum.get("max_overflow")
    if preferred is not None and preferred in sizes.index and sizes.loc[preferred] >= sizes.max():
        overflow = preferred
    else:
        overflow = sizes.idxmax()
    return candidates[candidates["max_overflow"] == overflow], overflow
