"""What the benchmarks read from /proc (streams.procfs): CPU seconds and children."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from streams.procfs import child_pids, cpu_seconds


def test_cpu_seconds_count_a_busy_child_and_child_pids_find_it():
    busy = "import time\nend = time.process_time() + 0.5\nwhile time.process_time() < end: pass\ntime.sleep(30)"
    child = subprocess.Popen([sys.executable, "-c", busy])
    try:
        assert child.pid in child_pids(os.getpid())
        deadline = time.monotonic() + 20
        while cpu_seconds(child.pid) < 0.5 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert 0.5 <= cpu_seconds(child.pid) < 2.0  # the loop's 0.5 s and the interpreter's start, then asleep
        assert cpu_seconds(os.getpid()) > 0
    finally:
        child.kill()
        child.wait()
