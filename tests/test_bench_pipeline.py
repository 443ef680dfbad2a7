"""The pipeline bench's in-process row measures the worker's validation on the bench's own reports."""

import orjson
import pytest

from streams.bench_pipeline import make_reports, validation_alone


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
