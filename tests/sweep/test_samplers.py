"""Process-tree sampling from a pid or a cgroup's process list (real processes, no load)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from poolbench.sweep.samplers import ProcessTree

BURN = "import time\nend = time.monotonic() + 5\nwhile time.monotonic() < end: pass"


def test_a_cgroup_s_processes_are_measured_like_a_process_tree(tmp_path: Path) -> None:
    # cgroup.procs is one pid per line, in v1 and v2 alike; a directory standing in for the
    # service's cgroup, listing a real busy process, exercises the same reading.
    burner = subprocess.Popen([sys.executable, "-c", BURN])
    try:
        cgroup = tmp_path / "myapp.service"
        cgroup.mkdir()
        (cgroup / "cgroup.procs").write_text(f"{burner.pid}\n")
        tree = ProcessTree(None, cgroup=cgroup)
        assert tree.measured
        tree.sample(first=True)
        time.sleep(1.0)
        tree.sample()
        assert 0.5 < tree.cpu_seconds() < 1.5  # one busy core for a second
        assert tree.peak_rss_bytes > 1_000_000 and tree.max_processes == 1
    finally:
        burner.kill()
        burner.wait(timeout=10)


def test_nothing_given_is_not_measured() -> None:
    tree = ProcessTree(None)
    tree.sample(first=True)
    tree.sample()
    assert not tree.measured and tree.cpu_seconds() == 0
