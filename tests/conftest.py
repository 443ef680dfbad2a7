"""Shared fixtures: report builders and an embedded ClickHouse store per test."""

from __future__ import annotations

import copy
import json
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


@pytest.fixture
def store(tmp_path: Path):
    """A Store on a fresh chDB directory, closed afterwards (chDB allows one directory per process)."""
    from streams.clickhouse import Store, connect, ensure_schema
    from streams.settings import Settings

    client = connect(Settings(clickhouse_url=f"chdb://{tmp_path / 'clickhouse'}"))
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
