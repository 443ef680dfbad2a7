"""The pipeline bench's CPU accounting, and the worker's fit process it accounts for."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

from streams.bench_pipeline import child_pids, cpu_seconds
from streams.worker_process import WorkerProcess
from tests.test_end_to_end import worker_env


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


def _loaded_scikit_learn(pid: int) -> bool:
    return "sklearn" in Path(f"/proc/{pid}/maps").read_text()


def test_the_worker_readies_its_fit_process_at_start_up(broker, tmp_path):
    """The fit process is started, with scikit-learn loaded, before any result arrives: the first
    refit does not make a batch wait for a process start and an import (~1 s)."""

    async def idle_worker() -> tuple[bool, bool]:
        """Whether the fit process, then the worker itself, has scikit-learn loaded."""
        worker = WorkerProcess(worker_env(broker, tmp_path / "data", "fit-ready"), tmp_path / "worker.log")
        worker.start()
        try:
            await worker.wait_ready()
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                if any(_loaded_scikit_learn(pid) for pid in child_pids(worker.process.pid)):
                    break
                await asyncio.sleep(0.2)
            return any(_loaded_scikit_learn(pid) for pid in child_pids(worker.process.pid)), _loaded_scikit_learn(worker.process.pid)
        finally:
            assert worker.stop() == 0

    fit_process_ready, worker_loaded_it = asyncio.run(idle_worker())
    assert fit_process_ready
    assert not worker_loaded_it, "the worker leaves scikit-learn (~100 MB) to its fit process"
