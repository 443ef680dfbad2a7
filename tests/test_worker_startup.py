"""What a worker readies while it starts, so that its first batch does not wait for it."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from streams.procfs import child_pids
from streams.worker_process import WorkerProcess
from tests.test_end_to_end import worker_env


def _loaded_scikit_learn(pid: int) -> bool:
    return "sklearn" in Path(f"/proc/{pid}/maps").read_text()


def test_an_idle_worker_has_its_fit_process_and_store_ready(broker, tmp_path):
    """Before any report arrives: the fit process is started with scikit-learn loaded (the first
    refit used to wait ~1 s for both), and ClickHouse is open with its tables (chDB ~0.3 s)."""
    data_dir = tmp_path / "data"

    def ready(worker: WorkerProcess) -> tuple[bool, bool]:
        fit_process = any(_loaded_scikit_learn(pid) for pid in child_pids(worker.process.pid))
        return fit_process, (data_dir / "clickhouse" / "data" / "riskwatch" / "results").is_dir()

    async def idle_worker() -> tuple[bool, bool, bool]:
        worker = WorkerProcess(worker_env(broker, data_dir, "startup"), tmp_path / "worker.log")
        worker.start()
        try:
            await worker.wait_ready()
            deadline = time.monotonic() + 30
            while not all(ready(worker)) and time.monotonic() < deadline:
                await asyncio.sleep(0.2)
            return *ready(worker), _loaded_scikit_learn(worker.process.pid)
        finally:
            assert worker.stop() == 0

    fit_process_ready, store_ready, worker_loaded_scikit_learn = asyncio.run(idle_worker())
    assert fit_process_ready
    assert store_ready
    assert not worker_loaded_scikit_learn, "the worker leaves scikit-learn (~100 MB) to its fit process"
