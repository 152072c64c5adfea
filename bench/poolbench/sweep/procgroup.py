"""Process groups: start a child as a group leader, stop a group, and our one signal policy.

Every process poolbench starts (Postgres, PgBouncer, the app, Locust, seeding) leads a new
session, so a Ctrl-C in the terminal reaches only us, and stopping the group also stops what
the leader forked (backends, workers). The kernel SIGTERMs the leader if we die unannounced.

Stopping is one policy for every kind of child: the child's own shutdown signal, a grace period
for the leader to exit, then SIGKILL to the whole group, repeated until nothing of it is left.

Incoming SIGINT and SIGTERM raise `Interrupted`, so `with` blocks and `finally` clauses unwind
and stop what they started; while that cleanup runs, further signals are ignored.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from types import FrameType
from typing import NoReturn

import psutil

from poolbench.errors import Interrupted

DEFAULT_GRACE_S = 10.0
DEFAULT_KILL_TIMEOUT_S = 5.0
UNWIND_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_PR_SET_PDEATHSIG = 1
_SWEEP_INTERVAL_S = 0.05

# Our own child (subprocess) or a process we did not start (a dead owner's postmaster).
Leader = subprocess.Popen[bytes] | psutil.Process


def die_with_parent() -> None:
    """Ask the kernel to SIGTERM this (child) process when its parent dies; a preexec_fn."""
    # Belt and braces: if the benchmark process is SIGKILLed, no `finally` runs.
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def spawn_leader(
    argv: Sequence[str],
    *,
    log_path: Path | None,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    user: str | None = None,
    shell: bool = False,
) -> subprocess.Popen[bytes]:
    """Start argv as the leader of a new process group, stdout and stderr to log_path."""
    log = open(log_path, "ab") if log_path else None  # noqa: SIM115 - handed to the child
    try:
        return subprocess.Popen(
            argv[0] if shell else list(argv),
            env=dict(env) if env is not None else None,
            cwd=cwd,
            user=user,
            stdout=log or subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=die_with_parent,
            shell=shell,
        )
    finally:
        if log is not None:
            log.close()


def file_tail(path: Path | None, lines: int = 3) -> str:
    """The last lines of a child's log on one line, for error messages."""
    if path is None or not path.exists():
        return "no log"
    text = path.read_text(errors="replace").strip().splitlines()
    return " | ".join(line.strip() for line in text[-lines:]) or "empty log"


def _signal_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _wait(leader: Leader, timeout_s: float) -> bool:
    """True once the leader has exited (and, if it is our child, been reaped)."""
    try:
        leader.wait(timeout=timeout_s)
    except (subprocess.TimeoutExpired, psutil.TimeoutExpired):
        return False
    return True


def stop_group(leader: Leader, signum: int, grace_s: float = DEFAULT_GRACE_S) -> int | None:
    """Stop the leader's whole group: signum, grace_s for the leader, then SIGKILL to the rest.

    Return the leader's exit code if signum alone stopped it (None for one not our child).
    """
    pgid = leader.pid  # a session leader: pgid == pid
    _signal_group(pgid, signum)
    stopped = _wait(leader, grace_s)
    if not stopped:
        _signal_group(pgid, signal.SIGKILL)
        _wait(leader, DEFAULT_KILL_TIMEOUT_S)
    # Forked helpers (Locust --processes workers, a killed postmaster's backends) may outlive
    # their leader.
    deadline = time.monotonic() + DEFAULT_KILL_TIMEOUT_S
    while _group_alive(pgid) and time.monotonic() < deadline:
        _signal_group(pgid, signal.SIGKILL)
        time.sleep(_SWEEP_INTERVAL_S)
    if not stopped:
        return None
    return leader.returncode if isinstance(leader, subprocess.Popen) else None


def _raise_interrupted(signum: int, _frame: FrameType | None) -> NoReturn:
    raise Interrupted(signum)


def unwind_on_sigterm() -> None:
    """Make SIGTERM raise Interrupted, as SIGINT raises KeyboardInterrupt, if nobody handles it.

    Called by a server's start: a plain `with PostgresServer()` then stops it on SIGTERM too.
    """
    with contextlib.suppress(ValueError):  # not the main thread: the caller owns signals
        if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
            signal.signal(signal.SIGTERM, _raise_interrupted)


@contextlib.contextmanager
def signals_unwind(cleanup: Callable[[], None]) -> Iterator[None]:
    """In the block SIGINT and SIGTERM raise Interrupted; cleanup then runs with both ignored."""
    previous = {signum: signal.getsignal(signum) for signum in UNWIND_SIGNALS}
    for signum in previous:
        signal.signal(signum, _raise_interrupted)
    try:
        yield
    finally:
        # A second Ctrl-C must not cut the cleanup short and leave orphans.
        for signum in previous:
            signal.signal(signum, signal.SIG_IGN)
        try:
            cleanup()
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
