"""Stopping child processes (broker, worker) the same polite way."""

from __future__ import annotations

import signal
import subprocess


def terminate(process: subprocess.Popen | None, timeout: float) -> int | None:
    """SIGTERM, then SIGKILL if it has not exited within timeout. Returns the exit code."""
    if process is None:
        return None
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode
