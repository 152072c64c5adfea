"""Child processes in their own process groups, and a registry that stops them all."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

import psutil

from poolbench.errors import Interrupted
from poolbench.sweep.pg import die_with_parent

DEFAULT_STOP_TIMEOUT_S = 10.0
DEFAULT_KILL_TIMEOUT_S = 5.0


@dataclass(frozen=True, kw_only=True)
class Child:
    """A started child: the leader of its own process group (pgid == pid)."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path | None
    stop_signal: int

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, lines: int = 3) -> str:
        """Return the last lines of the child's log on one line, for error messages."""
        if self.log_path is None or not self.log_path.exists():
            return "no log"
        text = self.log_path.read_text(errors="replace").strip().splitlines()
        return " | ".join(line.strip() for line in text[-lines:]) or "empty log"


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


class Children:
    """A registry of child process groups and cleanup callbacks, undone in reverse order.

    Every child starts in a new session, so a Ctrl-C in the terminal reaches only the runner,
    which then stops the children in order (load generator, app, database) instead of all at once.
    """

    def __init__(self) -> None:
        self._children: list[Child] = []
        self._callbacks: list[Callable[[], None]] = []

    def spawn(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str],
        cwd: Path | None = None,
        log_path: Path | None = None,
        stop_signal: int = signal.SIGTERM,
        shell: bool = False,
    ) -> Child:
        """Start argv in a new process group, output to log_path, and register it."""
        log = open(log_path, "ab") if log_path else subprocess.DEVNULL  # noqa: SIM115
        try:
            process = subprocess.Popen(
                argv if not shell else argv[0],
                env=dict(env),
                cwd=cwd,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                preexec_fn=die_with_parent,
                shell=shell,
            )
        finally:
            if log_path:
                log.close()  # type: ignore[union-attr]
        child = Child(name=name, process=process, log_path=log_path, stop_signal=stop_signal)
        self._children.append(child)
        return child

    def defer(self, callback: Callable[[], None]) -> None:
        """Run callback at cleanup (e.g. stopping a Postgres server), after the children."""
        self._callbacks.append(callback)

    def stop(self, child: Child, timeout_s: float = DEFAULT_STOP_TIMEOUT_S) -> int | None:
        """Stop the child's whole group: its stop signal, then SIGKILL after timeout_s."""
        _signal_group(child.pid, child.stop_signal)
        try:
            code: int | None = child.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            _signal_group(child.pid, signal.SIGKILL)
            code = None
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.process.wait(timeout=DEFAULT_KILL_TIMEOUT_S)
        # Forked helpers (Locust --processes workers) may outlive their leader.
        deadline = time.monotonic() + DEFAULT_KILL_TIMEOUT_S
        while _group_alive(child.pid) and time.monotonic() < deadline:
            _signal_group(child.pid, signal.SIGKILL)
            time.sleep(0.05)
        if child in self._children:
            self._children.remove(child)
        return code

    def release(self, child: Child) -> None:
        """Forget a child that exited, leaving its group alone.

        A target's restart command may leave the restarted service running in its group; that
        service is the user's, not ours to stop.
        """
        if child in self._children:
            self._children.remove(child)

    def wait(self, child: Child, timeout_s: float) -> int | None:
        """Wait for the child to exit on its own; None if it is still running."""
        try:
            return child.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return None

    def stop_all(self) -> None:
        """Stop every child (newest first), then run the deferred callbacks (newest first)."""
        while self._children:
            self.stop(self._children[-1])
        while self._callbacks:
            with contextlib.suppress(Exception):
                self._callbacks.pop()()

    def pids(self) -> list[int]:
        """Return the pids of every live registered process and its descendants."""
        pids: list[int] = []
        for child in self._children:
            with contextlib.suppress(psutil.Error):
                proc = psutil.Process(child.pid)
                pids += [proc.pid] + [p.pid for p in proc.children(recursive=True)]
        return pids


def _raise_interrupted(signum: int, _frame: FrameType | None) -> None:
    raise Interrupted(signum)


@contextlib.contextmanager
def supervised() -> Iterator[Children]:
    """Yield a registry; on exit (normal, error, SIGINT or SIGTERM) stop everything in it."""
    children = Children()
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    for sig in previous:
        signal.signal(sig, _raise_interrupted)
    try:
        yield children
    finally:
        # A second Ctrl-C must not cut the cleanup short and leave orphans.
        for sig in previous:
            signal.signal(sig, signal.SIG_IGN)
        try:
            children.stop_all()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
