"""Reliability on real parts: workers killed mid-stream, and a ClickHouse outage.

Two workers share one consumer group on the tansu broker and one store (``riskwatch
store-server``: the chDB directory behind ClickHouse's HTTP interface, as a server would be).
One of them is killed with SIGKILL several times while reports stream in, and restarted. Then a
worker runs through a minute without ClickHouse. Every result must land exactly once, no alert
may go missing or be split in two, and no offset may be committed for data not yet stored.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from detectors.suite import MERGE_WINDOWS
from schemas.results import result_id_for
from streams.app import EXIT_FAILED
from streams.broker import LocalBroker, free_port
from streams.children import terminate
from streams.clickhouse import connect
from streams.settings import Settings
from streams.simulation import Simulator
from streams.store_server import StoreServerProcess
from streams.worker_process import WorkerProcess
from tests.test_end_to_end import read_topic, send_all, topics, worker_env

pytestmark = pytest.mark.timeout(600)

OUTAGE_SECONDS = float(os.environ.get("RISKWATCH_TEST_OUTAGE_SECONDS", "60"))


def simulated(count: int, seed: int) -> tuple[list[tuple[bytes, bytes]], set[str], set[str]]:
    """Report messages, the result ids they must produce, and which of those fail their limit."""
    sim = Simulator(seed=seed, start=datetime.now(UTC) - timedelta(days=25), reports_per_day=120)
    reports = [sim.next_report() for _ in range(count)]
    verdicts = {result_id_for(r["lab"]["id"], r["sample_id"], item["test_item"]): item["verdict"] for r in reports for item in r["items"]}
    ids, failing = set(verdicts), {rid for rid, verdict in verdicts.items() if verdict == "fail"}
    return [(r["category"].encode(), orjson.dumps(r)) for r in reports], ids, failing


def store_env(broker: LocalBroker, tmp_path: Path, group: str, server: StoreServerProcess, name: str) -> dict[str, str]:
    return {**worker_env(broker, tmp_path / name, group), "RISKWATCH_CLICKHOUSE_URL": server.url}


def query(url: str, sql: str) -> list[tuple]:
    client = connect(Settings(clickhouse_url=url))
    try:
        return client.query(sql).result_rows
    finally:
        client.close()


async def wait_stored(url: str, expected: int, timeout: float = 240.0) -> None:
    deadline = time.monotonic() + timeout
    stored = 0
    while time.monotonic() < deadline:
        stored = (await asyncio.to_thread(query, url, "SELECT uniqExact(result_id) FROM results"))[0][0]
        if stored >= expected:
            return
        await asyncio.sleep(1.0)
    raise TimeoutError(f"{stored} of {expected} results stored after {timeout:.0f} s")


async def committed(bootstrap: str, group: str, topic: str, partitions: int) -> dict[int, int]:
    """The group's committed offsets on a topic, read without joining the group."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        return {p: (await consumer.committed(TopicPartition(topic, p))) or 0 for p in range(partitions)}
    finally:
        await consumer.stop()


@pytest.fixture
def own_store_server(tmp_path):
    """A store server of this test's own: the outage test kills it."""
    server = StoreServerProcess(tmp_path / "store", "127.0.0.1", free_port(), tmp_path / "store-server.log")
    server.start()
    yield server
    server.stop()


def test_two_workers_store_everything_exactly_once_when_one_is_killed_mid_stream(broker, store_server, tmp_path):
    group, kills = "sigkill", 3
    messages, result_ids, failing = simulated(1200, seed=11)
    named = topics(group)
    victim_env = store_env(broker, tmp_path, group, store_server, "victim")
    steady = WorkerProcess(store_env(broker, tmp_path, group, store_server, "steady"), tmp_path / "steady.log")

    killed_busy: list[int] = []
    at_kill: list[dict[str, float]] = []  # each incarnation's metrics just before it was killed

    async def scenario() -> dict[str, float]:
        steady.start()
        victim = WorkerProcess(victim_env, tmp_path / "victim-0.log")
        victim.start()
        try:
            await asyncio.gather(steady.wait_ready(), victim.wait_ready())

            async def publish() -> None:
                chunk = len(messages) // 40
                for start in range(0, len(messages), chunk):
                    await send_all(broker.bootstrap, named.reports_topic, messages[start : start + chunk])
                    await asyncio.sleep(0.75)

            async def kill_and_restart() -> None:
                nonlocal victim
                for round_ in range(1, kills + 1):
                    while (metrics := await asyncio.to_thread(victim.metrics)).get("riskwatch_results_stored_total", 0) < 30:
                        await asyncio.sleep(0.2)  # kill it once it is busy storing results (in place or off the results topic)
                    at_kill.append(metrics)
                    victim.kill()  # SIGKILL: no shutdown, no commit, mid-batch
                    killed_busy.append(round_)
                    victim = WorkerProcess(victim_env, tmp_path / f"victim-{round_}.log")
                    victim.start()
                    await victim.wait_ready()

            await asyncio.gather(publish(), kill_and_restart())
            await wait_stored(store_server.url, len(result_ids))
            await asyncio.sleep(5.0)  # anything still in flight would show up as an extra row now
            return await asyncio.to_thread(victim.metrics)
        finally:
            victim.stop()
            steady.stop()

    last_victim = asyncio.run(scenario())
    assert len(killed_busy) == kills
    url = store_server.url
    stored = {str(row[0]) for row in query(url, "SELECT result_id FROM results FINAL")}
    assert stored == result_ids, f"missing {len(result_ids - stored)}, unexpected {len(stored - result_ids)}"
    ((rows, unique),) = query(url, "SELECT count(), uniqExact(result_id) FROM results")
    assert unique == len(result_ids)
    print(f"\n{len(result_ids)} results; {rows - unique} duplicate rows inserted by replays (collapsed by ReplacingMergeTree)")

    limit_alerts = query(url, "SELECT evidence FROM alerts FINAL WHERE detector = 'limit_exceedance'")
    assert sorted(str(e[0]) for (e,) in limit_alerts) == sorted(failing), "one limit alert per failing result, none twice"

    alerts = query(url, "SELECT alert_id, detector, signal, first_seen, last_seen FROM alerts FINAL ORDER BY first_seen")
    published = asyncio.run(read_topic(broker.bootstrap, named.alerts_topic, expected=len(alerts), linger=2.0))
    assert {str(a[0]) for a in alerts} == {r.key.decode() for r in published}, "every alert sent is stored, and only those"
    last_seen: dict[tuple[str, str], datetime] = {}
    for _, detector, signal, first_seen, seen_until in alerts:
        window = MERGE_WINDOWS.get(detector, timedelta(0))
        previous = last_seen.get((detector, signal))
        if window and previous is not None:
            assert first_seen - previous > window, f"{detector} {signal}: a second alert inside the merge window (state lost?)"
        last_seen[(detector, signal)] = max(seen_until, previous or seen_until)
    detectors = sorted({detector for _, detector, *_ in alerts})
    assert set(detectors) - {"limit_exceedance"}, "the scenario should raise more than limit alerts"
    print(f"{len(alerts)} alerts from {', '.join(detectors)}; none lost, none split")
    # A restarted incarnation that stored fresh results rebuilt state first; the last one may find the
    # stream already stored by the other worker, so every restarted incarnation counts.
    restarted = [*at_kill[1:], last_victim]
    assert any(m.get("riskwatch_state_rebuilt_results_total", 0) > 0 for m in restarted), "a restarted worker rebuilt its detector state"


def test_a_minute_without_clickhouse_delays_results_but_loses_none(broker, own_store_server, tmp_path):
    store_server = own_store_server
    group = "outage"
    messages, result_ids, _ = simulated(600, seed=12)
    before, during = messages[:300], messages[300:]
    named = topics(group)
    env = {**store_env(broker, tmp_path, group, store_server, "worker"), "RISKWATCH_SINK_RETRY_MAX_SECONDS": "5"}
    worker = WorkerProcess(env, tmp_path / "worker.log")

    async def scenario() -> tuple[dict, dict, dict, dict, float]:
        worker.start()
        try:
            await worker.wait_ready()
            await send_all(broker.bootstrap, named.reports_topic, before)
            await worker.wait_drained(len(before))
            offsets_before = await committed(broker.bootstrap, group, named.results_topic, 4)

            store_server.kill()  # the store disappears mid-stream, without a goodbye
            outage_started = time.monotonic()
            await send_all(broker.bootstrap, named.reports_topic, during)
            await asyncio.sleep(OUTAGE_SECONDS)
            during_outage = await asyncio.to_thread(worker.metrics)
            offsets_during = await committed(broker.bootstrap, group, named.results_topic, 4)

            store_server.start()
            outage = time.monotonic() - outage_started
            after = await worker.wait_drained(len(messages), timeout=180)
            return offsets_before, offsets_during, during_outage, after, outage
        finally:
            assert worker.stop() == 0

    offsets_before, offsets_during, during_outage, after, outage = asyncio.run(scenario())
    assert offsets_during == offsets_before, "no offset is committed for results ClickHouse has not stored"
    assert during_outage["riskwatch_sink_errors_total"] >= 3, "the worker kept retrying"
    assert during_outage["riskwatch_sink_outage_seconds"] > 0.5 * OUTAGE_SECONDS, "the outage shows in the metrics"
    assert after["riskwatch_sink_outage_seconds"] == 0
    assert after["riskwatch_results_stored_total"] == len(result_ids)
    stored = {str(row[0]) for row in query(store_server.url, "SELECT result_id FROM results FINAL")}
    assert stored == result_ids
    assert query(store_server.url, "SELECT count() FROM results")[0][0] == len(result_ids), "caught up without duplicates"
    log = (tmp_path / "worker.log").read_text(errors="replace")
    assert "could not" in log and "ClickHouse is back" in log
    print(f"\nClickHouse down {outage:.0f} s; {len(during)} reports waited in Kafka; all {len(result_ids)} results stored once")


@pytest.fixture
def s3_endpoint(tmp_path):
    """A local S3 endpoint (moto's server) with a bucket for the broker's storage."""
    import boto3

    port = free_port()
    with open(tmp_path / "s3.log", "ab") as out:
        process = subprocess.Popen([sys.executable, "-m", "moto.server", "-p", str(port)], stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    env = {"AWS_ACCESS_KEY_ID": "riskwatch", "AWS_SECRET_ACCESS_KEY": "riskwatch", "AWS_DEFAULT_REGION": "eu-west-2"}
    s3 = boto3.client(
        "s3", endpoint_url=url, region_name=env["AWS_DEFAULT_REGION"], aws_access_key_id="riskwatch", aws_secret_access_key="riskwatch"
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            s3.create_bucket(Bucket="tansu", CreateBucketConfiguration={"LocationConstraint": env["AWS_DEFAULT_REGION"]})
            break
        except Exception:  # noqa: BLE001 - not listening yet
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)
    yield {**env, "AWS_ENDPOINT": url, "AWS_ALLOW_HTTP": "true"}
    terminate(process, 10)


def test_a_broker_restart_is_ridden_out_and_the_worker_resumes(store_server, s3_endpoint, tmp_path):
    group = "broker-restart"
    messages, result_ids, _ = simulated(400, seed=13)
    before, after_restart = messages[:200], messages[200:]
    broker = LocalBroker("127.0.0.1", free_port(), log_file=tmp_path / "broker.log", storage="s3://tansu/", env=s3_endpoint)
    named = topics(group)
    env = {**store_env(broker, tmp_path, group, store_server, "worker"), "RISKWATCH_CLICKHOUSE_DATABASE": "broker_restart"}
    url = store_server.url
    worker = WorkerProcess(env, tmp_path / "worker.log")

    async def scenario() -> tuple[dict, float]:
        await broker.start()
        worker.start()
        try:
            await worker.wait_ready()
            await send_all(broker.bootstrap, named.reports_topic, before)
            await worker.wait_drained(len(before))
            await asyncio.sleep(2.0)  # past the commit interval: the group's offsets are in the broker's storage
            broker.stop()
            down_since = time.monotonic()
            await asyncio.sleep(10.0)
            await broker.start()
            downtime = time.monotonic() - down_since
            await send_all(broker.bootstrap, named.reports_topic, after_restart)
            return await worker.wait_drained(len(messages), timeout=180), downtime
        finally:
            assert worker.stop() == 0
            broker.stop()

    metrics, downtime = asyncio.run(scenario())
    assert metrics["riskwatch_reports_received_total"] == len(messages), "no report read twice after the restart"
    assert metrics["riskwatch_results_stored_total"] == len(result_ids)
    settings = Settings(clickhouse_url=url, clickhouse_database="broker_restart")
    client = connect(settings)
    try:
        stored = {str(row[0]) for row in client.query("SELECT result_id FROM results").result_rows}
        rows = client.query("SELECT count() FROM results").result_rows[0][0]
    finally:
        client.close()
    assert stored == result_ids and rows == len(result_ids), "every result stored, once"
    print(f"\nbroker down {downtime:.0f} s; the same worker process resumed and stored all {len(result_ids)} results once")


FAULT = '''
import detectors.suite

def _fail(self, *args, **kwargs):
    raise RuntimeError("injected fault: a detector bug")

detectors.suite.DetectorSuite.process = _fail
'''


def test_a_detector_error_stops_the_worker_unacknowledged_and_a_restart_stores_everything(broker, tmp_path):
    """A bug that raises inside an agent must not leave a worker that looks alive but has stopped
    (Faust would restart the agent past its unacknowledged batch, then idle): the worker exits with
    an error and commits nothing of the batch, and the next worker replays it."""
    group = "agent-crash"
    messages, result_ids, _ = simulated(40, seed=21)
    named = topics(group)
    fault = tmp_path / "fault"
    fault.mkdir()
    (fault / "sitecustomize.py").write_text(FAULT)  # imported by the worker's interpreter at start
    env = worker_env(broker, tmp_path / "worker", group)
    pythonpath = os.pathsep.join(filter(None, [str(fault), os.environ.get("PYTHONPATH")]))
    faulty = WorkerProcess({**env, "PYTHONPATH": pythonpath}, tmp_path / "faulty.log")

    async def crash() -> tuple[int, float]:
        faulty.start()
        try:
            await faulty.wait_ready()
            await send_all(broker.bootstrap, named.reports_topic, messages)
            sent = time.monotonic()
            return await asyncio.to_thread(faulty.process.wait, 120), time.monotonic() - sent
        finally:
            faulty.stop()

    code, seconds = asyncio.run(crash())
    assert code == EXIT_FAILED, f"the worker should exit with an error, not {code}"
    assert "injected fault" in (tmp_path / "faulty.log").read_text()
    offsets = asyncio.run(committed(broker.bootstrap, group, named.reports_topic, 4))
    assert set(offsets.values()) == {0}, f"offsets committed for reports never stored: {offsets}"

    healthy = WorkerProcess(env, tmp_path / "healthy.log")

    async def replay() -> None:
        healthy.start()
        try:
            await healthy.wait_ready()
            await healthy.wait_drained(len(messages))
        finally:
            healthy.stop()

    asyncio.run(replay())
    store = Settings(data_dir=tmp_path / "worker")
    client = connect(store)
    try:
        ((rows, unique),) = client.query("SELECT count(), uniqExact(result_id) FROM results").result_rows
    finally:
        client.close()
    assert unique == len(result_ids) and rows == unique, f"{rows} rows, {unique} distinct, {len(result_ids)} expected"
    print(f"\nthe faulty worker exited {seconds:.1f} s after the reports were sent; {unique} results stored once after the restart")
