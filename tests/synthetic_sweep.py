"""The synthetic sweep generator's old import path, kept for tests not yet moved to the new one."""

from poolbench.analysis.synthetic import (
    SECRET,
    WINDOW_END_S,
    WINDOW_START_S,
    make_slo_sweep,
    make_sweep,
    write_locust_stats,
)

__all__ = [
    "SECRET",
    "WINDOW_END_S",
    "WINDOW_START_S",
    "make_slo_sweep",
    "make_sweep",
    "write_locust_stats",
]
