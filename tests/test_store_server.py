"""The store server speaks enough of ClickHouse's HTTP interface for clickhouse-connect.

The Store tests run over it too (the ``store`` fixture's ``http`` variant); these cover what they
do not: every insert compression the client may choose, errors, and per-client sessions.
"""

from __future__ import annotations

import uuid

import clickhouse_connect
import pytest
from clickhouse_connect.driver.exceptions import DatabaseError


@pytest.fixture
def client_for(store_server):
    opened = []

    def make(**options):
        client = clickhouse_connect.get_client(host="127.0.0.1", port=store_server.port, **options)
        opened.append(client)
        return client

    yield make
    for client in opened:
        client.close()


@pytest.mark.parametrize("compression", [False, "lz4", "gzip"])
def test_native_inserts_arrive_whole_with_every_compression(client_for, compression):
    client = client_for(compress=compression)
    table = f"t_{uuid.uuid4().hex}"
    client.command(f"CREATE TABLE {table} (id UInt32, name String, tags Array(LowCardinality(String))) ENGINE = MergeTree ORDER BY id")
    rows = [[i, f"名称 {i}", ["a", "b"][: i % 3]] for i in range(5000)]
    client.insert(table, rows, column_names=["id", "name", "tags"])
    assert client.query(f"SELECT count(), sum(id), max(name) FROM {table}").result_rows == [(5000, sum(range(5000)), "名称 999")]
    assert client.query(f"SELECT tags FROM {table} WHERE id = {{id:UInt32}}", parameters={"id": 4001}).result_rows == [(["a", "b"],)]


def test_a_failing_statement_is_a_clickhouse_error_with_its_message(client_for):
    with pytest.raises(DatabaseError, match="UNKNOWN_TABLE|Unknown table"):
        client_for().query("SELECT * FROM no_such_table")


def test_each_client_session_keeps_its_own_settings(client_for):
    first, second = client_for(), client_for()
    first.command("SET max_threads = 1")
    assert first.command("SELECT getSetting('max_threads')") == 1
    assert second.command("SELECT getSetting('max_threads')") != 1
