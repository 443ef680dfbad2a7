"""The pipeline bench's in-process rows measure the worker's stages on the bench's own reports."""

import orjson
import pytest

from streams.bench_pipeline import detectors_alone, in_batches, make_reports, sink_alone, validation_alone


def test_validation_alone_turns_every_bench_report_into_its_results():
    messages, items = make_reports(300)
    figures, results = validation_alone(messages, items)
    assert (figures.messages, figures.results) == (300, items) == (300, len(results))
    assert items > 300 and figures.seconds > 0 and figures.messages_per_second > 0
    assert [r.source_offset for r in results] == sorted(r.source_offset for r in results)  # in publication order


def test_the_detectors_and_the_sink_alone_take_every_result(tmp_path):
    messages, items = make_reports(300)
    _, results = validation_alone(messages, items)
    detectors = detectors_alone(results, len(messages))
    assert (detectors.messages, detectors.results) == (300, items) and detectors.seconds > 0
    sink = sink_alone(results, len(messages), tmp_path)  # asks the store afterwards that it holds every result
    assert (sink.messages, sink.results) == (300, items) and sink.seconds > 0
    with pytest.raises(RuntimeError, match="already holds"):  # a store that is not fresh gives no figure
        sink_alone(results, len(messages), tmp_path)


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


def test_each_bench_worker_writes_to_a_database_of_its_own_which_a_server_run_drops(tmp_path):
    """Pointed at one ClickHouse server, (c)'s and (e)'s workers would share a database, and (e)'s would
    skip every result as already stored by (c)'s; each gets its own, dropped after its run."""
    from streams.bench_pipeline import bench_worker_env
    from streams.clickhouse import connect, drop_database
    from streams.settings import Settings

    envs = [bench_worker_env("127.0.0.1:9092", "reports", tmp_path, name) for name in ("worker", "batch-worker")]
    names = {env["RISKWATCH_CLICKHOUSE_DATABASE"] for env in envs}
    assert len(names) == 2 and all(name.startswith("riskwatch_bench_") for name in names)
    settings = Settings(clickhouse_url=f"chdb://{tmp_path / 'store'}")
    database = envs[0]["RISKWATCH_CLICKHOUSE_DATABASE"]

    def databases() -> set[str]:
        client = connect(settings, database="default")
        try:
            return {row[0] for row in client.query("SHOW DATABASES").result_rows}
        finally:
            client.close()

    connect(settings, database=database).close()  # a worker's connection makes its database
    assert database in databases()
    drop_database(settings, database)
    assert database not in databases()
