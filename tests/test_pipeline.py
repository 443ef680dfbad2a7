"""Ingest and process logic on real ClickHouse SQL, without a broker."""

import base64

import orjson
from prometheus_client import REGISTRY

from detectors import LimitExceedance
from detectors.suite import DetectorSuite
from schemas.validation import ValidationPolicy
from streams.heap import HeapTrimmer
from streams.pipeline import Ingestor, Processor, SourceMessage, decode_results, partition_for


def message(value, offset=0, key=b"food/grain_products/rice", timestamp=None):
    return SourceMessage("reports", 3, offset, key, value, timestamp)


def ingest(*messages, max_bytes=100_000, is_local=None):
    from datetime import timedelta

    policy = ValidationPolicy(max_age=timedelta(days=36500), max_future_skew=timedelta(days=3650))
    return Ingestor(policy, max_bytes).ingest(messages, is_local)


def test_results_of_owned_categories_stay_local_and_the_rest_travel(report):
    other = {**report, "sample_id": "S-2", "category": "food/grain_products/wheat_flour"}
    output = ingest(
        message(orjson.dumps(report), timestamp=100.0), message(orjson.dumps(other), offset=1), is_local=lambda c: c.endswith("/rice")
    )
    assert {r.category for r in output.local} == {"food/grain_products/rice"} and len(output.local) == 4
    assert output.local_published == [100.0]
    assert [key for key, _ in output.results] == [b"food/grain_products/wheat_flour"]


def test_partition_for_agrees_with_kafkas_default_partitioner():
    from aiokafka.partitioner import DefaultPartitioner

    for key in (b"food/grain_products/rice", b"food/dairy/milk", b"x", "食品/大米".encode()):
        for partitions in (1, 4, 8, 12):
            assert partition_for(key, partitions) == DefaultPartitioner()(key, list(range(partitions)), list(range(partitions)))


def test_valid_items_travel_in_one_envelope_per_category(report):
    other = {**report, "sample_id": "S-2", "category": "food/grain_products/wheat_flour"}
    output = ingest(message(orjson.dumps(report)), message(orjson.dumps(other), offset=1))
    assert output.valid_results == 8 and output.dead_letters == []
    keys = [key for key, _ in output.results]
    assert keys == [b"food/grain_products/rice", b"food/grain_products/wheat_flour"]
    results, _ = decode_results(output.results[0][1])
    assert [r.test_item for r in results] == ["lead", "cadmium", "aflatoxin_b1", "inorganic_arsenic"]
    assert (results[0].source_partition, results[0].source_offset) == (3, 0)


def test_every_refusal_is_a_dead_letter_with_reason_source_and_original_bytes(report):
    report["items"][0]["unit"] = "furlongs"
    garbage = b"\xff{not json"
    output = ingest(
        message(orjson.dumps(report), offset=7),
        message(garbage, offset=8),
        message(None, offset=9),
        message(b"x" * 200, offset=10),
        max_bytes=150,
    )
    letters = [orjson.loads(value) for _, value in output.dead_letters]
    # The report itself exceeds the 150-byte limit in this test, so it is refused whole.
    assert [(d["code"], d["source"]["offset"]) for d in letters] == [("too_large", 7), ("not_json", 8), ("empty", 9), ("too_large", 10)]
    assert base64.b64decode(letters[1]["original_b64"]) == garbage
    assert letters[1]["source"] == {"topic": "reports", "partition": 3, "offset": 8, "key": "food/grain_products/rice"}
    assert "exceeds the limit of 150 bytes" in letters[0]["reason"]


def test_a_bad_item_is_a_dead_letter_and_the_rest_of_the_report_goes_on(report):
    report["items"][0]["unit"] = "furlongs"
    output = ingest(message(orjson.dumps(report), offset=7))
    (letter,) = [orjson.loads(value) for _, value in output.dead_letters]
    assert letter["code"] == "item_unit" and letter["item_index"] == 0 and letter["item"]["unit"] == "furlongs"
    assert "unknown unit 'furlongs'" in letter["reason"]
    assert orjson.loads(base64.b64decode(letter["original_b64"])) == report
    assert output.valid_results == 3


def test_process_stores_each_result_once_and_alerts_once(store, report):
    processor = Processor(store, DetectorSuite([LimitExceedance()]))
    results, _ = decode_results(ingest(message(orjson.dumps(report))).results[0][1])
    first = processor.detect(processor.select_fresh(results + results[:1]))  # a duplicate inside one batch
    assert (len(first.stored), first.duplicates, len(first.alerts)) == (4, 1, 1)
    processor.write(first)
    again = processor.detect(processor.select_fresh(results))  # republished later, or replayed after a restart
    assert (len(again.stored), again.duplicates, again.alerts) == (0, 4, [])
    assert store.client.query("SELECT count() FROM results").result_rows[0][0] == 4
    assert store.client.query("SELECT count() FROM alerts").result_rows[0][0] == 1


def test_a_write_returns_freed_heap_memory_when_due(store, report):
    processor = Processor(store, DetectorSuite([LimitExceedance()]), heap=HeapTrimmer(3600.0))
    results, _ = decode_results(ingest(message(orjson.dumps(report))).results[0][1])
    trims = REGISTRY.get_sample_value("riskwatch_heap_trims_total")
    timed = REGISTRY.get_sample_value("riskwatch_heap_trim_seconds_count")
    for batch in (results[:2], results[2:]):
        processor.write(processor.detect(processor.select_fresh(batch)))
    assert REGISTRY.get_sample_value("riskwatch_heap_trims_total") - trims == 1, "the first write trims; the second is within the hour"
    assert REGISTRY.get_sample_value("riskwatch_heap_trim_seconds_count") - timed == 2
    assert store.client.query("SELECT count() FROM results").result_rows[0][0] == 4


def test_each_envelope_carries_the_oldest_publication_time_of_its_reports(report):
    wheat = {**report, "sample_id": "W-1", "category": "food/grain_products/wheat_flour"}
    messages = [SourceMessage("reports", 0, 1, b"k", orjson.dumps(report), 200.0), SourceMessage("reports", 0, 2, b"k", orjson.dumps(wheat), 150.0),
                SourceMessage("reports", 0, 3, b"k", orjson.dumps({**report, "sample_id": "R-2"}), 100.0)]  # fmt: skip
    output = ingest(*messages)
    assert [decode_results(value)[1] for _, value in output.results] == [100.0, 150.0]


def test_a_batch_message_carries_many_reports_and_a_bad_one_is_dead_lettered_alone(report):
    other = {**report, "sample_id": "S-2", "category": "food/grain_products/wheat_flour"}
    broken = {**report, "sample_id": "S-3", "city": "atlantis"}
    bad_item = {**report, "sample_id": "S-4", "items": [{**report["items"][0], "unit": "furlongs"}, *report["items"][1:]]}
    batch = {"schema": "riskwatch.lab_report_batch.v1", "reports": [report, broken, other, bad_item]}
    before = {name: REGISTRY.get_sample_value(f"riskwatch_{name}_received_total") for name in ("messages", "reports")}
    output = ingest(message(orjson.dumps(batch), offset=5), message(b"", offset=6))
    after = {name: REGISTRY.get_sample_value(f"riskwatch_{name}_received_total") for name in ("messages", "reports")}
    assert (after["messages"] - before["messages"], after["reports"] - before["reports"]) == (2, 5), "4 reports + 1 empty message"
    assert output.valid_results == 4 + 4 + 3
    assert sorted(key for key, _ in output.results) == [b"food/grain_products/rice", b"food/grain_products/wheat_flour"]
    letters = [orjson.loads(value) for _, value in output.dead_letters]
    assert [(d["code"], d.get("batch_index"), d.get("item_index")) for d in letters] == [
        ("schema", 1, None),
        ("item_unit", 3, 0),
        ("empty", None, None),
    ]
    assert letters[0]["reason"].startswith("reports[1]: ") and "city" in letters[0]["reason"]
    assert orjson.loads(base64.b64decode(letters[0]["original_b64"])) == broken, "the dead letter holds the bad report alone"
    assert [d["source"]["offset"] for d in letters] == [5, 5, 6]


def test_a_malformed_batch_is_refused_whole(report):
    empty = ingest(message(orjson.dumps({"schema": "riskwatch.lab_report_batch.v1", "reports": []})))
    extra = ingest(message(orjson.dumps({"schema": "riskwatch.lab_report_batch.v1", "reports": [report], "lab": "x"})))
    for output in (empty, extra):
        (letter,) = [orjson.loads(value) for _, value in output.dead_letters]
        assert letter["code"] == "batch_schema" and "batch_index" not in letter
        assert output.valid_results == 0


def test_every_simulated_result_survives_the_results_envelope_exactly():
    """The envelope check refuses foreign rows; it must accept every row ingest writes
    (numbers, non-detects, qualitative items, min limits) and give it back unchanged."""
    from streams.simulation import Simulator

    simulator = Simulator(seed=11)
    messages = [message(orjson.dumps(simulator.next_report()), offset=n) for n in range(300)]
    originals = sorted(ingest(*messages, is_local=lambda _: True).local, key=lambda r: r.result_id)
    decoded = sorted((r for _, value in ingest(*messages).results for r in decode_results(value)[0]), key=lambda r: r.result_id)
    assert len(originals) > 900 and decoded == originals
    assert {r.qualitative for r in decoded} >= {None, "not_detected"} and {r.limit_type for r in decoded} == {"max", "min"}
    assert any(r.value is None for r in decoded) and any(r.limit is None for r in decoded)
