"""The Faust app: topics, the ingest and process agents, and the /metrics page.

    reports topic ──ingest──▶ results topic (keyed by category) ──process──▶ ClickHouse
          │                                                          └──▶ alerts topic
          └──────────────▶ dead-letter topic

Both agents take batches and acknowledge a batch only after everything it produced is
safely written (results envelopes and dead letters sent; ClickHouse rows inserted; alerts
sent), so a crash replays rather than loses. Replays are harmless: results already stored
are recognised by ``result_id`` and skipped, alert ids are deterministic. Each agent detects
and stores one batch in the background while it takes and validates the next
(``streams.overlap``); batches finish one at a time, in order. Takes and the buffers ahead of
them are bounded in bytes as well as messages (``streams.bounded_take``). A bug that
raises in an agent or a batch exits the process (``exit_failed``), leaving its batch to replay.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any, NoReturn, TypeVar

import faust
import orjson
from faust.types import TP

from detectors.isolation import load_fitting
from detectors.suite import DetectorSuite, default_detectors
from streams import metrics
from streams.bounded_take import BytesBoundedQueue, noack_take_bounded
from streams.clickhouse import Store, connect, ensure_schema, without_dataframes
from streams.dead_letter import dead_letter
from streams.fetch_wait import App
from streams.heap import HeapTrimmer
from streams.overlap import BatchFinisher
from streams.paging import Pager
from streams.pipeline import Ingestor, Processor, SourceMessage, decode_results, partition_for
from streams.settings import Settings

log = logging.getLogger("riskwatch.worker")
EXIT_FAILED = 70  # EX_SOFTWARE: an internal error
T = TypeVar("T")


class ClickHouseWorkerThread:
    """All ClickHouse calls on one dedicated thread, so that the event loop (and Kafka
    heartbeats) never block on a write, and the embedded engine is used from one thread only."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="clickhouse")
        self.store: Store | None = None
        self._opening = asyncio.Lock()

    async def run(self, fn, *args) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    async def opened(self) -> Store:
        """The store, connected and with its tables created on first use."""
        async with self._opening:
            if self.store is None:
                self.store = await self.run(self._open)
                log.info("ClickHouse ready at %s (database %s)", self.settings.effective_clickhouse_url, self.settings.clickhouse_database)
        return self.store

    def _open(self) -> Store:
        without_dataframes()
        client = connect(self.settings)
        ensure_schema(client)
        return Store(client)

    def close(self) -> None:
        if self.store is not None:
            self.store.client.close()
        self.executor.shutdown(wait=True)


def exit_failed(what: str, error: BaseException) -> NoReturn:
    """Exit the worker process at once, with an error, after a bug in ``what``.

    Faust would restart a failed agent, which goes on past the batch it failed on: that batch is
    never acknowledged, so no offset is committed again and the worker idles while it looks
    alive. A graceful stop would wait for that acknowledgement for ever. Exiting as a kill would
    (which replays are built for) leaves the batch to the next worker: a process supervisor
    restarts it, it rebuilds its state and replays, and one that keeps failing shows as down
    (``RiskwatchWorkerDown``).
    """
    log.critical("riskwatch: %s failed; exiting so that its batch is replayed", what, exc_info=error)
    logging.shutdown()  # flush the log: os._exit skips it
    os._exit(EXIT_FAILED)


class WorkerApp(App):
    """Our Faust app: an agent that raises takes the worker down (``exit_failed``) instead of being
    restarted; a topic's buffer holds at most ``buffer_max_bytes`` of messages."""

    buffer_max_bytes: int = 4_194_304  # set from Settings.batch_max_bytes

    def FlowControlQueue(self, maxsize: int | None = None, *, clear_on_resume: bool = False) -> BytesBoundedQueue:  # noqa: N802 - Faust's name
        return BytesBoundedQueue(maxsize=maxsize, max_bytes=self.buffer_max_bytes, flow_control=self.flow_control, clear_on_resume=clear_on_resume)

    async def _on_agent_error(self, agent: faust.types.AgentT, error: BaseException) -> None:
        exit_failed(f"agent {agent.name}", error)


def create_app(settings: Settings) -> faust.App:
    faust_dir = settings.data_dir / "faust"  # Faust's own files; not "{app id}-data" in the working directory
    faust_dir.mkdir(parents=True, exist_ok=True)
    app = WorkerApp(
        settings.consumer_group,
        broker=settings.faust_broker_url,
        broker_credentials=settings.faust_credentials(),
        store="memory://",
        datadir=str(faust_dir),
        autodiscover=False,
        topic_partitions=settings.topic_partitions,
        topic_replication_factor=settings.topic_replicas,
        broker_session_timeout=settings.session_timeout_seconds,
        broker_commit_interval=settings.commit_interval_seconds,
        consumer_auto_offset_reset="earliest",
        web_enabled=True,
        web_bind=settings.web_host,
        web_host=settings.web_host,
        web_port=settings.web_port,
        producer_max_request_size=max(1_048_576, settings.max_message_bytes * 2),
        consumer_max_fetch_size=max(4_194_304, settings.max_message_bytes * 2),
        logging_config=None,
    )
    app.fetch_max_wait_ms = settings.fetch_max_wait_ms
    app.buffer_max_bytes = settings.batch_max_bytes
    raw = dict(key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")
    # internal: Faust declares these (with topic_partitions) before the consumer subscribes; otherwise
    # subscribing makes the broker create them with its own default count (tansu: 4).
    reports = app.topic(settings.reports_topic, internal=True, **raw)
    results = app.topic(settings.results_topic, internal=True, **raw)
    dead_letters = app.topic(settings.dead_letter_topic, **raw)
    alerts = app.topic(settings.alerts_topic, **raw)

    ingestor = Ingestor(settings.validation_policy, settings.max_message_bytes)
    pager = Pager(settings.alertmanager_url, settings.page_min_severity, settings.grafana_url) if settings.alertmanager_url else None
    processed: dict[tuple[str, int], int] = {}  # last processed offset per topic partition, for the lag gauge
    clickhouse = ClickHouseWorkerThread(settings)
    ingest_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ingest")
    processors: list[Processor] = []  # one, created with the store
    # Each agent detects and stores one batch in the background while it takes and validates the next.
    ingest_finisher = BatchFinisher(on_error=lambda error: exit_failed("detecting and storing an ingested batch", error))
    process_finisher = BatchFinisher(on_error=lambda error: exit_failed("detecting and storing a results batch", error))
    fits = settings.fit_executor()

    async def processor() -> Processor:
        if not processors:
            store = await _retrying("open ClickHouse", settings, clickhouse.opened)
            if not processors:  # another caller (a task, the other agent) may have built it meanwhile
                suite = DetectorSuite(default_detectors(settings.severity_policy, fits))
                heap = HeapTrimmer(settings.heap_trim_seconds)
                processors.append(Processor(store, suite, timedelta(days=settings.warmup_days), settings.warmup_max_results, heap))
        return processors[0]

    @app.on_before_shutdown.connect
    async def _close_clickhouse(_app: faust.App, **_: Any) -> None:
        ingest_finisher.cancel()
        process_finisher.cancel()
        ingest_thread.shutdown(wait=True)
        clickhouse.close()
        if fits is not None:
            fits.shutdown(wait=False, cancel_futures=True)

    @app.task
    async def _declare_output_topics() -> None:
        """The agents' source topics are declared before subscribing (``internal``); these two are only written to."""
        for topic in (dead_letters, alerts):
            await topic.maybe_declare()

    @app.task
    async def _ready_fit_process() -> None:
        """Start the fit process and load scikit-learn in it now (~1 s), not inside the first batch that refits."""
        if fits is not None:
            await asyncio.wrap_future(fits.submit(load_fitting))

    @app.task
    async def _open_store() -> None:
        """Open ClickHouse (chDB loads in ~0.3 s) and build the detectors now, not inside the first batch."""
        await processor()

    @app.on_partitions_revoked.connect
    async def _revoked(_app: faust.App, revoked: set, **_: Any) -> None:
        if processors and revoked:
            await clickhouse.run(processors[0].reset)  # rebuilt from ClickHouse for whatever comes back

    @app.on_partitions_assigned.connect
    async def _assigned(_app: faust.App, assigned: set, **_: Any) -> None:
        metrics.ASSIGNED_PARTITIONS.set(len(assigned))
        log.info("riskwatch: %d partitions assigned", len(assigned))

    def results_partitions() -> int:
        """Partitions of the results topic as the broker has them (the app's setting until known)."""
        return app.consumer.topic_partitions(settings.results_topic) or settings.topic_partitions

    def owned_categories(partitions: int) -> Callable[[str], bool] | None:
        """Whether a category's results partition is assigned to this worker (as of now)."""
        if not settings.process_in_place:
            return None
        owned = frozenset(tp.partition for tp in app.consumer.assignment() if tp.topic == settings.results_topic)
        return lambda category: partition_for(category.encode(), partitions) in owned  # called on the ingest thread

    async def detect_and_store(batch: list, published: list[float], pending: list) -> None:
        """Drop stored results, rebuild state if need be, detect, send alerts, write; then the
        caller may acknowledge. ``pending`` holds sends (e.g. dead letters) to await with the alerts."""
        if not batch:
            await asyncio.gather(*pending)
            return
        pipeline = await processor()
        fresh = await _retrying("look up stored results", settings, clickhouse.run, pipeline.select_fresh, batch)
        await _retrying("rebuild detector state", settings, clickhouse.run, pipeline.warm_up, fresh)
        output = await clickhouse.run(pipeline.detect, fresh)  # off the event loop: refits take a moment
        # Alerts reach their topic before the rows are stored: after a crash in between,
        # the replay re-derives and re-sends them (same ids) instead of skipping them.
        pending += [await alerts.send(key=a.alert_id.encode(), value=orjson.dumps(a.to_wire())) for a in output.alerts]
        await asyncio.gather(*pending)
        await _retrying("write to ClickHouse", settings, clickhouse.run, pipeline.write, output)
        metrics.RESULTS_DUPLICATE.inc(output.duplicates)
        metrics.RESULTS_STORED.inc(len(output.stored))
        for alert in output.alerts:
            metrics.ALERTS_RAISED.labels(alert.detector, alert.severity.value).inc()
        stored_at = time.time()
        for published_at in published:
            metrics.PROCESSING_LATENCY.observe(max(0.0, stored_at - published_at))
        if pager is not None:
            await pager.page(output.alerts)

    async def finish_ingested(stream: faust.StreamT, events: list, output: Any, pending: list) -> None:
        """Detect and store the results this worker processes itself; then acknowledge the batch."""
        await detect_and_store(output.local, output.local_published, pending)
        metrics.RESULTS_VALID.inc(output.valid_results)
        metrics.RESULTS_LOCAL.inc(len(output.local))
        metrics.RESULT_BATCHES_SENT.inc(len(output.results))
        metrics.DEAD_LETTERS.labels("ingest").inc(len(output.dead_letters))
        await _acknowledge(stream, events, processed)
        metrics.REPORTS_HANDLED.inc(output.reports)

    async def ingest_take(stream: faust.StreamT, events: Sequence) -> None:
        """Validate a take and send what goes elsewhere; then hand it to the finisher."""
        messages = [_source(event) for event in events]
        partitions = results_partitions()  # once per take: ownership and sends must agree
        is_local = owned_categories(partitions)
        # Off the event loop: a take of batch messages can hold thousands of reports, and
        # heartbeats and /metrics must go on meanwhile.
        output = await asyncio.get_running_loop().run_in_executor(ingest_thread, ingestor.ingest, messages, is_local)
        pending = [await results.send(key=key, value=value, partition=partition_for(key, partitions)) for key, value in output.results]
        pending += [await dead_letters.send(key=key, value=value) for key, value in output.dead_letters]
        # Categories whose results partition is this worker's own are processed here: the
        # results topic would only bring them back (same partitioner, explicit partition).
        await ingest_finisher.submit(finish_ingested(stream, events, output, pending))

    @app.agent(reports)
    async def ingest(stream: faust.StreamT) -> None:
        try:
            async for take in noack_take_bounded(stream, settings.batch_max, settings.batch_max_bytes, settings.batch_seconds):
                await ingest_take(stream, take)
        finally:
            ingest_finisher.cancel()  # stopping: what is not acknowledged is replayed

    async def finish_processed(stream: faust.StreamT, events: list, batch: list, published: list[float], pending: list, undecodable: int) -> None:
        """Detect and store a batch of the results topic; then acknowledge it."""
        await detect_and_store(batch, published, pending)
        metrics.DEAD_LETTERS.labels("process").inc(undecodable)
        metrics.RESULT_BATCHES_PROCESSED.inc(len(events) - undecodable)
        await _acknowledge(stream, events, processed)

    async def process_take(stream: faust.StreamT, events: Sequence) -> None:
        """Decode a take of result envelopes; then hand it to the finisher."""
        batch, undecodable, published = [], [], []
        for event in events:
            try:
                results_of_event, published_at = decode_results(event.value)
            except Exception as error:  # noqa: BLE001 - a foreign message on our topic
                undecodable.append((event, error))
                continue
            batch.extend(results_of_event)
            if published_at is not None:
                published.append(published_at)
        pending = []
        for event, error in undecodable:
            message = _source(event)
            letter = dead_letter(
                stage="process", code="bad_envelope", reason=f"not a results envelope: {error}", topic=message.topic,
                partition=message.partition, offset=message.offset, key=message.key, original=message.value,
            )  # fmt: skip
            pending.append(await dead_letters.send(key=message.key, value=letter))
        await process_finisher.submit(finish_processed(stream, events, batch, published, pending, len(undecodable)))

    @app.agent(results)
    async def process(stream: faust.StreamT) -> None:
        try:
            async for take in noack_take_bounded(stream, settings.batch_max, settings.batch_max_bytes, settings.batch_seconds):
                await process_take(stream, take)  # envelopes of 500 results: a few dozen a take
        finally:
            process_finisher.cancel()  # stopping: what is not acknowledged is replayed

    @app.timer(interval=5.0)
    async def _report_lag() -> None:
        for (topic, partition), offset in list(processed.items()):
            try:
                highwater = app.consumer.highwater(TP(topic, partition))
            except Exception:  # noqa: BLE001 - no longer assigned to this worker
                processed.pop((topic, partition), None)
                metrics.CONSUMER_LAG.remove(topic, str(partition))
                continue
            if highwater is not None:
                metrics.CONSUMER_LAG.labels(topic, str(partition)).set(max(0, highwater - offset - 1))

    @app.page("/metrics")
    async def _metrics(web: Any, request: Any) -> Any:
        body, content_type = metrics.exposition()
        return web.bytes(body, content_type=content_type.split(";")[0])

    return app


async def _retrying(what: str, settings: Settings, step: Callable[..., Awaitable[T]], *args: Any) -> T:
    """Retry a ClickHouse step with backoff until it succeeds. The batch stays unacknowledged
    meanwhile, so an outage delays results but loses none; the outage shows in the metrics."""
    pause = 0.5
    failing_since: float | None = None
    while True:
        try:
            result = await step(*args)
        except Exception as error:  # noqa: BLE001 - any ClickHouse failure is retried
            failing_since = failing_since or time.monotonic()
            metrics.SINK_ERRORS.inc()
            metrics.SINK_OUTAGE_SECONDS.set(time.monotonic() - failing_since)
            log.warning("could not %s (%s); retrying in %.1f s", what, error, pause)
            await asyncio.sleep(pause)
            pause = min(pause * 2, settings.sink_retry_max_seconds)
            continue
        if failing_since is not None:
            log.warning("ClickHouse is back: %s after %.0f s of failures", what, time.monotonic() - failing_since)
            metrics.SINK_OUTAGE_SECONDS.set(0)
        return result


def _source(event: faust.EventT) -> SourceMessage:
    message = event.message
    return SourceMessage(message.topic, message.partition, message.offset, message.key, message.value, message.timestamp)


async def _acknowledge(stream: faust.StreamT, events: list, processed: dict[tuple[str, int], int]) -> None:
    """Acknowledge a finished batch and note its offsets for the lag gauge."""
    for event in events:
        await stream.ack(event)
        key = (event.message.topic, event.message.partition)
        processed[key] = max(processed.get(key, -1), event.message.offset)
