"""The ClickHouse tables on real ClickHouse SQL (chDB): DDL, idempotent writes, look-ups."""

import dataclasses
from datetime import timedelta

import orjson

from detectors import LimitExceedance
from schemas.validation import validate_report
from streams.clickhouse import ddl_statements
from tests.conftest import EXAMPLE_NOW


def results_of(report):
    return validate_report(orjson.dumps(report), now=EXAMPLE_NOW).results


def test_ddl_creates_every_table_and_view_and_is_idempotent(store):
    from streams.clickhouse import ensure_schema

    assert len(ddl_statements()) == 6
    ensure_schema(store.client)  # a second start changes nothing
    tables = {row[0] for row in store.client.query("SHOW TABLES").result_rows}
    assert tables == {"results", "alerts", "alert_feedback", "alerts_current", "daily_results", "daily_results_mv"}


def test_a_replayed_insert_collapses_to_one_row_per_result(store, report):
    results = results_of(report)
    store.insert_results(results)
    store.insert_results(results)  # a crash after the write, before the commit, replays it
    assert store.client.query("SELECT count() FROM results").result_rows[0][0] == 8
    assert store.client.query("SELECT count() FROM results FINAL").result_rows[0][0] == 4
    row = store.client.query(
        "SELECT value, unit, limit_value, limit_ratio, verdict, reported_value, reported_unit FROM results FINAL WHERE test_item = 'lead'"
    ).result_rows[0]
    assert row == (0.086, "mg/kg", 0.2, 0.43, "pass", 86.0, "µg/kg")


def test_known_result_ids_finds_exactly_the_stored_ones(store, report):
    results = results_of(report)
    store.insert_results(results[:2])
    other = results_of({**report, "sample_id": "ZBQI-OTHER"})
    asked = [r.result_id for r in results + other]
    assert store.known_result_ids(asked) == {results[0].result_id, results[1].result_id}
    assert store.known_result_ids([]) == set()


def test_a_merged_alert_replaces_its_earlier_version(store, report):
    result = results_of(report)[1]
    (alert,) = LimitExceedance().process_one(result, EXAMPLE_NOW)
    merged = dataclasses.replace(alert, count=3, last_seen=alert.last_seen + timedelta(days=2), evidence=alert.evidence * 1)
    store.insert_alerts([alert])
    store.insert_alerts([merged])
    store.insert_alerts([alert])  # a late replay of the first version must not win
    rows = store.client.query("SELECT count, severity, cities, evidence FROM alerts FINAL").result_rows
    assert len(rows) == 1
    count, severity, cities, evidence = rows[0]
    assert (count, severity, cities, [str(e) for e in evidence]) == (3, "potentially_serious", ["zibo"], [result.result_id])


def test_stored_results_and_alerts_read_back_as_they_were_written(store, report):
    results = results_of(report)
    store.insert_results(results)
    store.insert_results(results_of({**report, "category": "food/grain_products/wheat_flour", "sample_id": "W-1"}))
    back = store.recent_results(["food/grain_products/rice"], EXAMPLE_NOW - timedelta(days=30), limit=100)
    assert sorted(back, key=lambda r: r.result_id) == sorted(results, key=lambda r: r.result_id)
    (alert,) = LimitExceedance().process_one(results[1], EXAMPLE_NOW)
    store.insert_alerts([alert])
    (again,) = store.open_alerts(["food/grain_products/rice"], EXAMPLE_NOW - timedelta(days=30))
    assert again.to_wire() == alert.to_wire()
    assert store.open_alerts(["food/grain_products/rice"], EXAMPLE_NOW + timedelta(days=30)) == []
