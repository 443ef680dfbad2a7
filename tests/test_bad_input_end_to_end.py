"""Hand-made bad input interleaved with good reports through a real broker and worker: every bad
message is a dead letter with its reason, every good result is stored, the worker stays up."""

from __future__ import annotations

import asyncio
import copy
from datetime import UTC, datetime, timedelta

import orjson
import pytest

from streams.clickhouse import connect
from streams.settings import Settings
from tests.conftest import example_report
from tests.test_end_to_end import read_topic, run_worker, topics, worker_env

pytestmark = pytest.mark.timeout(300)
NOW = datetime.now(UTC)


def good(n: int) -> dict:
    report = copy.deepcopy(example_report())
    report.update(sample_id=f"GOOD-{n}", report_id=f"R-{n}", sampled_at=(NOW - timedelta(days=3)).isoformat(),
                  tested_at=(NOW - timedelta(days=2)).isoformat(), published_at=(NOW - timedelta(days=1)).isoformat())  # fmt: skip
    return report


def item_bad(n: int, **change) -> bytes:
    report = good(n)
    report["items"][0].update(change)
    return orjson.dumps(report)


def header_bad(n: int, **change) -> bytes:
    return orjson.dumps({**good(n), **change})


BAD: list[tuple[bytes, str]] = [
    (b'{"schema": "riskwatch.lab_report.v1", "sample_id": ', "not_json"),
    (b"\xc3\x28 invalid utf-8", "not_json"),
    (b'{"value": NaN}', "not_json"),
    (b'{"value": Infinity}', "not_json"),
    (b"[1, 2, 3]", "not_object"),
    (b"", "empty"),
    (b"{" + b'"x_pad": "' + b"a" * 1_100_000 + b'"}', "too_large"),
    (orjson.dumps({k: v for k, v in good(90).items() if k != "lab"}), "schema"),
    (header_bad(91, city=42), "schema"),
    (header_bad(92, sampled_at="1970-01-01T00:00:00Z", tested_at="1970-01-02T00:00:00Z"), "timestamp"),
    (header_bad(93, published_at="2999-01-01T00:00:00Z"), "timestamp"),
    (item_bad(94, value="0.086"), "item_schema"),
    (item_bad(95, unit="parsecs"), "item_unit"),
    (item_bad(96, value=-0.5), "item_value"),
    (item_bad(97, value=5e7, unit="mg/kg"), "item_value"),
    (item_bad(98, value=1e308, unit="%"), "item_value"),
]


def test_bad_input_is_dead_lettered_with_reasons_and_good_input_is_stored(broker, tmp_path):
    named = topics("badinput")
    # Every result round the results topic, as on a worker that does not own its categories'
    # results partitions (the end-to-end test covers processing in place).
    env = worker_env(broker, tmp_path / "data", "badinput") | {"RISKWATCH_PROCESS_IN_PLACE": "false"}
    messages = []
    for n, (payload, _) in enumerate(BAD):  # interleaved: good, bad, good, bad, ...
        messages.append((b"food/grain_products/rice", orjson.dumps(good(n))))
        messages.append((b"food/grain_products/rice", payload))
    metrics = asyncio.run(run_worker(env, tmp_path / "worker.log", named.reports_topic, broker.bootstrap, messages))
    letters = asyncio.run(read_topic(broker.bootstrap, named.dead_letter_topic, len(BAD)))
    codes = sorted(orjson.loads(r.value)["code"] for r in letters)
    assert codes == sorted(code for _, code in BAD)
    assert all(orjson.loads(r.value)["reason"] for r in letters)
    item_level = sum(1 for _, code in BAD if code.startswith("item_"))  # these lose one item; their other three are good
    expected = 4 * len(BAD) + 3 * item_level
    assert metrics["riskwatch_results_stored_total"] == expected
    assert metrics.get("riskwatch_results_local_total", 0) == 0 and metrics["riskwatch_result_batches_processed_total"] > 0
    client = connect(Settings(data_dir=tmp_path / "data"))
    try:
        assert client.query("SELECT count() FROM results FINAL").result_rows[0][0] == expected
    finally:
        client.close()
