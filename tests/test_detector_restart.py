"""Detector state survives a worker restart: it is rebuilt from ClickHouse, alerts merge on.

Phase one teaches a fresh segment its usual level and ends with a jump (a value-anomaly
alert). A new worker process then sees a second jump: it can only judge it with the baseline
rebuilt from the stored results, and it merges it into the stored alert (same id, count 2).
"""

from __future__ import annotations

import asyncio
import copy
import random
from datetime import UTC, datetime, timedelta

import orjson
import pytest

from streams.clickhouse import connect
from streams.settings import Settings
from tests.conftest import example_report
from tests.test_end_to_end import run_worker, topics, worker_env

pytestmark = pytest.mark.timeout(300)


def cadmium_report(n: int, value: float, when: datetime) -> tuple[bytes, bytes]:
    report = copy.deepcopy(example_report())
    report.update(
        report_id=f"R-{n}", sample_id=f"S-{n}", sampled_at=when.isoformat(), tested_at=(when + timedelta(hours=5)).isoformat(),
        published_at=(when + timedelta(hours=20)).isoformat(),
    )  # fmt: skip
    report["items"] = [{"test_item": "cadmium", "value": round(value, 4), "unit": "mg/kg", "limit": 0.2, "verdict": "pass"}]
    return report["category"].encode(), orjson.dumps(report)


def test_a_restarted_worker_rebuilds_state_and_merges_into_the_stored_alert(broker, tmp_path):
    rng = random.Random(3)
    start = datetime.now(UTC) - timedelta(days=20)
    usual = [cadmium_report(n, 0.04 * rng.lognormvariate(0, 0.15), start + timedelta(hours=6 * n)) for n in range(40)]
    first_jump = cadmium_report(100, 0.17, start + timedelta(days=11))
    second_jump = cadmium_report(101, 0.18, start + timedelta(days=12))
    env = worker_env(broker, tmp_path / "data", "restart")
    topic = topics("restart").reports_topic

    first = asyncio.run(run_worker(env, tmp_path / "worker-1.log", topic, broker.bootstrap, usual + [first_jump]))
    assert first["riskwatch_state_rebuilt_results_total"] == 0  # nothing stored yet

    second = asyncio.run(run_worker(env, tmp_path / "worker-2.log", topic, broker.bootstrap, [second_jump]))
    assert second["riskwatch_state_rebuilt_results_total"] == 41, "the new worker replays the segment's stored results"

    client = connect(Settings(data_dir=tmp_path / "data"))
    try:
        rows = client.query("SELECT alert_id, count, length(evidence) FROM alerts FINAL WHERE detector = 'value_anomaly'").result_rows
        versions = client.query("SELECT count() FROM alerts WHERE detector = 'value_anomaly'").result_rows[0][0]
    finally:
        client.close()
    assert len(rows) == 1, rows
    (alert_id, count, evidence), = rows
    assert (count, evidence, versions) == (2, 2, 2), "the second jump merged into the first alert"
