"""The sizing models' inputs from measured figures: one builder for `analyze` and `observe`.

A sweep's reference run and a live service's window are two sources of the same figures. Both
go through `measured_inputs`, so a figure is treated alike wherever it comes from: measured;
else a stand-in the source names (with a note saying so); else missing, and every model that
needs it says `missing input: ...` instead of sizing from a guessed number.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from poolbench.analysis.models import (
    DEFAULT_HEADROOM,
    DEFAULT_P99_WAIT_MS,
    DEFAULT_TOLERANCE,
    ModelResult,
    SizingInputs,
    UslFit,
    size_all,
)

# The measured inputs a model may need; any of them may be missing.
CONCURRENCY = "concurrency"
QUERIES = "queries_per_request"
HOLD_TIME = "hold_time_ms"
HOLD_TIME_CV = "hold_time_cv"
# The SLO's wait budget must leave a little room even when the service time fills the p95.
MIN_WAIT_BUDGET_MS = 0.1


@dataclass(frozen=True, kw_only=True)
class SizingOptions:
    """What the user gives: the database's cores, spindles, headroom, Erlang C's wait budget."""

    db_cores: int
    spindles: int = 0
    headroom: float = DEFAULT_HEADROOM
    p99_wait_ms: float = DEFAULT_P99_WAIT_MS


@dataclass(frozen=True, kw_only=True)
class StandIn:
    """A figure used in place of an unmeasured one, and the note that says so."""

    value: float | None
    note: str


@dataclass(frozen=True, kw_only=True)
class Measured:
    """One workload's figures as measured (None: not reported), over all `workers` processes.

    `stand_ins` holds, by input name (`concurrency`, `queries_per_request`, `hold_time_ms`),
    what to use when that figure is missing, e.g. a sweep's users for its mean in flight.
    """

    concurrency: float | None
    queries_per_request: float | None
    hold_time_ms: float | None
    target_rps: float | None
    hold_time_cv: float | None
    peak_concurrency: float | None = None
    # The p95 at an ample pool: with an SLO's p95, the acquire wait it leaves (Erlang C's budget).
    service_p95_ms: float | None = None
    workers: int = 1
    stand_ins: Mapping[str, StandIn] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class MeasuredInputs:
    """The models' inputs, the names of those nothing measured, and notes on stand-ins used.

    A missing input holds a placeholder of 1 in `inputs`; `models` blanks every model using it.
    """

    inputs: SizingInputs
    missing: frozenset[str]
    notes: tuple[str, ...]

    @property
    def note(self) -> str:
        """The notes as one line."""
        return "; ".join(self.notes)

    def models(
        self,
        usl: UslFit | None = None,
        usl_note: str = "",
        tolerance: float = DEFAULT_TOLERANCE,
    ) -> list[ModelResult]:
        """Every model's answer; one that needs a missing input says which instead of a size."""
        out = []
        for result in size_all(self.inputs, usl, usl_note, tolerance):
            if needs := sorted(self.missing & set(result.inputs)):
                result = replace(
                    result,
                    pool_size=None,
                    predicted_rps=None,
                    note=f"missing input: {', '.join(needs)}",
                    inputs={},
                )
            out.append(result)
        return out


def _usable(name: str, value: float | None) -> float | None:
    """The figure, or None when it is no measurement of `name`."""
    if value is None or value < 0:
        return None
    # A request makes at least one statement and holds its connection for some time.
    return None if value == 0 and name in (QUERIES, HOLD_TIME) else value


def measured_inputs(
    measured: Measured, options: SizingOptions, *, slo_p95_ms: float | None = None
) -> MeasuredInputs:
    """The inputs for one app process's pool from what was measured (see the module's rules)."""
    notes: list[str] = []
    missing: set[str] = set()
    known: dict[str, float] = {}
    for name in (CONCURRENCY, QUERIES, HOLD_TIME):
        value = _usable(name, getattr(measured, name))
        stand_in = measured.stand_ins.get(name)
        if value is None and stand_in is not None:
            value = _usable(name, stand_in.value)
            if value is not None:
                notes.append(stand_in.note)
        if value is None:
            missing.add(name)
        known[name] = 1.0 if value is None else value
    if measured.hold_time_cv is None:
        missing.add(HOLD_TIME_CV)
    budget, quantile = options.p99_wait_ms, 0.99
    if slo_p95_ms is not None and measured.service_p95_ms is not None:
        # The SLO's wait budget: what the p95 allows beyond the service time at an ample pool.
        budget, quantile = max(slo_p95_ms - measured.service_p95_ms, MIN_WAIT_BUDGET_MS), 0.95
    concurrency, peak, rate = known[CONCURRENCY], measured.peak_concurrency, measured.target_rps
    workers = measured.workers
    if workers > 1:
        # Pools are per process and the workers share the load: size one worker's pool.
        concurrency /= workers
        peak = None if peak is None else peak / workers
        rate = None if rate is None else rate / workers
        notes.append(f"rate and concurrency per worker process ({workers} workers share them)")
    inputs = SizingInputs(
        concurrency=concurrency,
        peak_concurrency=peak,
        queries_per_request=known[QUERIES],
        hold_time_ms=known[HOLD_TIME],
        target_rps=rate,
        hold_time_cv=measured.hold_time_cv,
        db_cores=options.db_cores,
        spindles=options.spindles,
        headroom=options.headroom,
        wait_budget_ms=budget,
        wait_quantile=quantile,
    )
    return MeasuredInputs(inputs=inputs, missing=frozenset(missing), notes=tuple(notes))
