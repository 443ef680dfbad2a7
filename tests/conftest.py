"""Shared fixtures: report builders and an embedded ClickHouse store per test."""

from __future__ import annotations

import copy
import json
import uuid
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path

import pytest

EXAMPLE_NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)


def example_report() -> dict:
    text = resources.files("schemas.examples").joinpath("lab_report.v1.example.json").read_text(encoding="utf-8")
    return json.loads(text)


@pytest.fixture
def report() -> dict:
    return copy.deepcopy(example_report())


@pytest.fixture(scope="session")
def store_server(tmp_path_factory):
    """One ``riskwatch store-server`` process for the session: the embedded store over ClickHouse HTTP."""
    from streams.broker import free_port
    from streams.store_server import StoreServerProcess

    folder = tmp_path_factory.mktemp("store-server")
    server = StoreServerProcess(folder / "data", "127.0.0.1", free_port(), folder / "store-server.log")
    server.start()
    yield server
    server.stop()


@pytest.fixture(params=["chdb", "http"])
def store(request, tmp_path: Path):
    """A Store on a fresh database: chDB in-process (a fresh directory; chDB allows one per
    process), and the same over HTTP through the store server, as workers reach a server."""
    from streams.clickhouse import Store, connect, ensure_schema
    from streams.settings import Settings

    if request.param == "chdb":
        settings = Settings(clickhouse_url=f"chdb://{tmp_path / 'clickhouse'}")
    else:
        server = request.getfixturevalue("store_server")
        settings = Settings(clickhouse_url=server.url, clickhouse_database=f"test_{uuid.uuid4().hex}")
    client = connect(settings)
    ensure_schema(client)
    yield Store(client)
    client.close()


@pytest.fixture(scope="session")
def broker():
    """One real tansu broker for the session's end-to-end tests (each uses its own consumer group)."""
    import asyncio

    from streams.broker import LocalBroker, free_port

    local = LocalBroker("127.0.0.1", free_port())
    asyncio.run(local.start())
    yield local
    local.stop()
