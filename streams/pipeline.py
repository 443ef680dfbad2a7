"""What the agents do with a batch, apart from Kafka itself: ingest and process.

Kept free of Faust so that the logic is testable without a broker and the agents stay thin.
Ingest is stateless (any worker may validate any report); process runs per category
partition: it drops results already stored, runs the detectors and writes to ClickHouse.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import orjson
from aiokafka.partitioner import murmur2

from detectors.suite import MERGE_WINDOWS, DetectorSuite
from schemas.results import Alert, LabResult, is_number
from schemas.validation import ValidationPolicy, validate_message
from streams import metrics
from streams.clickhouse import Store
from streams.dead_letter import dead_letter
from streams.heap import HeapTrimmer

log = logging.getLogger(__name__)

RESULTS_SCHEMA = "riskwatch.results.v1"
RESULTS_PER_ENVELOPE = 500  # keeps envelopes well under Kafka's 1 MB default request size


@dataclass(frozen=True, slots=True)
class SourceMessage:
    """A Kafka message as the pipeline needs it (no Faust types)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: float | None = None  # when the message was published (Kafka timestamp, seconds)


@dataclass(slots=True)
class IngestOutput:
    results: list[tuple[bytes, bytes]] = field(default_factory=list)  # (category key, envelope) for the results topic
    dead_letters: list[tuple[bytes | None, bytes]] = field(default_factory=list)
    valid_results: int = 0
    reports: int = 0  # in the messages, valid or not
    local: list[LabResult] = field(default_factory=list)  # results of categories this worker processes itself
    local_published: list[float] = field(default_factory=list)  # when their reports were published, for latency


def partition_for(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner (murmur2, as the Java client and aiokafka) gives a key."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


def encode_results(results: Sequence[LabResult], published: float | None = None) -> bytes:
    """An envelope of results; ``published`` is when the oldest report behind them was published."""
    return orjson.dumps({"schema": RESULTS_SCHEMA, "published": published, "results": [r.to_wire() for r in results]})


def decode_results(payload: bytes) -> tuple[list[LabResult], float | None]:
    """The results of an envelope and when their oldest report was published (for latency)."""
    envelope = orjson.loads(payload)
    if not isinstance(envelope, dict) or envelope.get("schema") != RESULTS_SCHEMA:
        schema = envelope.get("schema") if isinstance(envelope, dict) else type(envelope).__name__
        raise ValueError(f"expected a {RESULTS_SCHEMA} envelope, got {schema!r:.80}")
    results, published = envelope.get("results"), envelope.get("published")
    if not isinstance(results, list):
        raise ValueError("results must be a list")
    if published is not None and not is_number(published):
        raise ValueError(f"published must be epoch seconds or null, not {published!r:.80}")
    decoded = []
    for n, result in enumerate(results):
        try:
            decoded.append(LabResult.from_wire(result))
        except ValueError as error:
            raise ValueError(f"results[{n}]: {error}") from None
    return decoded, published


class Ingestor:
    """Validate and normalise lab reports; everything refused becomes a dead letter."""

    def __init__(self, policy: ValidationPolicy, max_message_bytes: int) -> None:
        self.policy = policy
        self.max_message_bytes = max_message_bytes

    def ingest(self, messages: Iterable[SourceMessage], is_local: Callable[[str], bool] | None = None) -> IngestOutput:
        """Validate messages. Results of categories for which ``is_local`` holds stay in
        ``output.local`` (this worker owns their results partition, so sending them through the
        results topic would only come back here); the rest are enveloped for the results topic."""
        output = IngestOutput()
        by_category: dict[str, list[LabResult]] = defaultdict(list)
        published: dict[str, float] = {}
        now = datetime.now(UTC)
        for message in messages:
            metrics.MESSAGES_RECEIVED.inc()
            reports = 1  # what a message that is no batch counts as, valid or not
            try:
                reports = self._ingest_one(message, now, by_category, published, output)
            except Exception as error:  # noqa: BLE001 - no input may stop the worker
                log.exception("unexpected error validating %s[%d]@%d", message.topic, message.partition, message.offset)
                self._reject(output, message, "internal", f"internal error while validating: {error!r}")
            metrics.REPORTS_RECEIVED.inc(reports)
            output.reports += reports
        for category, results in by_category.items():
            if is_local is not None and is_local(category):
                output.local.extend(results)
                if category in published:
                    output.local_published.append(published[category])
                continue
            for start in range(0, len(results), RESULTS_PER_ENVELOPE):
                envelope = encode_results(results[start : start + RESULTS_PER_ENVELOPE], published.get(category))
                output.results.append((category.encode(), envelope))
        return output

    def _ingest_one(
        self,
        message: SourceMessage,
        now: datetime,
        by_category: dict[str, list[LabResult]],
        published: dict[str, float],
        output: IngestOutput,
    ) -> int:
        """Validate one message into by_category and output; returns how many reports it held."""
        payload = message.value
        if not payload:
            self._reject(output, message, "empty", "empty message: a lab report was expected")
            return 1
        if len(payload) > self.max_message_bytes:
            self._reject(
                output, message, "too_large", f"message of {len(payload)} bytes exceeds the limit of {self.max_message_bytes} bytes"
            )
            return 1
        outcomes = validate_message(payload, now=now, policy=self.policy, source_partition=message.partition, source_offset=message.offset)
        for outcome in outcomes:
            for rejection in outcome.rejections:
                reason, original = rejection.reason, None
                if outcome.batch_index is not None:  # a report of a batch: its own bytes, its place in the batch
                    reason, original = f"reports[{outcome.batch_index}]: {reason}", orjson.dumps(outcome.original)
                self._reject(output, message, rejection.code, reason, rejection.item_index, rejection.item, outcome.batch_index, original)
            for result in outcome.results:
                by_category[result.category].append(result)
                if message.timestamp is not None:  # the oldest publication behind each envelope, for latency
                    published[result.category] = min(published.get(result.category, message.timestamp), message.timestamp)
            output.valid_results += len(outcome.results)
        return len(outcomes)

    @staticmethod
    def _reject(
        output: IngestOutput,
        message: SourceMessage,
        code: str,
        reason: str,
        item_index: int | None = None,
        item=None,
        batch_index: int | None = None,
        original: bytes | None = None,
    ) -> None:
        if item_index is None:
            metrics.REPORTS_REJECTED.labels(code).inc()
        else:
            metrics.ITEMS_REJECTED.labels(code).inc()
        output.dead_letters.append(
            (
                message.key,
                dead_letter(
                    stage="ingest", code=code, reason=reason, topic=message.topic, partition=message.partition,
                    offset=message.offset, key=message.key, original=original if original is not None else message.value,
                    item_index=item_index, item=item, batch_index=batch_index,
                ),
            )
        )  # fmt: skip


@dataclass(slots=True)
class ProcessOutput:
    stored: list[LabResult] = field(default_factory=list)
    alerts: list[Alert] = field(default_factory=list)
    duplicates: int = 0


class Processor:
    """Per batch of results: drop those already stored, rebuild detector state for categories
    new to this worker, detect, and say what to write. Owns the detector suite."""

    def __init__(
        self,
        store: Store,
        suite: DetectorSuite,
        warmup: timedelta = timedelta(days=90),
        warmup_limit: int = 20_000,
        heap: HeapTrimmer | None = None,
    ) -> None:
        self.store = store
        self.suite = suite
        self.warmup, self.warmup_limit = warmup, warmup_limit
        self.warmed: set[str] = set()
        self.heap = heap or HeapTrimmer(0)

    def select_fresh(self, results: Iterable[LabResult]) -> ProcessOutput:
        """The results not seen before, in event-time order (asks ClickHouse; safe to retry)."""
        output = ProcessOutput()
        unique: dict[str, LabResult] = {}
        for result in results:
            if result.result_id in unique:
                output.duplicates += 1
            else:
                unique[result.result_id] = result
        known = self.store.known_result_ids(unique)
        output.duplicates += len(known)
        output.stored = sorted((r for rid, r in unique.items() if rid not in known), key=lambda r: r.published_at)
        return output

    def warm_up(self, output: ProcessOutput) -> int:
        """Rebuild state for categories this worker has not seen since it started or was
        (re)assigned partitions: learn their recent stored results (no alerts) and reopen
        their recent alerts for merging. Returns how many results were replayed."""
        new = sorted({r.category for r in output.stored} - self.warmed)
        if not new:
            return 0
        now = datetime.now(UTC)
        history = self.store.recent_results(new, now - self.warmup, self.warmup_limit)
        self.suite.warm(history, now)
        self.suite.restore(self.store.open_alerts(new, now - max(MERGE_WINDOWS.values())))
        self.warmed.update(new)
        metrics.STATE_REBUILT.inc(len(history))
        log.info("rebuilt detector state for %d categories from %d stored results", len(new), len(history))
        return len(history)

    def detect(self, output: ProcessOutput) -> ProcessOutput:
        """Run the detector suite over the fresh results (once per batch)."""
        output.alerts = self.suite.process(output.stored, datetime.now(UTC))
        return output

    def reset(self) -> None:
        """Forget detector state (partitions revoked: another worker may own them now)."""
        self.suite.reset()
        self.warmed.clear()

    def write(self, output: ProcessOutput) -> None:
        """Alerts first: a crash between the two writes replays the results and re-derives the same alerts.
        Then the heap memory freed meanwhile (earlier batches, the detectors' outgrown windows and replaced
        forests) goes back to the system, when due."""
        with metrics.SINK_BATCH_SECONDS.time():
            self.store.insert_alerts(output.alerts)
            self.store.insert_results(output.stored)
        metrics.SINK_BATCH_ROWS.observe(len(output.stored) + len(output.alerts))
        with metrics.HEAP_TRIM_SECONDS.time():
            trimmed = self.heap.maybe_trim()
        if trimmed:
            metrics.HEAP_TRIMS.inc()
