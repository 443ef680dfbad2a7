"""``riskwatch publish``: send a lab's LIMS exports to Kafka, checked against the contract first.

Every report is validated exactly as the worker will validate it; a report or item that
would be rejected is reported with its file line and reason and is not sent. Messages are
keyed by category (the contract) and carry a ``report-key`` header (lab/sample). Republishing
a file is idempotent end to end: result ids are derived from lab, sample and test item, and
the worker stores and alerts each result once.

``--watch DIR`` turns a folder into a drop box: each new file is published once (what was
published is remembered in ``DIR/.published.json``, by content hash), then moved to ``done/``
or ``failed/`` with a report beside it.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import orjson
from kafka import KafkaProducer

from schemas.validation import BATCH_SCHEMA_NAME, ValidationPolicy, validate_report
from streams.lims import LimsMapping, build_reports, read_rows

SUFFIXES = {".csv", ".xlsx", ".jsonl", ".ndjson", ".json"}


@dataclass(slots=True)
class Rejected:
    line: int
    reason: str


@dataclass(slots=True)
class PublishSummary:
    file: str
    rows: int = 0
    reports_ready: int = 0  # valid reports (what a dry run would send)
    reports_sent: int = 0
    messages_sent: int = 0
    items_sent: int = 0
    rejected: list[Rejected] = field(default_factory=list)
    error: str | None = None
    already_published_as: str | None = None  # the same content was published before: nothing sent

    @property
    def ok(self) -> bool:
        return self.error is None and (self.reports_sent > 0 or self.already_published_as is not None)


@dataclass(slots=True)
class Prepared:
    messages: list[tuple[bytes, bytes, bytes]]  # key, value, report-key header
    summary: PublishSummary


def prepare(path: Path, mapping: LimsMapping | None, policy: ValidationPolicy | None = None) -> Prepared:
    """Read, map and validate a file; nothing is sent. Items the worker would reject are left out."""
    policy = policy or ValidationPolicy()
    summary = PublishSummary(str(path))
    messages: list[tuple[bytes, bytes, bytes]] = []
    rows = list(read_rows(path))
    summary.rows = len(rows)
    now = datetime.now(UTC)
    for built in build_reports(iter(rows), mapping):
        if built.report is None:
            summary.rejected.extend(Rejected(line, built.error or "unreadable") for line in built.lines)
            continue
        outcome = validate_report(orjson.dumps(built.report), now=now, policy=policy)
        if outcome.rejected_whole:
            reason = outcome.rejections[0].reason
            summary.rejected.extend(Rejected(line, reason) for line in sorted(set(built.lines)))
            continue
        bad = {r.item_index for r in outcome.rejections}
        for rejection in outcome.rejections:
            line = built.lines[rejection.item_index] if rejection.item_index < len(built.lines) else built.lines[0]
            summary.rejected.append(Rejected(line, rejection.reason))
        report = dict(built.report)
        report["items"] = [item for i, item in enumerate(report["items"]) if i not in bad]
        if not report["items"]:
            continue
        key = f"{report['lab']['id']}/{report['sample_id']}".encode()
        messages.append((report["category"].encode(), orjson.dumps(report), key))
        summary.items_sent += len(report["items"])
    summary.rejected.sort(key=lambda r: r.line)
    summary.reports_ready = len(messages)
    return Prepared(messages, summary)


@dataclass(frozen=True, slots=True)
class Batching:
    """How many reports share a Kafka message (1: one each), and the byte limit a message must keep under."""

    size: int = 1
    max_bytes: int = 1_048_576


def publish_file(
    path: Path,
    mapping: LimsMapping | None,
    producer: KafkaProducer,
    topic: str,
    progress: Callable[[int, int], None] | None = None,
    batching: Batching = Batching(),
) -> PublishSummary:
    """Send a file's valid reports: one per message, or several per message (a
    ``riskwatch.lab_report_batch.v1``, one category per batch) so the transport's per-message
    cost is paid once per batch."""
    prepared = prepare(path, mapping)
    messages = batch_messages(prepared.messages, batching) if batching.size > 1 else prepared.messages
    futures = []
    for n, (key, value, report_key) in enumerate(messages, start=1):
        futures.append(producer.send(topic, key=key, value=value, headers=[("report-key", report_key)]))
        if progress is not None:
            progress(n, len(messages))
    producer.flush()
    for future in futures:
        future.get(timeout=30)  # raises if the broker refused a message
    prepared.summary.reports_sent = len(prepared.messages)
    prepared.summary.messages_sent = len(messages)
    return prepared.summary


def batch_messages(messages: list[tuple[bytes, bytes, bytes]], batching: Batching) -> list[tuple[bytes, bytes, bytes]]:
    """Group single-report messages into batch messages per category key, in order, each at most
    ``batching.size`` reports and ``batching.max_bytes`` long (a report too big to share travels alone)."""
    by_key: dict[bytes, list[tuple[bytes, bytes]]] = {}
    for key, value, report_key in messages:
        by_key.setdefault(key, []).append((value, report_key))
    head = b'{"schema":"' + BATCH_SCHEMA_NAME.encode() + b'","reports":['
    budget = batching.max_bytes - len(head) - 2  # the envelope around the reports
    batches: list[tuple[bytes, bytes, bytes]] = []

    def close(key: bytes, reports: list[tuple[bytes, bytes]]) -> None:
        first_report_key = reports[0][1] + (b"+%d" % (len(reports) - 1) if len(reports) > 1 else b"")
        batches.append((key, head + b",".join(value for value, _ in reports) + b"]}", first_report_key))

    for key, reports in by_key.items():
        current: list[tuple[bytes, bytes]] = []
        length = 0
        for value, report_key in reports:
            if current and (len(current) == batching.size or length + len(value) + 1 > budget):
                close(key, current)
                current, length = [], 0
            current.append((value, report_key))
            length += len(value) + 1
        if current:
            close(key, current)
    return batches


def make_producer(bootstrap: str, max_message_bytes: int, security: dict | None = None) -> KafkaProducer:
    """A kafka-python producer; ``security`` is Settings.kafka_client_options() (TLS / SASL)."""
    return KafkaProducer(
        bootstrap_servers=bootstrap.split(","), acks="all", linger_ms=20, max_request_size=max(max_message_bytes, 1_048_576),
        retries=5, **(security or {}),
    )  # fmt: skip


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def watch_once(
    folder: Path, mapping: LimsMapping | None, producer: KafkaProducer, topic: str, batching: Batching = Batching()
) -> list[PublishSummary]:
    """Publish every new file in the folder once, then move it to done/ or failed/ with a report."""
    state_file = folder / ".published.json"
    state: dict[str, str] = json.loads(state_file.read_text()) if state_file.exists() else {}
    summaries = []
    for path in sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in SUFFIXES and not p.name.startswith(".")):
        digest = file_digest(path)
        if digest in state:
            summary = PublishSummary(str(path), already_published_as=state[digest])
        else:
            try:
                summary = publish_file(path, mapping, producer, topic, batching=batching)
            except Exception as error:  # noqa: BLE001 - a bad file must not stop the watcher
                summary = PublishSummary(str(path), error=f"{type(error).__name__}: {error}")
            if summary.ok:
                state[digest] = path.name
                state_file.write_text(json.dumps(state, ensure_ascii=False, indent=1))
        target = folder / ("done" if summary.ok else "failed")
        target.mkdir(exist_ok=True)
        destination = target / path.name
        shutil.move(str(path), destination)
        (target / f"{path.name}.report.json").write_text(
            json.dumps({**asdict(summary), "published_at": datetime.now(UTC).isoformat()}, ensure_ascii=False, indent=1),
            encoding="utf-8",
        )
        summaries.append(summary)
    return summaries


def watch(
    folder: Path,
    mapping: LimsMapping | None,
    producer: KafkaProducer,
    topic: str,
    interval: float,
    on_file,
    stop,
    batching: Batching = Batching(),
) -> None:
    while not stop():
        for summary in watch_once(folder, mapping, producer, topic, batching):
            on_file(summary)
        time.sleep(interval)
