"""How many local Locust processes a point needs to stay under Locust's CPU warning.

Locust warns (and `label_bottleneck` labels the run `load_generator`) at 90 % of a core in any
one process. The runner estimates a point's request rate before running it, divides it by the
measured capacity of one Locust process, and picks the fewest processes that keep each one under
a margin below the warning, capped at the host's cores: on a 2-core host a third Locust process
only competes with the other two (and with the app and Postgres).

A locustfile of the user's own costs what its users cost, which nothing here knows in advance:
its first run gets one process, and later runs are planned from the requests per Locust
CPU-second the sweep's earlier runs measured (and, for a closed loop, whose rate is its users'
own, from the highest rate measured). A run whose Locust still went past the warning is labelled
`load_generator`, as any other.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from poolbench.spec import Point, SweepSpec
from poolbench.sweep.figures import DEFAULT_LOADGEN_CPU_PCT

# Requests per Locust CPU-second of the scenario user (`poolbench.load` PoolbenchUser,
# single_query, its window in HDR histograms) in the open model at 1,000 requests/s offered, one
# process: 1,492 on a 2-core AMD EPYC (`.venv/bin/python benchmarks/locust_capacity.py`). The
# conservative figure of those measured: the closed loop with no wait reached 2,673, a bare
# FastHttpUser 4,194. One figure ignores a process's fixed cost: at 100/s the estimate is 7 % of
# a core where the benchmark measured 13 %; the marginal cost, ~1,900 requests per CPU-second
# between 100/s and 1,000/s ((999 - 100) / (5.36 - 1.07) x 8 s), is above this figure, so near
# the 70 % target the estimate errs on the safe side, and far below it the error cannot change
# the choice.
LOCUST_RPS_PER_CPU_S = 1500.0
# Aim each process at this share of a core: 20 points under Locust's 90 % warning, for the
# spread of a Poisson arrival rate and a host shared with the app and Postgres.
DEFAULT_LOCUST_CPU_TARGET_PCT = 70.0


@dataclass(frozen=True, kw_only=True)
class WorkersChoice:
    """The Locust processes of a point and why (run.json `locust_workers`)."""

    workers: int
    expected_rps: float | None  # None: not estimated (given on the command line)
    expected_cpu_pct: float | None  # per Locust process, percent of one core
    reason: str

    def as_dict(self) -> dict[str, Any]:
        """Return the choice as plain JSON-able values."""
        return asdict(self)


# The sample app's scenarios whose every request leases one SQLAlchemy connection and runs at
# least one simulated statement in it (multi_query: queries_per_request of them), so the pool
# bounds their rate; fanout runs no query, mix some requests of each kind.
POOL_BOUND_SCENARIOS = frozenset({"single_query", "multi_query", "collection", "write_heavy"})


def _statements(point: Point) -> int:
    return point.queries_per_request if point.scenario == "multi_query" else 1


def response_floor_ms(point: Point, spec: SweepSpec) -> float:
    """The least time a request of the point can take, or 0 when it is not known.

    The sample app's scenarios wait at least their simulated statements (`sim_latency_ms`
    each) or, fanning out, one downstream call; an own app or locustfile promises nothing.
    """
    if spec.target is not None or spec.locustfile is not None:
        return 0.0
    downstream = spec.workload.downstream_latency_ms if point.fanout_calls > 0 else 0.0
    if point.scenario in POOL_BOUND_SCENARIOS:
        return _statements(point) * point.sim_latency_ms
    if point.scenario == "fanout":
        return downstream
    return min(point.sim_latency_ms, downstream)


def expected_rps(point: Point, spec: SweepSpec) -> tuple[float, str]:
    """The point's request rate before it runs, and how it was estimated.

    Open model: the offered rate. Closed loop: an upper bound, the smaller of every user sending
    once per think time plus the least response time, and (pool-bound scenarios of the sample
    app) every connection of every app worker leased back to back for the least hold time;
    math.inf when neither bounds it.
    """
    if point.open_model_rps > 0:
        return point.offered_rps, (
            f"open model: {point.users} users x {point.open_model_rps:g}/s = "
            f"{point.offered_rps:g}/s offered"
        )
    floor_ms = response_floor_ms(point, spec)
    bounds = {}
    if (cycle_s := point.think_time_s + floor_ms / 1000) > 0:
        bounds[point.users / cycle_s] = (
            f"{point.users} users / ({point.think_time_s:g} s think + {floor_ms:g} ms least "
            "response)"
        )
    own = spec.target is not None or spec.locustfile is not None
    if not own and point.scenario in POOL_BOUND_SCENARIOS and floor_ms > 0:
        connections = point.app_workers * point.sqlalchemy_connections
        bounds[connections / (floor_ms / 1000)] = (
            f"{connections} connections / {floor_ms:g} ms least hold"
        )
    if not bounds:
        return math.inf, "closed loop with no think time and no known least response time"
    rps = min(bounds)
    return rps, f"closed loop: at most {bounds[rps]} = {rps:.0f}/s"


def choose_workers(
    rps: float,
    *,
    cores: int,
    rps_per_cpu_s: float = LOCUST_RPS_PER_CPU_S,
    target_pct: float = DEFAULT_LOCUST_CPU_TARGET_PCT,
) -> tuple[int, float]:
    """The fewest Locust processes (1..cores) each expected under target_pct of a core.

    Returns (processes, expected percent of a core per process); at the cap the percent may be
    above the target (the run is then judged by `label_bottleneck` as any other).
    """
    cap = max(1, cores)
    per_process = math.inf
    for workers in range(1, cap + 1):
        per_process = rps / workers / rps_per_cpu_s * 100
        if per_process <= target_pct:
            return workers, per_process
    return cap, per_process


@dataclass(frozen=True)
class LocustCost:
    """What a sweep's finished runs measured of its Locust processes."""

    rps_per_cpu_s: float  # requests served per Locust CPU-second, the most expensive run's
    peak_rps: float  # the highest rate a run served

    @classmethod
    def measured(cls, runs: Iterable[Mapping[str, Any]]) -> LocustCost | None:
        """From runs' figures (rps, locust_cpu_pct); None until a run measured both."""
        costs, rates = [], []
        for figures in runs:
            rps, cpu_pct = figures.get("rps"), figures.get("locust_cpu_pct")
            if isinstance(rps, int | float) and isinstance(cpu_pct, int | float) and cpu_pct > 0:
                costs.append(rps / (cpu_pct / 100))
                rates.append(rps)
        if not costs:
            return None
        return cls(rps_per_cpu_s=min(costs), peak_rps=max(rates))


def plan_workers(
    point: Point,
    spec: SweepSpec,
    *,
    given: int | None,
    cores: int | None = None,
    measured: LocustCost | None = None,
) -> WorkersChoice:
    """The point's local Locust processes: `given` (--workers N) wins, else the estimate.

    A user's own locustfile is planned from `measured` (module docstring), one process until then.
    """
    if given is not None:
        return WorkersChoice(
            workers=given, expected_rps=None, expected_cpu_pct=None, reason=f"--workers {given}"
        )
    cores = cores or os.cpu_count() or 1
    rps, how = expected_rps(point, spec)
    per_cpu_s = LOCUST_RPS_PER_CPU_S
    if spec.locustfile is not None:
        if measured is None:
            return WorkersChoice(
                workers=1,
                expected_rps=None if math.isinf(rps) else rps,
                expected_cpu_pct=None,
                reason="auto: your locustfile's cost per request is not measured before its "
                "first run: 1 process; later runs are planned from the cost measured",
            )
        per_cpu_s = measured.rps_per_cpu_s
        if math.isinf(rps):
            rps = measured.peak_rps
            how = f"closed loop: the highest rate measured, {rps:.0f}/s"
        how += f"; {per_cpu_s:.0f} requests per Locust CPU-second measured"
    workers, pct = choose_workers(rps, cores=cores, rps_per_cpu_s=per_cpu_s)
    if pct <= DEFAULT_LOCUST_CPU_TARGET_PCT:
        verdict = f"{workers} process(es) at ~{pct:.0f} % of a core each"
    else:
        need = "an unknown share" if math.isinf(pct) else f"~{pct:.0f} %"
        verdict = (
            f"capped at {workers} (the host's cores) though each may need {need} of a core "
            f"(Locust warns at {DEFAULT_LOADGEN_CPU_PCT:g} %)"
        )
    return WorkersChoice(
        workers=workers,
        expected_rps=None if math.isinf(rps) else rps,
        expected_cpu_pct=None if math.isinf(pct) else pct,
        reason=f"auto: {how}; {per_cpu_s:g} requests per Locust CPU-second: {verdict}"
        if spec.locustfile is None
        else f"auto: {how}: {verdict}",
    )
