"""One way to stop a process group, and one policy for the signals we receive."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil

from poolbench.sweep.procgroup import file_tail, spawn_leader, stop_group
from tests.conftest import ROOT


def _wait_for_line(path: Path, timeout_s: float = 10) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().strip():
            return path.read_text().strip()
        time.sleep(0.05)
    raise AssertionError(f"nothing written to {path}")


def test_a_leader_that_obeys_its_signal_gives_its_exit_code(tmp_path: Path) -> None:
    leader = spawn_leader(["sleep", "60"], log_path=tmp_path / "log")
    assert stop_group(leader, signal.SIGTERM, grace_s=10) == -signal.SIGTERM


def test_a_group_deaf_to_its_signal_is_killed_helpers_and_all(tmp_path: Path) -> None:
    log = tmp_path / "log"
    # The leader and the helper it forks both ignore SIGTERM (an ignored signal survives exec).
    leader = spawn_leader(["sh", "-c", 'trap "" TERM; sleep 60 & echo $!; wait'], log_path=log)
    helper = int(_wait_for_line(log))
    began = time.monotonic()
    assert stop_group(leader, signal.SIGTERM, grace_s=0.5) is None
    assert time.monotonic() - began < 10
    assert leader.returncode == -signal.SIGKILL
    assert not psutil.pid_exists(helper) or psutil.Process(helper).status() == "zombie"


def test_helpers_that_outlive_their_leader_are_stopped(tmp_path: Path) -> None:
    log = tmp_path / "log"
    leader = spawn_leader(["sh", "-c", 'trap "" TERM; sleep 60 & echo $!; exit 0'], log_path=log)
    helper = int(_wait_for_line(log))
    leader.wait(timeout=10)
    assert psutil.pid_exists(helper)
    stop_group(leader, signal.SIGTERM, grace_s=1)
    assert not psutil.pid_exists(helper) or psutil.Process(helper).status() == "zombie"


def test_file_tail_is_one_line(tmp_path: Path) -> None:
    log = tmp_path / "log"
    assert file_tail(log) == "no log"
    log.write_text("a\n  b  \nc\nd\n")
    assert file_tail(log) == "b | c | d"
    log.write_text("\n")
    assert file_tail(log) == "empty log"


SIGTERM_SCRIPT = textwrap.dedent(
    """
    import os, signal, sys
    from poolbench.errors import Interrupted
    from poolbench.sweep.procgroup import unwind_on_sigterm
    if sys.argv[1] == "handled":
        signal.signal(signal.SIGTERM, lambda *_: print("theirs", flush=True))
    unwind_on_sigterm()
    try:
        os.kill(os.getpid(), signal.SIGTERM)
        signal.pause() if sys.argv[1] == "default" else None
    except Interrupted as exc:
        print("unwound", exc.signum, flush=True)
    """
)


def test_sigterm_unwinds_unless_someone_else_handles_it() -> None:
    for mode, expected in (("default", f"unwound {signal.SIGTERM.value}"), ("handled", "theirs")):
        out = subprocess.run(
            [sys.executable, "-c", SIGTERM_SCRIPT, mode],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 0 and out.stdout.strip() == expected, out.stderr
