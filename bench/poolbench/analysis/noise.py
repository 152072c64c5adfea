"""Can two configs be told apart? The optimum against its neighbour, from the repetitions' spread.

Each figure is the mean of a config's trusted repetitions with its 95% t-interval (aggregate's
`p95_ms_ci` and `rps_ci`). Two configs are told apart when the intervals of their p95 or of their
served rate do not overlap; overlapping intervals mean the sweep cannot rank them. With one
repetition there is no interval: the spread is unknown, and the verdict says so. The optimum's
SLO verdict is within noise when its p95 interval contains the SLO's limit.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd

from poolbench.analysis.aggregate import OTHER_POOL_AXES, at_optimum, eligible
from poolbench.fmt import opt_float
from poolbench.objectives import Slo

# (column, its interval column, unit) of the figures compared.
FIGURES = (("p95_ms", "p95_ms_ci", "ms"), ("rps", "rps_ci", "rps"))


@dataclass(frozen=True, kw_only=True)
class Interval:
    """A config's mean over its repetitions and the half-width of its 95% t-interval."""

    mean: float
    half_width: float | None  # None: one repetition, the spread is unknown
    reps: int

    @classmethod
    def of(cls, row: Mapping[str, Any], column: str, ci_column: str) -> Interval | None:
        """The interval of `column` in an aggregated row; None when the figure is blank."""
        mean = opt_float(row.get(column))
        if mean is None:
            return None
        reps = int(opt_float(row.get("reps")) or 0)
        half = opt_float(row.get(ci_column))
        return cls(mean=mean, half_width=half if reps >= 2 else None, reps=reps)

    def overlaps(self, other: Interval) -> bool | None:
        """Do the two intervals overlap? None when either spread is unknown."""
        if self.half_width is None or other.half_width is None:
            return None
        return abs(self.mean - other.mean) <= self.half_width + other.half_width

    def contains(self, value: float) -> bool | None:
        """Is `value` inside the interval? None when the spread is unknown."""
        if self.half_width is None:
            return None
        return abs(self.mean - value) <= self.half_width

    def text(self, unit: str) -> str:
        """`82.4 +- 9.1 ms`, `1019 +- 12 rps`, or `82.4 ms` without a spread."""
        half = self.half_width
        spread = "" if half is None else f" +- {half:.{0 if half >= 10 else 1}f}"
        return f"{self.mean:.{0 if abs(self.mean) >= 100 else 1}f}{spread} {unit}"


@dataclass(frozen=True, kw_only=True)
class NoiseVerdict:
    """The optimum against its neighbour, and whether its SLO verdict is within noise."""

    optimum: str
    neighbour: str | None
    # True: told apart; False: cannot be told apart; None: a spread is unknown (1 repetition).
    apart: bool | None
    # The figure that tells them apart (`p95_ms` or `rps`), when one does.
    apart_on: str | None
    slo_within_noise: bool | None
    lines: list[str]


def config_name(row: Mapping[str, Any]) -> str:
    """`pool 4` (`pool 4+2` with max_overflow 2)."""
    pool = opt_float(row.get("pool_size"))
    overflow = opt_float(row.get("max_overflow")) or 0.0
    name = "pool ?" if pool is None else f"pool {pool:g}"
    return name + (f"+{overflow:g}" if overflow else "")


def neighbour_row(table: pd.DataFrame, optimum: Mapping[str, Any]) -> dict[str, Any] | None:
    """The optimum's nearest rival on the pool axis: the next smaller config, else the next larger.

    Among trusted configs with the optimum's other pool axes (semaphore limit, asyncpg pool,
    PgBouncer pool) and max_overflow, so only the pool size differs.
    """
    # Chosen on the few columns it needs, then the one row taken whole: masks over every column
    # of a 2,000-config table cost more than the rest of the verdict.
    narrow = ["connections", "max_overflow", "rps", "bottleneck", *OTHER_POOL_AXES]
    rows = at_optimum(eligible(table[[c for c in narrow if c in table]]), dict(optimum))
    overflow = optimum.get("max_overflow")
    if overflow is not None and not pd.isna(overflow):
        rows = rows[rows["max_overflow"] == overflow]
    size = opt_float(optimum.get("connections"))
    if size is None or rows.empty:
        return None
    smaller = rows[rows["connections"] < size].sort_values("connections", kind="stable")
    larger = rows[rows["connections"] > size].sort_values("connections", kind="stable")
    picked = smaller.index[-1:] if not smaller.empty else larger.index[:1]
    if picked.empty:
        return None
    return {str(k): v for k, v in table.loc[picked[0]].to_dict().items()}


def _reps_text(a: Interval, b: Interval) -> str:
    if a.reps == b.reps:
        return f"{a.reps} repetition{'s' if a.reps != 1 else ''}"
    return f"{a.reps} and {b.reps} repetitions"


def noise_verdict(
    table: pd.DataFrame, optimum: Mapping[str, Any] | None, slo: Slo
) -> NoiseVerdict | None:
    """Tell the optimum from its neighbour and its p95 from the SLO's limit; None without one."""
    if optimum is None or opt_float(optimum.get("connections")) is None:
        return None
    name = config_name(optimum)
    neighbour = neighbour_row(table, optimum)
    lines: list[str] = []
    apart: bool | None = None
    apart_on: str | None = None
    if neighbour is not None:
        other = config_name(neighbour)
        pairs = [
            (column, unit, Interval.of(optimum, column, ci), Interval.of(neighbour, column, ci))
            for column, ci, unit in FIGURES
        ]
        known = [(c, u, a, b) for c, u, a, b in pairs if a is not None and b is not None]
        figures = ", ".join(
            f"{'p95 ' if c == 'p95_ms' else ''}{a.text(u)} vs {b.text(u)}" for c, u, a, b in known
        )
        overlaps = [(c, a.overlaps(b)) for c, _, a, b in known]
        if known and all(o is not None for _, o in overlaps):
            disjoint = [c for c, o in overlaps if o is False]
            apart = bool(disjoint)
            apart_on = disjoint[0] if disjoint else None
            reps = _reps_text(known[0][2], known[0][3])
            verdict = (
                f"told apart on {'p95' if apart_on == 'p95_ms' else apart_on} at {reps}"
                if apart
                else f"cannot be told apart at {reps}"
            )
        elif known:
            verdict = (
                "spread unknown with 1 repetition of a config (repeat points: "
                "timing.repetitions >= 3)"
            )
        else:
            verdict = "no figures to compare"
        lines.append(f"{name} and {other}: {figures}, {verdict}")
    within: bool | None = None
    p95 = Interval.of(optimum, "p95_ms", "p95_ms_ci")
    if slo.p95_ms is not None and p95 is not None:
        within = p95.contains(slo.p95_ms)
        if within:
            lines.append(
                f"{name}'s p95 {p95.text('ms')} against the SLO's {slo.p95_ms:g} ms: the SLO "
                f"verdict is within noise at {_reps_text(p95, p95)}"
            )
        elif within is None:
            lines.append(
                f"{name}'s p95 {p95.text('ms')} against the SLO's {slo.p95_ms:g} ms: spread "
                "unknown at 1 repetition, so is how close it is"
            )
    return NoiseVerdict(
        optimum=name,
        neighbour=None if neighbour is None else config_name(neighbour),
        apart=apart,
        apart_on=apart_on,
        slo_within_noise=within,
        lines=lines,
    )
