"""ClickHouse access: connect (chDB in-process or a server), apply the DDL, write and look up.

The same clickhouse-connect client API serves both targets: ``chdb:///DIR`` opens the
embedded engine, ``http(s)://host:port`` a server. Writes are batched inserts; a replay
inserts identical rows that ReplacingMergeTree collapses. No SQL is ever built from message
text: values travel as insert data or bound parameters.
"""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path
from urllib.parse import urlparse

import clickhouse_connect
from clickhouse_connect.driver.client import Client

from schemas.results import Alert, LabResult, Manufacturer, Severity
from streams.settings import Settings

RESULT_COLUMNS = (
    "result_id", "report_id", "sample_id", "lab_id", "lab_name", "city", "programme", "category",
    "product_name", "manufacturer_name", "manufacturer_uscc", "sampling_site", "site_kind",
    "sampled_at", "tested_at", "published_at", "test_item", "value", "unit", "qualitative", "lod",
    "limit_value", "limit_type", "limit_ratio", "standard", "verdict", "reported_value",
    "reported_unit", "synthetic", "source_partition", "source_offset",
)  # fmt: skip

ALERT_COLUMNS = (
    "alert_id", "detector", "signal", "severity", "score", "title", "title_zh", "explanation",
    "explanation_zh", "category", "test_item", "cities", "labs", "manufacturer_name",
    "manufacturer_uscc", "evidence", "count", "first_seen", "last_seen", "detected_at", "synthetic",
)  # fmt: skip


def ddl_statements() -> list[str]:
    """The CREATE statements of ``schemas/clickhouse``, in file order."""
    folder = resources.files("schemas.clickhouse")
    names = sorted(entry.name for entry in folder.iterdir() if entry.name.endswith(".sql"))
    statements: list[str] = []
    for name in names:
        text = "\n".join(
            line for line in folder.joinpath(name).read_text(encoding="utf-8").splitlines() if not line.lstrip().startswith("--")
        )
        statements.extend(part.strip() for part in text.split(";") if part.strip())
    return statements


def connect(settings: Settings, *, database: str | None = None) -> Client:
    """A client on the configured target, with the riskwatch database as default."""
    url = settings.effective_clickhouse_url
    database = database if database is not None else settings.clickhouse_database
    if url.startswith("chdb://"):
        Path(url.removeprefix("chdb://")).mkdir(parents=True, exist_ok=True)
        common: dict = {"dsn": url}
    else:
        parsed = urlparse(url)
        common = dict(
            host=parsed.hostname,
            port=parsed.port or (8443 if parsed.scheme == "https" else 8123),
            username=settings.clickhouse_user,
            password=settings.clickhouse_password.get_secret_value(),
            secure=parsed.scheme == "https",
            verify=settings.clickhouse_verify,
        )
        if settings.clickhouse_ca_file:
            common["ca_cert"] = settings.clickhouse_ca_file
    # chDB lets a process hold one data directory at a time: the admin client is closed
    # before the working one opens, so that closing the latter really releases it.
    admin = clickhouse_connect.get_client(**common)
    try:
        admin.command(f"CREATE DATABASE IF NOT EXISTS {_identifier(database)}")
    finally:
        admin.close()
    return clickhouse_connect.get_client(database=database, **common)


def without_dataframes() -> None:
    """Tell clickhouse-connect that this process passes it no pandas DataFrames.

    Its insert checks whether the data is a DataFrame, and imports pandas (installed with chDB) on a
    client's first insert to check it: ~40 MB of a worker's memory and ~0.2 s, for a check that
    riskwatch's columns of Python values never need. The library resolves pandas lazily into a module
    attribute; set to None, it reads as absent. Only while pandas is not loaded already, so that a
    process that uses it (a notebook) keeps it; for processes that use the client for riskwatch
    alone (the worker)."""
    if "pandas" in sys.modules:
        return
    from clickhouse_connect.driver import options

    options.pd = None
    options.pd_time_test = None


def drop_database(settings: Settings, database: str) -> None:
    """Drop a database from the configured target (a benchmark's own, after its run)."""
    client = connect(settings, database="default")
    try:
        client.command(f"DROP DATABASE IF EXISTS {_identifier(database)}")
    finally:
        client.close()


def _identifier(name: str) -> str:
    if not name.replace("_", "").isalnum():
        raise ValueError(f"not a plain ClickHouse identifier: {name!r}")
    return name


def ensure_schema(client: Client) -> None:
    for statement in ddl_statements():
        client.command(statement)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MILLISECOND = timedelta(milliseconds=1)
_RESULT_ATTRIBUTES = tuple("limit" if column == "limit_value" else column for column in RESULT_COLUMNS)
_TIMESTAMP_COLUMNS = tuple(i for i, column in enumerate(RESULT_COLUMNS) if column in ("sampled_at", "tested_at", "published_at"))


def result_columns(results: Sequence[LabResult]) -> list[list]:
    """The results as RESULT_COLUMNS columns, in the forms clickhouse-connect writes without
    converting again (ids as strings, DateTime64(3) as integer milliseconds): 81,000 results/s into chDB
    where rows of UUID and datetime objects managed 62,000."""
    columns = [[getattr(r, name) for r in results] for name in _RESULT_ATTRIBUTES]
    for i in _TIMESTAMP_COLUMNS:
        columns[i] = [(ts - _EPOCH) // _MILLISECOND for ts in columns[i]]
    return columns


def alert_row(alert: Alert) -> list:
    manufacturer = alert.manufacturer
    return [
        uuid.UUID(alert.alert_id), alert.detector, alert.signal, alert.severity.value, alert.score,
        alert.title, alert.title_zh, alert.explanation, alert.explanation_zh, alert.category,
        alert.test_item, alert.cities, alert.labs, manufacturer.name if manufacturer else "",
        (manufacturer.uscc or "") if manufacturer else "", [uuid.UUID(e) for e in alert.evidence],
        alert.count, alert.first_seen, alert.last_seen, alert.detected_at, alert.synthetic,
    ]  # fmt: skip


class Store:
    """The riskwatch tables behind one client: idempotent writes and duplicate look-ups."""

    def __init__(self, client: Client) -> None:
        self.client = client

    def insert_results(self, results: Sequence[LabResult]) -> None:
        if results:
            self.client.insert("results", result_columns(results), column_names=RESULT_COLUMNS, column_oriented=True)

    def insert_alerts(self, alerts: Sequence[Alert]) -> None:
        if alerts:
            self.client.insert("alerts", [alert_row(a) for a in alerts], column_names=ALERT_COLUMNS)

    def known_result_ids(self, result_ids: Iterable[str]) -> set[str]:
        """Which of these results are already stored (bloom-filter index on result_id)."""
        ids = list(result_ids)
        if not ids:
            return set()
        rows = self.client.query(
            "SELECT DISTINCT toString(result_id) FROM results WHERE result_id IN {ids:Array(UUID)}",
            parameters={"ids": ids},
        ).result_rows
        return {row[0] for row in rows}

    def recent_results(self, categories: Sequence[str], since: datetime, limit: int) -> list[LabResult]:
        """Stored results of these categories sampled since a time, in arrival order (state rebuild)."""
        if not categories:
            return []
        columns = ", ".join(RESULT_COLUMNS)
        rows = self.client.query(
            f"SELECT {columns} FROM results FINAL WHERE category IN {{categories:Array(String)}} "  # noqa: S608 - fixed column list
            "AND sampled_at >= {since:DateTime64(3, 'UTC')} ORDER BY published_at, sampled_at, result_id "
            "LIMIT {limit:UInt64} BY category",
            parameters={"categories": list(categories), "since": since, "limit": limit},
        ).result_rows
        return [result_from_row(row) for row in rows]

    def open_alerts(self, categories: Sequence[str], since: datetime) -> list[Alert]:
        """The latest version of alerts of these categories last seen since a time (to merge into)."""
        if not categories:
            return []
        columns = ", ".join(ALERT_COLUMNS)
        rows = self.client.query(
            f"SELECT {columns} FROM alerts FINAL WHERE category IN {{categories:Array(String)}} "  # noqa: S608 - fixed column list
            "AND last_seen >= {since:DateTime64(3, 'UTC')}",
            parameters={"categories": list(categories), "since": since},
        ).result_rows
        return [alert_from_row(row) for row in rows]


def _utc(ts: datetime) -> datetime:
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


def result_from_row(row: Sequence) -> LabResult:
    """A results-table row (RESULT_COLUMNS order) back into a LabResult."""
    data = dict(zip(RESULT_COLUMNS, row, strict=True))
    data["result_id"] = str(data["result_id"])
    data["limit"] = data.pop("limit_value")
    for name in ("sampled_at", "tested_at", "published_at"):
        data[name] = _utc(data[name])
    return LabResult(**data)


def alert_from_row(row: Sequence) -> Alert:
    """An alerts-table row (ALERT_COLUMNS order) back into an Alert."""
    data = dict(zip(ALERT_COLUMNS, row, strict=True))
    name, uscc = data.pop("manufacturer_name"), data.pop("manufacturer_uscc")
    data["manufacturer"] = Manufacturer(name, uscc or None) if name else None
    data["alert_id"] = str(data["alert_id"])
    data["evidence"] = [str(e) for e in data["evidence"]]
    data["severity"] = Severity(data["severity"])
    data["cities"], data["labs"] = list(data["cities"]), list(data["labs"])
    for name in ("first_seen", "last_seen", "detected_at"):
        data[name] = _utc(data[name])
    return Alert(**data)
