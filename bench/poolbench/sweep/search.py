"""Adaptive search: each workload's SLO optimum from a fraction of the grid's runs.

A full grid measures every pool size at every repetition, though the answer of an SLO sweep (the
fewest connections that met the SLO in every repetition, `poolbench.analysis.optimum`) depends only
on the sizes next to the SLO boundary. `--search adaptive` runs the same points, chosen one at a
time from the verdicts so far, and only the grid's own points, so the analysis reads the result
as it reads a grid:

1. the largest size, repetition 1: the upper bound (if it misses the SLO, every size does), and
   the run with an ample pool that the models take their inputs from;
2. bisect: repetition 1 of the middle size between the largest failing and the smallest passing
   size, until they are neighbours in the grid;
3. confirm: the passing neighbour's remaining repetitions. If one fails, that size fails: the
   search goes on just above it, one size at a time.

It stops when the smallest passing size passed every trusted repetition, or when every size
failed. A run a CPU or the load generator limited says nothing about the pool, as in the analysis:
its size stays unknown and the search goes around it (if the largest size is such a run, it
probes up from the smallest size, about doubling). The decision is a pure function of the
finished runs' verdicts, so `--resume` carries on where the search stopped.

It assumes what pool sizing assumes: a size that meets the SLO is not followed by a larger size
that misses it. Sizes below the largest failing one are never run, so the analysis cannot
contradict that assumption; a full grid can (`poolbench sweep` without `--search`).

Capacity points (closed loop, `kind = "capacity"` or `"both"`) have no SLO boundary: they run as
in a grid.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from poolbench.analysis.optimum import run_failure
from poolbench.objectives import Slo
from poolbench.results import UNTRUSTED_BOTTLENECKS, RunRecord
from poolbench.spec import SLO, Point

# What a finished run says about its pool size. A run a CPU or the load generator limited says
# nothing (the analysis leaves it out): it neither passes nor fails its size.
PASS, FAIL, UNTRUSTED = "pass", "fail", "untrusted"


def run_verdict(point: Point, record: RunRecord, slo: Slo) -> str:
    """PASS or FAIL as the analysis judges the run (`run_failure`), or UNTRUSTED."""
    if record.figures.get("bottleneck") in UNTRUSTED_BOTTLENECKS:
        return UNTRUSTED
    row = {**point.as_dict(), **record.figures}
    return PASS if run_failure(row, slo, record.endpoints) is None else FAIL


@dataclass(kw_only=True)
class Line:
    """One workload config of the grid: its points by (pool size, repetition)."""

    sizes: list[int]
    repetitions: int
    points: dict[tuple[int, int], Point] = field(default_factory=dict)

    def next_point(self, verdicts: Mapping[str, str]) -> Point | None:
        """The next point to run given the verdicts so far (by run_id), or None: done."""
        known = {
            key: verdict
            for key, point in self.points.items()
            if (verdict := verdicts.get(point.run_id)) is not None
        }
        top = len(self.sizes) - 1
        if (self.sizes[top], 1) not in known:
            return self._first(top)  # the upper bound, and the models' unconstrained reference
        lo = max((i for i in range(top + 1) if self._has(known, i, FAIL)), default=-1)
        hi = next((i for i in range(lo + 1, top + 1) if self._has(known, i, PASS)), None)
        # Sizes whose first repetition is still to run (one that ran untrusted stays unknown).
        untried = [i for i in range(lo + 1, top + 1) if (self.sizes[i], 1) not in known]
        # A size that passed once and then failed puts the boundary just above it.
        near = any(self._has(known, i, PASS) for i in range(lo + 1))
        if hi is None:
            if not untried:
                return None  # every size failed, or none could be judged
            return self._first(untried[0] if near else self._probe(lo, untried))
        between = [i for i in untried if i < hi]
        if between:
            middle = (lo + hi) / 2
            return self._first(between[0] if near else min(between, key=lambda i: abs(i - middle)))
        size = self.sizes[hi]
        for rep in range(1, self.repetitions + 1):
            if (size, rep) not in known:
                return self.points[(size, rep)]
        return None  # the smallest passing size passed every trusted repetition

    def _probe(self, lo: int, untried: list[int]) -> int:
        """Without an upper bound: the smallest size, then sizes about doubling."""
        if lo < 0:
            return untried[0]
        doubled = [i for i in untried if self.sizes[i] >= 2 * self.sizes[lo]]
        return doubled[0] if doubled else untried[-1]

    def _first(self, index: int) -> Point:
        return self.points[(self.sizes[index], 1)]

    def _has(self, known: Mapping[tuple[int, int], str], index: int, verdict: str) -> bool:
        size = self.sizes[index]
        return any(v == verdict for (s, _), v in known.items() if s == size)


def _line_key(point: Point) -> tuple[Any, ...]:
    """Everything that makes a point but its pool size and repetition."""
    values = asdict(point)
    for key in ("run_id", "pool_size", "repetition"):
        del values[key]
    return tuple(sorted(values.items()))


@dataclass(kw_only=True)
class AdaptiveSearch:
    """The grid's SLO points as lines searched side by side; capacity points run in full."""

    lines: list[Line]
    always: list[Point]
    slo: Slo

    @classmethod
    def of(cls, points: Sequence[Point], slo: Slo, repetitions: int) -> AdaptiveSearch:
        lines: dict[tuple[Any, ...], Line] = {}
        always = []
        for point in points:
            if point.experiment != SLO:
                always.append(point)
                continue
            line = lines.setdefault(_line_key(point), Line(sizes=[], repetitions=repetitions))
            line.points[(point.pool_size, point.repetition)] = point
        for line in lines.values():
            line.sizes = sorted({size for size, _ in line.points})
        return cls(lines=list(lines.values()), always=always, slo=slo)

    def next_point(self, finished: Mapping[str, RunRecord]) -> Point | None:
        """The next point to run given the finished runs' records, by run_id."""
        unfinished = [p for p in self.always if p.run_id not in finished]
        if unfinished:
            return unfinished[0]
        verdicts = {
            p.run_id: run_verdict(p, finished[p.run_id], self.slo)
            for line in self.lines
            for p in line.points.values()
            if p.run_id in finished
        }
        # Lines take turns: each next point comes from the line with the fewest runs so far.
        candidates = [
            (sum(p.run_id in finished for p in line.points.values()), index, chosen)
            for index, line in enumerate(self.lines)
            if (chosen := line.next_point(verdicts)) is not None
        ]
        return min(candidates, key=lambda c: (c[0], c[1]))[2] if candidates else None
