"""Prometheus metrics of a worker, served at /metrics by the worker's web server."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest

MESSAGES_RECEIVED = Counter("riskwatch_messages_received", "Messages read from the reports topic (one report, or a batch of them)")
REPORTS_RECEIVED = Counter(
    "riskwatch_reports_received", "Lab reports read from the reports topic (a message that is no report counts as one)"
)
REPORTS_REJECTED = Counter("riskwatch_reports_rejected", "Lab reports rejected whole, by reason code", ["reason"])
ITEMS_REJECTED = Counter("riskwatch_items_rejected", "Test items rejected alone, by reason code", ["reason"])
REPORTS_HANDLED = Counter(
    "riskwatch_reports_handled", "Reports done with: results stored or sent on, rejections dead-lettered, messages acknowledged"
)
RESULTS_VALID = Counter("riskwatch_results_valid", "Valid normalised results (sent to the results topic or processed in place)")
RESULTS_LOCAL = Counter("riskwatch_results_local", "Valid results processed by the worker that ingested them, not sent round the results topic")
RESULT_BATCHES_SENT = Counter("riskwatch_result_batches_sent", "Result envelopes sent to the results topic")
RESULT_BATCHES_PROCESSED = Counter("riskwatch_result_batches_processed", "Result envelopes stored and run through the detectors")
RESULTS_DUPLICATE = Counter("riskwatch_results_duplicate", "Results dropped as already seen (republished or replayed)")
RESULTS_STORED = Counter("riskwatch_results_stored", "Results written to ClickHouse")
ALERTS_RAISED = Counter("riskwatch_alerts", "Alerts raised, by detector and severity", ["detector", "severity"])
DEAD_LETTERS = Counter("riskwatch_dead_letters", "Messages sent to the dead-letter topic, by stage", ["stage"])
STATE_REBUILT = Counter("riskwatch_state_rebuilt_results", "Stored results replayed into detector state after start or rebalance")
ASSIGNED_PARTITIONS = Gauge("riskwatch_assigned_partitions", "Topic partitions currently assigned to this worker")
SINK_ERRORS = Counter("riskwatch_sink_errors", "Failed ClickHouse writes (each is retried)")
SINK_OUTAGE_SECONDS = Gauge("riskwatch_sink_outage_seconds", "How long ClickHouse has been failing without a success (0: healthy)")
SINK_BATCH_ROWS = Histogram("riskwatch_sink_batch_rows", "Rows per ClickHouse insert batch", buckets=(1, 10, 100, 1_000, 10_000, 100_000))
SINK_BATCH_SECONDS = Histogram("riskwatch_sink_batch_seconds", "Time to write one batch to ClickHouse")
HEAP_TRIMS = Counter("riskwatch_heap_trims", "Returns of freed heap memory to the system (glibc malloc_trim) after a batch")
HEAP_TRIM_SECONDS = Histogram(
    "riskwatch_heap_trim_seconds", "Time to return freed heap memory after a batch (near 0 when not due)", buckets=(1e-4, 1e-3, 1e-2, 0.1, 1)
)
PROCESSING_LATENCY = Histogram(
    "riskwatch_processing_latency_seconds",
    "From a lab report's publication (Kafka timestamp) to its results stored in ClickHouse",
    buckets=(0.05, 0.1, 0.25, 0.5, 0.75, 1, 1.5, 2.5, 5, 10, 30, 60, 300),
)
CONSUMER_LAG = Gauge("riskwatch_consumer_lag", "Messages not yet processed, per topic and partition", ["topic", "partition"])
PAGES_SENT = Counter("riskwatch_pages_sent", "Alerts posted to Alertmanager, by severity", ["severity"])
PAGING_ERRORS = Counter("riskwatch_paging_errors", "Failed posts to Alertmanager")


def exposition() -> tuple[bytes, str]:
    return generate_latest(), CONTENT_TYPE_LATEST


# Labelled series exist from the start (at 0), so that rate() and increase() see their first rise.
for _stage in ("ingest", "process"):
    DEAD_LETTERS.labels(_stage)
