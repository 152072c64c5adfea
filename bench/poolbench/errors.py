"""One exception tree: every error poolbench raises on purpose derives from PoolbenchError.

Only the CLI turns these into exit codes and one-line messages.
"""

from __future__ import annotations

import signal


class PoolbenchError(Exception):
    """Base of every error poolbench raises on purpose."""


class UsageError(PoolbenchError):
    """Bad input from the user: a spec, an option or a results directory."""


class RunError(PoolbenchError):
    """A point could not be measured (a process did not start, or exited early)."""


class Inconclusive(PoolbenchError):
    """Nothing trustworthy was measured: no pool recommendation can be made."""


class PostgresUnavailable(PoolbenchError):
    """No server binaries and no DSN: nothing to benchmark against."""


class PostgresStartError(PoolbenchError):
    """The throwaway cluster did not come up."""


class Interrupted(PoolbenchError):
    """SIGINT or SIGTERM arrived: unwind, stop every child, keep what is finished."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
