"""End to end on real parts: tansu broker, a worker process (Faust), chDB.

Publishes reports with republished duplicates and malformed messages, then checks exact
counts in ClickHouse and on the dead-letter and alerts topics; restarts the worker and
republishes, and checks that nothing was stored or alerted twice.
"""

from __future__ import annotations

import asyncio
import copy
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaClient, AIOKafkaConsumer, AIOKafkaProducer

from streams.broker import LocalBroker, free_port
from streams.clickhouse import connect
from streams.settings import Settings
from streams.simulation import Simulator
from streams.worker_process import WorkerProcess

pytestmark = pytest.mark.timeout(400)

MALFORMED = [
    b"{this is not json",
    b"\xff\xfe\xfd",
    b"[]",
    b"",
    orjson.dumps({"schema": "riskwatch.lab_report.v1"}),
    orjson.dumps({"hello": "world"}),
]


def topics(group: str) -> Settings:
    """Settings with topics of this test's own (tests share one broker)."""
    return Settings(
        reports_topic=f"{group}.reports", results_topic=f"{group}.results", dead_letter_topic=f"{group}.dead-letter",
        alerts_topic=f"{group}.alerts",
    )  # fmt: skip


def worker_env(broker: LocalBroker, data_dir: Path, group: str) -> dict[str, str]:
    named = topics(group)
    return {
        "RISKWATCH_REPORTS_TOPIC": named.reports_topic,
        "RISKWATCH_RESULTS_TOPIC": named.results_topic,
        "RISKWATCH_DEAD_LETTER_TOPIC": named.dead_letter_topic,
        "RISKWATCH_ALERTS_TOPIC": named.alerts_topic,
        "RISKWATCH_KAFKA_BOOTSTRAP": broker.bootstrap,
        "RISKWATCH_DATA_DIR": str(data_dir),
        "RISKWATCH_WEB_PORT": str(free_port()),
        "RISKWATCH_CONSUMER_GROUP": group,
        "RISKWATCH_TOPIC_PARTITIONS": "4",
        "RISKWATCH_LOG_LEVEL": "warning",
    }


async def send_all(bootstrap: str, topic: str, messages: list[tuple[bytes, bytes]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, max_request_size=4_194_304)
    await producer.start()
    try:
        await asyncio.gather(*[await producer.send(topic, value=value, key=key) for key, value in messages])
    finally:
        await producer.stop()


async def read_topic(bootstrap: str, topic: str, expected: int, timeout: float = 30.0, linger: float = 3.0) -> list:
    """Every record of the topic: waits for `expected`, then lingers to catch any extra."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    records: list = []
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for batch in (await consumer.getmany(timeout_ms=500)).values():
                records.extend(batch)
            if len(records) >= expected:
                deadline = min(deadline, time.monotonic() + linger)
    finally:
        await consumer.stop()
    return records


def build_messages(count: int, republish: int, bad_items: int) -> tuple[list[tuple[bytes, bytes]], dict]:
    """Reports from the simulator plus duplicates and malformed messages, and what must come of them."""
    sim = Simulator(seed=42, start=datetime.now(UTC) - timedelta(days=20))
    reports = [sim.next_report() for _ in range(count)]
    for report in reports[:bad_items]:  # one item each with a unit nobody knows
        report["items"][0] = {**report["items"][0], "unit": "furlongs", "value": 1.0}
    valid_items = [item for report in reports for item in report["items"] if item.get("unit") != "furlongs"]
    messages = [(r["category"].encode(), orjson.dumps(r)) for r in reports]
    messages += [(r["category"].encode(), orjson.dumps(copy.deepcopy(r))) for r in reports[-republish:]]
    messages += [(b"junk", m) for m in MALFORMED]
    expected = {
        "results": len(valid_items),
        "alerts": sum(1 for item in valid_items if item["verdict"] == "fail"),
        "dead_letters": len(MALFORMED) + bad_items,
        "duplicates": sum(len(r["items"]) for r in reports[-republish:]),
    }
    return messages, expected


async def partition_counts(bootstrap: str, topics: list[str]) -> dict[str, int]:
    client = AIOKafkaClient(bootstrap_servers=bootstrap)
    await client.bootstrap()
    try:
        cluster = await client.fetch_all_metadata()
        return {topic: len(cluster.partitions_for_topic(topic) or ()) for topic in topics}
    finally:
        await client.close()


def stored_counts(data_dir: Path) -> dict[str, int]:
    client = connect(Settings(data_dir=data_dir))
    try:
        q = lambda sql: client.query(sql).result_rows[0][0]  # noqa: E731
        return {
            "results": q("SELECT count() FROM results FINAL"),
            "result_rows": q("SELECT count() FROM results"),
            "alerts": q("SELECT count() FROM alerts FINAL WHERE detector = 'limit_exceedance'"),
            "alert_rows": q("SELECT count() FROM alerts WHERE detector = 'limit_exceedance'"),
            "failing": q("SELECT countIf(verdict = 'fail') FROM results FINAL"),
            "evidence_ok": q(
                "SELECT count() FROM alerts FINAL WHERE detector = 'limit_exceedance' "
                "AND evidence[1] IN (SELECT result_id FROM results WHERE verdict = 'fail')"
            ),
            "all_alerts": q("SELECT count() FROM alerts FINAL"),
        }
    finally:
        client.close()


async def run_worker(
    env: dict[str, str], log: Path, topic: str, bootstrap: str, messages: list, *, before: tuple[str, list] | None = None
) -> dict[str, float]:
    """Start a worker, publish (``before``: (topic, messages) sent first), wait until it has stored
    every report's results, stop it gracefully."""
    worker = WorkerProcess(env, log)
    worker.start()
    try:
        await worker.wait_ready()
        if before is not None:
            await send_all(bootstrap, *before)
        await send_all(bootstrap, topic, messages)
        drained = await worker.wait_drained(len(messages))
        assert not pandas_mapped(worker.process.pid), "the worker never needs pandas (~40 MB): see clickhouse.without_dataframes"
        return drained
    finally:
        assert worker.stop() == 0


def pandas_mapped(pid: int) -> bool:
    """Whether a process has loaded pandas: its compiled modules are mapped once it is imported."""
    return any("/pandas/" in line for line in Path(f"/proc/{pid}/maps").read_text().splitlines())


def test_reports_flow_to_clickhouse_exactly_once_across_a_restart(broker, tmp_path):
    data_dir = tmp_path / "data"
    settings = topics("e2e")
    messages, expected = build_messages(count=400, republish=40, bad_items=5)
    three_partitions = {"RISKWATCH_TOPIC_PARTITIONS": "3"}  # not 4, tansu's count for a topic created unasked
    assert expected["alerts"] > 0, "the seed should produce failing results"

    async def first_run():
        # takes of ~10 messages, bounded by bytes: they must keep exactly-once, dead letters and acknowledgements
        env = {**worker_env(broker, data_dir, "e2e"), "RISKWATCH_BATCH_MAX_BYTES": "4096", **three_partitions}
        metrics = await run_worker(env, tmp_path / "worker-1.log", settings.reports_topic, broker.bootstrap, messages)
        letters = await read_topic(broker.bootstrap, settings.dead_letter_topic, expected["dead_letters"])
        alerts = await read_topic(broker.bootstrap, settings.alerts_topic, expected["alerts"])
        topics = [settings.reports_topic, settings.results_topic, settings.dead_letter_topic, settings.alerts_topic]
        return metrics, letters, alerts, await partition_counts(broker.bootstrap, topics)

    metrics, letters, alerts, partitions = asyncio.run(first_run())
    assert set(partitions.values()) == {3}, f"the app creates its topics with the configured partitions: {partitions}"
    assert metrics["riskwatch_results_stored_total"] == expected["results"]
    assert metrics["riskwatch_results_duplicate_total"] == expected["duplicates"]
    assert metrics["riskwatch_results_local_total"] == expected["results"] + expected["duplicates"], "one worker owns every partition"
    assert metrics["riskwatch_reports_received_total"] == len(messages)
    assert metrics["riskwatch_heap_trims_total"] >= 1, "freed heap memory went back to the system after a batch"
    assert len(letters) == expected["dead_letters"]
    reasons = [orjson.loads(r.value) for r in letters]
    assert sorted(d["code"] for d in reasons) == sorted(["not_json", "not_json", "not_object", "empty", "schema", "schema"] + ["item_unit"] * 5)
    assert all(d["reason"] and d["source"]["topic"] == settings.reports_topic for d in reasons)
    limit_alerts = [r for r in alerts if orjson.loads(r.value)["detector"] == "limit_exceedance"]
    assert len({r.key for r in limit_alerts}) == len(limit_alerts) == expected["alerts"], "one alert per failing result"

    counts = stored_counts(data_dir)
    assert len({r.key for r in alerts}) == counts["all_alerts"], "every alert on the topic is stored, once"
    assert counts["results"] == counts["result_rows"] == expected["results"]
    assert counts["alerts"] == counts["alert_rows"] == counts["failing"] == counts["evidence_ok"] == expected["alerts"]

    # A restarted worker gets the same reports republished: nothing new is stored or alerted.
    republished = messages[:50]

    env = {**worker_env(broker, data_dir, "e2e"), **three_partitions}
    metrics = asyncio.run(run_worker(env, tmp_path / "worker-2.log", settings.reports_topic, broker.bootstrap, republished))
    assert metrics["riskwatch_reports_received_total"] == len(republished), "committed offsets must survive the restart"
    assert metrics["riskwatch_results_stored_total"] == 0
    assert metrics.get("riskwatch_alerts_total", 0) == 0
    assert stored_counts(data_dir) == counts
