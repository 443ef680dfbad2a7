"""``riskwatch bench pipeline``: throughput and latency of the pipeline against its transport.

All on one local tansu broker, on the same pre-generated reports, in one run:

(a) a bare aiokafka consumer (``getmany`` + orjson, loop over items, per-(category, item)
    counts): the ceiling the transport allows;
(b) a Faust agent doing nothing per message: Faust's own per-message cost;
(c) the full worker (ingest, every detector, ClickHouse) until the last result is stored;
(d) publication → ClickHouse latency of the full worker at a fixed offered rate, from its
    histogram, and the worker's peak RSS;
(a2), (e) the same reports carried many to a message (``riskwatch.lab_report_batch.v1``, as
    ``riskwatch publish`` sends them): the bare consumer and the full worker again;
(d2) the latency of (d) again, the reports offered at the same rate carried as in (e);
(v), (x), (s) the worker's three stages each alone, in this process, no broker, on the same
    reports in the worker's batches: validation, the detectors (fits in the fit process, as in the
    worker) and ClickHouse (duplicate look-up and insert into a fresh embedded store). Each alone
    bounds the worker's rate, whatever the others and Faust cost.

Figures, not assertions: the machine is shared, so (c) is judged against (a) measured here.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from detectors.isolation import load_fitting
from detectors.suite import DetectorSuite, default_detectors
from schemas.results import LabResult
from streams.bench_state import BATCH_RESULTS
from streams.broker import LocalBroker, free_port
from streams.clickhouse import Store, connect, drop_database, ensure_schema, without_dataframes
from streams.pipeline import Ingestor, SourceMessage
from streams.procfs import child_pids, cpu_seconds, peak_rss_mb
from streams.publisher import Batching, batch_messages
from streams.settings import Settings
from streams.simulation import Simulator
from streams.worker_process import WorkerProcess


@dataclass(slots=True)
class Figures:
    name: str
    messages: int
    results: int
    seconds: float
    extra: dict = field(default_factory=dict)

    @property
    def messages_per_second(self) -> float:
        return self.messages / self.seconds if self.seconds else 0.0

    @property
    def results_per_second(self) -> float:
        return self.results / self.seconds if self.seconds else 0.0


def validation_alone(messages: list[tuple[bytes, bytes]], items: int) -> tuple[Figures, list[LabResult]]:
    """(v) The worker's ingest stage (parse, schema, units, results) over the messages, every
    category kept local as in the worker that owns it: no envelopes, no broker. Also the results,
    in publication order, for the next stages alone."""
    settings = Settings()
    ingestor = Ingestor(settings.validation_policy, settings.max_message_bytes)
    published = time.time()
    source = [SourceMessage("bench.reports", 0, offset, key, value, published) for offset, (key, value) in enumerate(messages)]
    started = time.perf_counter()
    output = ingestor.ingest(source, is_local=lambda category: True)
    seconds = time.perf_counter() - started
    if output.valid_results != items or output.dead_letters:
        raise RuntimeError(f"validation kept {output.valid_results} of {items} results, {len(output.dead_letters)} dead letters")
    results = sorted(output.local, key=lambda r: r.source_offset)
    return Figures("v. validation alone, no broker", output.reports, output.valid_results, seconds), results


def _batches(results: list[LabResult]) -> list[list[LabResult]]:
    """The results in the worker's batches (about what 2,000 single-report messages hold)."""
    return [results[start : start + BATCH_RESULTS] for start in range(0, len(results), BATCH_RESULTS)]


def detectors_alone(results: list[LabResult], reports: int, fits=None) -> Figures:
    """(x) The worker's detector suite over the results, batch by batch from fresh state, as the
    worker's first sight of them; ``fits``: the worker's fit processes (None: fits in place),
    started and readied first, as the worker readies them when it starts."""
    if fits is not None:
        fits.submit(load_fitting).result()
    suite = DetectorSuite(default_detectors(Settings().severity_policy, fits))
    started = time.perf_counter()
    alerts = sum(len(suite.process(batch, datetime.now(UTC))) for batch in _batches(results))
    return Figures("x. detectors alone, no broker", reports, len(results), time.perf_counter() - started, {"alerts": alerts})


def sink_alone(results: list[LabResult], reports: int, workdir: Path) -> Figures:
    """(s) The worker's ClickHouse stage, batch by batch: the look-up of which results are stored
    already, then the insert, into a fresh embedded store (the worker's default)."""
    without_dataframes()  # as the worker
    client = connect(Settings(clickhouse_url=f"chdb://{workdir / 'sink-alone'}"))
    try:
        ensure_schema(client)
        store = Store(client)
        started = time.perf_counter()
        for batch in _batches(results):
            if store.known_result_ids(r.result_id for r in batch):
                raise RuntimeError("a fresh store already holds results: the sink's figures would not be the worker's")
            store.insert_results(batch)
        seconds = time.perf_counter() - started
        stored = client.query("SELECT count() FROM results").result_rows[0][0]
    finally:
        client.close()
    if stored != len(results):
        raise RuntimeError(f"the store holds {stored} of {len(results)} results")
    return Figures("s. ClickHouse alone (look-up, insert), no broker", reports, len(results), seconds)


def make_reports(count: int, seed: int = 11, days_ago: int = 60) -> tuple[list[tuple[bytes, bytes]], int]:
    """(key, value) messages and the number of test items they carry."""
    sim = Simulator(seed=seed, start=datetime.now(UTC) - timedelta(days=days_ago), incidents=())
    messages, items = [], 0
    for _ in range(count):
        report = sim.next_report()
        items += len(report["items"])
        messages.append((report["category"].encode(), orjson.dumps(report)))
    return messages, items


async def create_topic(bootstrap: str, topic: str, partitions: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, partitions, 1)])
    finally:
        await admin.close()


async def produce(
    bootstrap: str, topic: str, messages: list[tuple[bytes, bytes]], rate: float | None = None, reports: list[int] | None = None
) -> float:
    """Send all messages, at most ``rate`` reports per second if given (``reports``: how many each
    message carries, one each by default); returns the seconds it took."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=10, max_batch_size=262_144)
    await producer.start()
    started = time.perf_counter()
    try:
        pending, offered = [], 0
        for n, (key, value) in enumerate(messages):
            pending.append(await producer.send(topic, value=value, key=key))
            offered += reports[n] if reports else 1
            if rate is not None and (reports or offered % 50 == 0):  # single reports are paced fifty at a time
                await asyncio.sleep(max(0.0, started + offered / rate - time.perf_counter()))
            if len(pending) >= 5000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return time.perf_counter() - started


async def bare_consumer(bootstrap: str, topic: str, expected: int, name: str = "a. bare aiokafka + orjson") -> Figures:
    """Read ``expected`` reports (single or in batch messages), counting per (category, item)."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=f"bench-bare-{time.time_ns()}",
                                max_partition_fetch_bytes=4_194_304, fetch_max_bytes=16_777_216)  # fmt: skip
    await consumer.start()
    counts: Counter = Counter()
    seen = items = 0
    started = None
    try:
        while seen < expected:
            batches = await consumer.getmany(timeout_ms=1000, max_records=10_000)
            if started is None and batches:
                started = time.perf_counter()
            for records in batches.values():
                for record in records:
                    message = orjson.loads(record.value)
                    for report in message.get("reports") or [message]:
                        for item in report["items"]:
                            counts[(report["category"], item["test_item"])] += 1
                            items += 1
                        seen += 1
        return Figures(name, seen, items, time.perf_counter() - (started or time.perf_counter()))
    finally:
        await consumer.stop()


def faust_noop(bootstrap: str, topic: str, expected: int, workdir: Path) -> Figures:
    """A Faust agent that does nothing per message, in its own process (Faust owns its loop)."""
    script = workdir / "noop_app.py"
    script.write_text(_NOOP_APP)
    run = subprocess.run([sys.executable, str(script), bootstrap, topic, str(expected)], capture_output=True, text=True, timeout=1800,
                         cwd=workdir)  # fmt: skip
    found = re.search(r"NOOP (\d+) ([\d.]+)", run.stdout + run.stderr)  # Faust may route print() to its log
    if found is None:
        raise RuntimeError(f"the Faust no-op run failed:\n{run.stdout[-2000:]}\n{run.stderr[-2000:]}")
    count, seconds = found.groups()
    return Figures("b. Faust agent, no work", int(count), 0, float(seconds))


_NOOP_APP = """
import os, sys, time, faust
bootstrap, topic, expected = sys.argv[1], sys.argv[2], int(sys.argv[3])
app = faust.App(f"bench-noop-{time.time_ns()}", broker=f"kafka://{bootstrap}", store="memory://", web_enabled=False,
                broker_session_timeout=10, consumer_auto_offset_reset="earliest", autodiscover=False)
source = app.topic(topic, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")
state = {"n": 0, "t0": None}

@app.agent(source)
async def noop(stream):
    async for _value in stream:
        if state["t0"] is None:
            state["t0"] = time.perf_counter()
        state["n"] += 1
        if state["n"] >= expected:
            print(f"NOOP {state['n']} {time.perf_counter() - state['t0']:.3f}", flush=True)
            os._exit(0)  # measured; stopping Faust from inside its own agent would hang

if __name__ == "__main__":
    faust.Worker(app, loglevel="warning").execute_from_commandline()
"""


def bench_worker_env(bootstrap: str, topic: str, workdir: Path, name: str) -> dict[str, str]:
    """A bench worker's environment: topics named after ``topic``, its own data directory, group and database."""
    return {
        "RISKWATCH_KAFKA_BOOTSTRAP": bootstrap, "RISKWATCH_REPORTS_TOPIC": topic, "RISKWATCH_RESULTS_TOPIC": f"{topic}.results",
        "RISKWATCH_DEAD_LETTER_TOPIC": f"{topic}.dlq", "RISKWATCH_ALERTS_TOPIC": f"{topic}.alerts", "RISKWATCH_WEB_PORT": str(free_port()),
        "RISKWATCH_DATA_DIR": str(workdir / name), "RISKWATCH_CONSUMER_GROUP": f"bench-{name}-{time.time_ns()}",
        "RISKWATCH_LOG_LEVEL": "warning",
        # a database of its own: two workers pointed at one ClickHouse server (RISKWATCH_CLICKHOUSE_URL)
        # would otherwise share one, and the second would skip every result as already stored
        "RISKWATCH_CLICKHOUSE_DATABASE": f"riskwatch_bench_{name.replace('-', '_')}_{time.time_ns()}",
    }  # fmt: skip


def _drop_server_database(env: dict[str, str]) -> None:
    """A worker's database, dropped from a ClickHouse server after its run; an embedded store lives in
    the worker's own directory, under the bench's temporary one."""
    settings = Settings()
    if not settings.embedded_clickhouse:
        drop_database(settings, env["RISKWATCH_CLICKHOUSE_DATABASE"])


async def _until_processed(worker: WorkerProcess, items: int, name: str, reports: int, broker_pid: int) -> Figures:
    """Wait for the worker to finish ``items`` results; note its peak RSS and where the CPU went meanwhile."""
    processes = {"worker": [worker.process.pid], "fit_process": child_pids(worker.process.pid), "broker": [broker_pid]}
    cpu_before = {process: sum(map(cpu_seconds, pids)) for process, pids in processes.items()}
    started = time.perf_counter()
    await until_results_finished(worker, items, poll_seconds=0.2)
    figures = Figures(name, reports, items, time.perf_counter() - started)
    figures.extra["peak_rss_mb"] = peak_rss_mb(worker.process.pid)
    for process, pids in processes.items():  # share of one core: 100 is a core busy all along
        figures.extra[f"cpu_{process}_pct"] = round(100 * (sum(map(cpu_seconds, pids)) - cpu_before[process]) / figures.seconds)
    return figures


async def full_worker(
    bootstrap: str, topic: str, messages: list, items: int, workdir: Path, rate: float, broker_pid: int, fresh: tuple[list, int]
) -> tuple[Figures, Figures]:
    """(c) the whole worker on messages already in the topic; (d) then latency at a fixed rate."""
    env = bench_worker_env(bootstrap, topic, workdir, "worker")
    worker = WorkerProcess(env, workdir / "worker.log")
    worker.start()
    try:
        await worker.wait_ready(timeout=120)
        throughput = await _until_processed(worker, items, "c. full worker (ingest, 9 detectors, ClickHouse)", len(messages), broker_pid)
        latency = await _latency_at_rate(worker, bootstrap, topic, rate, f"d. full worker at {rate:g} reports/s", fresh)
        return throughput, latency
    finally:
        worker.stop()
        _drop_server_database(env)


async def _latency_at_rate(
    worker: WorkerProcess, bootstrap: str, topic: str, rate: float, name: str, fresh: tuple[list, int], batch: int = 1
) -> Figures:
    """``fresh`` reports (messages, their test items), not yet seen by the worker, offered at ``rate``
    reports/s, ``batch`` to a message; publication → ClickHouse from the worker's own latency
    histogram (the part this run added), and its peak RSS."""
    before = await asyncio.to_thread(worker.metrics)
    buckets_before = await asyncio.to_thread(_latency_buckets, worker.metrics_url)
    fresh, fresh_items = fresh
    messages, reports = in_batches(fresh, batch) if batch > 1 else (fresh, None)
    await produce(bootstrap, topic, messages, rate=rate, reports=reports)
    await until_results_finished(worker, results_finished(before) + fresh_items, poll_seconds=0.5, timeout=300)
    latency = Figures(name, len(fresh), fresh_items, 0.0)
    latency.extra.update(_quantiles(buckets_before, await asyncio.to_thread(_latency_buckets, worker.metrics_url)))
    latency.extra["peak_rss_mb"] = peak_rss_mb(worker.process.pid)
    return latency


def in_batches(messages: list[tuple[bytes, bytes]], batch: int) -> tuple[list[tuple[bytes, bytes]], list[int]]:
    """The reports as ``riskwatch publish`` sends them, ``batch`` to a message at most, and how many each message carries."""
    batched = [(key, value) for key, value, _ in batch_messages([(key, value, b"") for key, value in messages], Batching(batch))]
    return batched, [len(orjson.loads(value)["reports"]) for _, value in batched]


async def full_worker_on_batches(
    bootstrap: str, topic: str, reports: int, items: int, workdir: Path, batch: int, broker_pid: int, rate: float, fresh: tuple[list, int]
) -> tuple[Figures, Figures]:
    """(e) the whole worker on the same reports carried ``batch`` to a message; (d2) then latency at a fixed rate."""
    env = bench_worker_env(bootstrap, topic, workdir, "batch-worker")
    worker = WorkerProcess(env, workdir / "batch-worker.log")
    worker.start()
    try:
        await worker.wait_ready(timeout=120)
        throughput = await _until_processed(worker, items, f"e. full worker, {batch} reports per message", reports, broker_pid)
        name = f"d2. full worker at {rate:g} reports/s, {batch} per message"
        return throughput, await _latency_at_rate(worker, bootstrap, topic, rate, name, fresh, batch)
    finally:
        worker.stop()
        _drop_server_database(env)


def results_finished(metrics: dict[str, float]) -> float:
    """Results the worker has finished with: stored, or recognised as already stored."""
    return metrics.get("riskwatch_results_stored_total", 0) + metrics.get("riskwatch_results_duplicate_total", 0)


async def until_results_finished(
    worker: WorkerProcess,
    target: float,
    *,
    poll_seconds: float,
    timeout: float | None = None,
    on_poll: Callable[[dict[str, float]], None] | None = None,
) -> dict[str, float]:
    """Poll the worker's /metrics until it has finished ``target`` results, or ``timeout`` passes;
    the last metrics read. A worker that exits raises (with its log) rather than being waited for
    for ever; a busy worker's late answer is asked again."""
    deadline = None if timeout is None else time.monotonic() + timeout
    metrics: dict[str, float] = {}
    while deadline is None or time.monotonic() < deadline:
        worker.check_alive()
        try:
            metrics = await asyncio.to_thread(worker.metrics)
        except OSError:
            pass  # busy, or just exited: the check above says which next time
        else:
            if results_finished(metrics) >= target:
                break
            if on_poll is not None:
                on_poll(metrics)
        await asyncio.sleep(poll_seconds)
    return metrics


def _latency_buckets(url: str) -> list[tuple[float, float]]:
    """Cumulative (upper bound, count) buckets of riskwatch_processing_latency_seconds."""
    from prometheus_client.parser import text_string_to_metric_families

    text = urllib.request.urlopen(url, timeout=5).read().decode()  # noqa: S310 - loopback
    for family in text_string_to_metric_families(text):
        if family.name == "riskwatch_processing_latency_seconds":
            return [(float(s.labels["le"]), s.value) for s in family.samples if s.name.endswith("_bucket")]
    return []


def _quantiles(before: list[tuple[float, float]], after: list[tuple[float, float]]) -> dict:
    """p50 / p99 (as bucket upper bounds) of the observations between two scrapes."""
    earlier = dict(before)
    buckets = [(le, count - earlier.get(le, 0.0)) for le, count in after]
    total = buckets[-1][1] if buckets else 0
    return {
        f"p{int(q * 100)}_seconds_at_most": next((le for le, n in buckets if total and n >= q * total), float("nan")) for q in (0.5, 0.99)
    }


async def run(reports: int, partitions: int, rate: float, progress=print, batch: int = 200) -> list[Figures]:
    workdir = Path(tempfile.mkdtemp(prefix="riskwatch-bench-"))
    broker = LocalBroker("127.0.0.1", free_port(), log_file=workdir / "broker.log")
    await broker.start()
    try:
        progress(f"generating {reports:,} reports")
        messages, items = make_reports(reports)
        fresh = make_reports(max(200, int(rate * 10)), seed=99, days_ago=20)  # for (d) and (d2), each worker's first sight of them
        topic = "bench.reports"
        await create_topic(broker.bootstrap, topic, partitions)
        progress(f"publishing them to {partitions} partitions")
        seconds = await produce(broker.bootstrap, topic, messages)
        progress(f"published in {seconds:.1f} s; (a) bare aiokafka")
        bare = await bare_consumer(broker.bootstrap, topic, len(messages))
        progress("(b) Faust no-op agent")
        noop = await asyncio.to_thread(faust_noop, broker.bootstrap, topic, len(messages), workdir)
        progress("(c) full worker, then (d) latency at a fixed rate")
        full, latency = await full_worker(broker.bootstrap, topic, messages, items, workdir, rate, broker.process.pid, fresh)
        batched, _ = in_batches(messages, batch)
        batch_topic = "bench.batches"
        await create_topic(broker.bootstrap, batch_topic, partitions)
        progress(f"the same reports in {len(batched):,} batch messages; (a2) bare aiokafka, (e) full worker, then (d2) latency")
        await produce(broker.bootstrap, batch_topic, batched)
        bare_batches = await bare_consumer(broker.bootstrap, batch_topic, len(messages), f"a2. bare aiokafka, {batch} reports per message")
        on_batches, batch_latency = await full_worker_on_batches(
            broker.bootstrap, batch_topic, len(messages), items, workdir, batch, broker.process.pid, rate, fresh
        )
        progress("(v) validation, (x) detectors and (s) ClickHouse, each alone")
        validation, results = validation_alone(messages, items)
        fits = Settings().fit_executor()
        try:
            detectors = detectors_alone(results, len(messages), fits)
        finally:
            if fits is not None:
                fits.shutdown(cancel_futures=True)
        sink = sink_alone(results, len(messages), workdir)
        return [bare, noop, full, latency, bare_batches, on_batches, batch_latency, validation, detectors, sink]
    finally:
        broker.stop()
