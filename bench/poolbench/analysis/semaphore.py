"""The downstream semaphore (http_concurrency_limit): its smallest adequate limit, its warnings.

Both read what the app measured (runs.csv `http_*` columns), never the scenario's name.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd

from poolbench.analysis.aggregate import CONFIG_COLUMNS, eligible, matching, meets_slo
from poolbench.fmt import opt_float
from poolbench.objectives import Demand, Slo

LIMIT = "http_concurrency_limit"
# A semaphore wait p95 below this is scheduling noise: calls reached the limit but hardly queued.
SEMAPHORE_WAIT_MIN_MS = 1.0


def smallest_adequate_limit(
    table: pd.DataFrame, slo: Slo, tolerance: float
) -> dict[str, Any] | None:
    """The config with the smallest limit meeting the SLO within `tolerance` of the best rps.

    `table` is aggregated (one row per config). Only configs that differ in the limit alone
    compete: those sharing every other config axis (so the same connections) with the fastest
    trusted config that meets the SLO; pass a table at one pool config to choose for that one.
    Untrusted configs (CPU- or load-generator-bound) are ignored. None when the limit does not
    vary among those configs, or no trusted config meets the SLO.
    """
    candidates = eligible(table)
    if candidates.empty or LIMIT not in candidates:
        return None
    passing = candidates[meets_slo(candidates, slo)]
    if passing.empty:
        return None
    best = passing.sort_values("rps", ascending=False, kind="stable").iloc[0]
    others = [c for c in CONFIG_COLUMNS if c != LIMIT and c in candidates]
    candidates = candidates[matching(candidates, {c: best[c] for c in others})]
    if candidates[LIMIT].nunique() < 2:
        return None
    passing = passing[matching(passing, {c: best[c] for c in others})]
    near = passing[passing["rps"] >= (1 - tolerance) * float(best["rps"])]
    chosen = near.sort_values([LIMIT, "rps"], ascending=[True, False], kind="stable").iloc[0]
    return {str(k): v for k, v in chosen.to_dict().items()}


def semaphore_warnings(row: Mapping[str, Any]) -> list[str]:
    """What the semaphore's measured figures say about one config (nothing when blank).

    - downstream calls in flight reached the limit and calls queued for it: the semaphore, not
      the downstream, set the pace;
    - calls queued on the semaphore while their request held a DB connection: the pool's
      connections sat idle in that queue.
    """
    out: list[str] = []
    limit = opt_float(row.get(LIMIT))
    peak = opt_float(row.get("http_peak_in_flight"))
    if peak is not None:
        # The workers' peaks summed (poolbench.sweep.appworkers); the limit is per process.
        peak /= Demand.of(row).app_workers
    wait_p95 = opt_float(row.get("http_semaphore_wait_p95_ms"))
    queued = wait_p95 is None or wait_p95 >= SEMAPHORE_WAIT_MIN_MS
    if limit is not None and peak is not None and limit > 0 and peak >= limit and queued:
        waited = f", semaphore wait p95 {wait_p95:.1f} ms" if wait_p95 is not None else ""
        out.append(
            f"downstream calls in flight reached http_concurrency_limit {limit:g}{waited}: the "
            "semaphore was the bottleneck; raise it or accept the queue"
        )
    held = opt_float(row.get("http_waits_holding_connection"))
    if held is not None and held > 0:
        out.append(
            f"{held:g} semaphore waits held a DB connection: release the session before fanning "
            "out (each connection sat idle, out of the pool, while its calls queued)"
        )
    return out
