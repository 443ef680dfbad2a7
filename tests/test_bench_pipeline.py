"""The pipeline bench's in-process row measures the worker's validation on the bench's own reports."""

import orjson
import pytest

from streams.bench_pipeline import in_batches, make_reports, validation_alone


def test_validation_alone_turns_every_bench_report_into_its_results():
    messages, items = make_reports(300)
    figures = validation_alone(messages, items)
    assert (figures.messages, figures.results) == (300, items)
    assert items > 300 and figures.seconds > 0 and figures.messages_per_second > 0


def test_validation_alone_refuses_to_report_a_rate_for_input_it_rejected():
    messages, items = make_reports(20)
    key, value = messages[3]
    report = orjson.loads(value)
    report["city"] = "atlantis"  # not an alliance city: the report is dead-lettered
    messages[3] = (key, orjson.dumps(report))
    with pytest.raises(RuntimeError, match="dead letters"):
        validation_alone(messages, items)


def test_the_latency_run_on_batches_offers_every_report_once_and_counts_each_message():
    messages, _ = make_reports(500)
    batched, reports = in_batches(messages, 10)
    assert len(batched) == len(reports) < 500 and sum(reports) == 500 and max(reports) == 10
    carried = [report for _, value in batched for report in orjson.loads(value)["reports"]]
    assert sorted(orjson.dumps(r) for r in carried) == sorted(orjson.dumps(orjson.loads(v)) for _, v in messages)
    assert all(orjson.loads(value)["reports"][0]["category"].encode() == key for key, value in batched)  # keyed by category, as published
