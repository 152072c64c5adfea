"""A registry of the sweep's child process groups and cleanups, undone on exit or signal."""

from __future__ import annotations

import contextlib
import signal
import subprocess
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil

from poolbench.sweep.procgroup import (
    DEFAULT_GRACE_S,
    file_tail,
    signals_unwind,
    spawn_leader,
    stop_group,
)


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
        return file_tail(self.log_path, lines)


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
        process = spawn_leader(argv, log_path=log_path, env=env, cwd=cwd, shell=shell)
        child = Child(name=name, process=process, log_path=log_path, stop_signal=stop_signal)
        self._children.append(child)
        return child

    def defer(self, callback: Callable[[], None]) -> None:
        """Run callback at cleanup (e.g. stopping a Postgres server), after the children."""
        self._callbacks.append(callback)

    def stop(self, child: Child, timeout_s: float = DEFAULT_GRACE_S) -> int | None:
        """Stop the child's whole group: its stop signal, then SIGKILL after timeout_s."""
        code = stop_group(child.process, child.stop_signal, timeout_s)
        self.release(child)
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


@contextlib.contextmanager
def supervised() -> Iterator[Children]:
    """Yield a registry; on exit (normal, error, SIGINT or SIGTERM) stop everything in it."""
    children = Children()
    with signals_unwind(children.stop_all):
        yield children
