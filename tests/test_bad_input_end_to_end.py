"""Hand-made bad input interleaved with good reports through a real broker and worker: every bad
message is a dead letter with its reason, every good result is stored, the worker stays up."""

from __future__ import annotations

import asyncio
import copy
from datetime import UTC, datetime, timedelta

import orjson
import pytest

from schemas.results import LabResult
from streams.clickhouse import connect
from streams.pipeline import RESULTS_SCHEMA
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


def foreign_envelopes() -> list[tuple[bytes, str]]:
    """Messages a foreign producer might put on the results topic, with words their reasons must hold.
    Each would otherwise reach the detectors or fail the ClickHouse insert, retried forever."""
    report = good(200)
    wire = {"result_id": "6b0f5c3e-5d6e-5b7a-9c1d-2e3f4a5b6c7d", "report_id": report["report_id"], "sample_id": report["sample_id"],
            "lab_id": "JNQI", "lab_name": "lab", "city": "jinan", "programme": "city_supervision", "category": report["category"],
            "product_name": "大米", "manufacturer_name": "", "manufacturer_uscc": "", "sampling_site": "", "site_kind": "distribution",
            "sampled_at": 1_700_000_000_000, "tested_at": 1_700_000_100_000, "published_at": 1_700_000_200_000, "test_item": "lead",
            "value": 0.05, "unit": "mg/kg", "qualitative": None, "lod": 0.01, "limit": 0.2, "limit_type": "max", "limit_ratio": 0.25,
            "standard": "GB 2762-2022", "verdict": "pass", "reported_value": 0.05, "reported_unit": "mg/kg"}  # fmt: skip
    LabResult.from_wire(wire)  # the unchanged row is valid: each case below breaks one thing

    def envelope(**change) -> bytes:
        return orjson.dumps({"schema": RESULTS_SCHEMA, "published": None, "results": [wire | change]})

    return [
        (b"not json", "not a results envelope"),
        (orjson.dumps({"schema": "someone.else.v1", "results": []}), "someone.else.v1"),
        (envelope(result_id="R-1"), "result_id"),
        (envelope(verdict="maybe"), "verdict"),
        (envelope(sampled_at=10**15), "sampled_at"),
        (envelope(value="0.05"), "value"),
        (envelope(source_partition=2**40), "source_partition"),
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
    foreign = foreign_envelopes()
    on_results_topic = (named.results_topic, [(b"food/grain_products/rice", payload) for payload, _ in foreign])
    metrics = asyncio.run(
        run_worker(env, tmp_path / "worker.log", named.reports_topic, broker.bootstrap, messages, before=on_results_topic)
    )
    letters = [orjson.loads(r.value) for r in asyncio.run(read_topic(broker.bootstrap, named.dead_letter_topic, len(BAD) + len(foreign)))]
    from_reports = [letter for letter in letters if letter["source"]["topic"] == named.reports_topic]
    assert sorted(letter["code"] for letter in from_reports) == sorted(code for _, code in BAD)
    assert all(letter["reason"] for letter in letters)
    from_results = sorted(
        (letter for letter in letters if letter["source"]["topic"] == named.results_topic), key=lambda d: d["source"]["offset"]
    )
    assert [letter["code"] for letter in from_results] == ["bad_envelope"] * len(foreign)
    for letter, (_, words) in zip(from_results, foreign, strict=True):
        assert words in letter["reason"], letter["reason"]
    assert metrics["riskwatch_dead_letters_total"] == len(BAD) + len(foreign)
    item_level = sum(1 for _, code in BAD if code.startswith("item_"))  # these lose one item; their other three are good
    expected = 4 * len(BAD) + 3 * item_level
    assert metrics["riskwatch_results_stored_total"] == expected
    assert metrics.get("riskwatch_results_local_total", 0) == 0 and metrics["riskwatch_result_batches_processed_total"] > 0
    client = connect(Settings(data_dir=tmp_path / "data"))
    try:
        assert client.query("SELECT count() FROM results FINAL").result_rows[0][0] == expected
    finally:
        client.close()
