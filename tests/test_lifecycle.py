"""Alert lifecycle, precision from feedback, and the daily aggregates, on real ClickHouse SQL."""

import dataclasses

import msgspec
import orjson
import pytest

from detectors import LimitExceedance
from schemas.validation import validate_report
from streams.lifecycle import AlertNotFound, list_alerts, precision_by_detector, resolve_id, set_status, show_alert
from tests.conftest import EXAMPLE_NOW


@pytest.fixture
def stored(store, report):
    results = validate_report(orjson.dumps(report), now=EXAMPLE_NOW).results
    store.insert_results(results)
    failing = [msgspec.structs.replace(results[1], result_id=f"00000000-0000-0000-0000-00000000000{n}", sample_id=f"S{n}") for n in range(3)]
    alerts = [LimitExceedance().process_one(r, EXAMPLE_NOW)[0] for r in failing]
    alerts[2] = dataclasses.replace(alerts[2], detector="cross_city")
    store.insert_alerts(alerts)
    return store, alerts


def test_status_changes_are_kept_and_the_latest_wins(stored):
    store, alerts = stored
    client = store.client
    first = alerts[0].alert_id
    assert resolve_id(client, first[:8]) == first
    set_status(client, first[:8], "acknowledged", "wang", "calling the maker")
    set_status(client, first, "resolved", "wang", "batch recalled")
    alert, history = show_alert(client, first)
    assert alert["status"] == "resolved" and alert["status_changed_by"] == "wang" and alert["count"] == 1
    assert [(status, by, note) for _, status, by, note in history] == [("acknowledged", "wang", "calling the maker"), ("resolved", "wang", "batch recalled")]
    statuses = {row[0]: row[1] for row in list_alerts(client).result_rows}
    assert statuses == {alerts[0].alert_id: "resolved", alerts[1].alert_id: "open", alerts[2].alert_id: "open"}
    assert [row[0] for row in list_alerts(client, status="open").result_rows] == sorted([alerts[1].alert_id, alerts[2].alert_id])


def test_precision_counts_resolved_as_real_and_false_alarms_against(stored):
    store, alerts = stored
    set_status(store.client, alerts[0].alert_id, "resolved", "li")
    set_status(store.client, alerts[1].alert_id, "false_alarm", "li", "lab typo")
    set_status(store.client, alerts[2].alert_id, "acknowledged", "li")
    by_detector = {p.detector: p for p in precision_by_detector(store.client)}
    limit = by_detector["limit_exceedance"]
    assert (limit.alerts, limit.judged, limit.confirmed, limit.false_alarms, limit.precision) == (2, 2, 1, 1, 0.5)
    assert by_detector["cross_city"].precision is None  # acknowledged, not yet judged


def test_unknown_or_ambiguous_ids_are_clear_errors(stored):
    store, _ = stored
    with pytest.raises(AlertNotFound, match="no alert with id 'ffffffff'"):
        set_status(store.client, "ffffffff", "resolved", "li")
    with pytest.raises(AlertNotFound, match="matches more than one alert"):
        resolve_id(store.client, "")
    with pytest.raises(ValueError, match="status must be one of"):
        set_status(store.client, "x", "closed", "li")


def test_daily_aggregates_count_each_result_once_even_after_a_replay(store, report):
    results = validate_report(orjson.dumps(report), now=EXAMPLE_NOW).results
    store.insert_results(results)
    store.insert_results(results)  # a replay after a crash
    rows = store.client.query(
        "SELECT day, city, test_item, uniqExactMerge(results), uniqExactIfMerge(failures), max(max_ratio) "
        "FROM daily_results GROUP BY day, city, test_item ORDER BY test_item"
    ).result_rows
    assert [(str(d), c, i, n, f) for d, c, i, n, f, _ in rows] == [
        ("2026-11-18", "zibo", item, 1, int(item == "cadmium")) for item in ["aflatoxin_b1", "cadmium", "inorganic_arsenic", "lead"]
    ]
    assert rows[1][5] == pytest.approx(2.05)
