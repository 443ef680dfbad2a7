"""Run a worker as a child process and watch it through its /metrics page.

Used by the demo and the end-to-end tests: the worker is exactly what production runs
(``riskwatch worker``), configured only through its environment.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import urllib.request
from collections import defaultdict
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from streams.children import terminate


def read_metrics(url: str, timeout: float = 2.0) -> dict[str, float]:
    """Each sample name (counters with their _total suffix) summed over its labels."""
    with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - loopback URL from settings
        text = response.read().decode()
    totals: dict[str, float] = defaultdict(float)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            totals[sample.name] += sample.value
    return dict(totals)


class WorkerProcess:
    def __init__(self, env: dict[str, str], log_file: Path) -> None:
        self.env = {**os.environ, **env}
        self.log_file = log_file
        host = env.get("RISKWATCH_WEB_HOST", "127.0.0.1")
        self.metrics_url = f"http://{host}:{env['RISKWATCH_WEB_PORT']}/metrics"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        out = open(self.log_file, "ab")  # noqa: SIM115 - lives as long as the child
        self.process = subprocess.Popen(
            [sys.executable, "-m", "streams.cli", "worker"],
            env=self.env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C in the terminal is the parent's to handle
        )

    def metrics(self) -> dict[str, float]:
        return read_metrics(self.metrics_url)

    async def wait_ready(self, timeout: float = 90.0) -> None:
        """Until the worker serves /metrics and has joined the group (its agents are running)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                if (await asyncio.to_thread(self.metrics)).get("riskwatch_assigned_partitions", 0) > 0:
                    return
            except OSError:
                pass
            await asyncio.sleep(0.3)
        raise TimeoutError(f"worker not ready after {timeout:.0f} s; see {self.log_file}")

    async def wait_drained(self, reports_sent: int, timeout: float = 120.0, settle: float = 1.0) -> dict[str, float]:
        """Until every report sent has been handled (its in-place results stored) and every result envelope processed."""
        deadline = time.monotonic() + timeout
        last: dict[str, float] = {}
        while time.monotonic() < deadline:
            self.check_alive()
            last = await asyncio.to_thread(self.metrics)
            handled = last.get("riskwatch_reports_handled_total", 0)
            sent = last.get("riskwatch_result_batches_sent_total", 0)
            processed = last.get("riskwatch_result_batches_processed_total", 0)
            if handled >= reports_sent and processed >= sent:
                await asyncio.sleep(settle)
                again = await asyncio.to_thread(self.metrics)
                if again.get("riskwatch_result_batches_processed_total", 0) >= again.get("riskwatch_result_batches_sent_total", 0):
                    return again
            await asyncio.sleep(0.3)
        raise TimeoutError(f"worker did not drain within {timeout:.0f} s (last metrics: {last}); see {self.log_file}")

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM (Faust's graceful shutdown), then SIGKILL if it hangs. Returns the exit code."""
        code = terminate(self.process, timeout)
        return 0 if code is None else code

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def check_alive(self) -> None:
        """Raise, with the end of its log, if the worker has exited."""
        if self.process is not None and self.process.poll() is not None:
            tail = self.log_file.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"worker exited with code {self.process.returncode}:\n{tail}")
