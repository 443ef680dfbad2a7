"""Property-based: whatever bytes arrive, ingest neither crashes nor loses track of them.

Every message yields valid results or dead letters with a reason (or both, for a report
with some bad items), the dead letter keeps the exact original bytes, and a valid report
mutated anywhere is either still valid or rejected with a reason.
"""

from __future__ import annotations

import base64
import copy
from datetime import timedelta

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.validation import ValidationPolicy, validate_report
from streams.pipeline import Ingestor, SourceMessage
from tests.conftest import EXAMPLE_NOW, example_report

POLICY = ValidationPolicy(max_age=timedelta(days=3650), max_future_skew=timedelta(days=365 * 5))
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)


def ingest(payload: bytes):
    return Ingestor(POLICY, 100_000).ingest([SourceMessage("reports", 0, 7, b"k", payload)])


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=3000))
def test_arbitrary_bytes_become_a_dead_letter_with_the_original(payload):
    output = ingest(payload)
    assert output.valid_results == 0
    (key, letter), = output.dead_letters
    envelope = orjson.loads(letter)
    assert envelope["reason"] and envelope["source"] == {"topic": "reports", "partition": 0, "offset": 7, "key": "k"}
    assert base64.b64decode(envelope.get("original_b64", "")) == payload


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 2), st.booleans(), st.data())
def test_a_valid_report_mutated_anywhere_is_kept_or_rejected_with_reasons(item_changes, header_change, data):
    report = copy.deepcopy(example_report())
    for _ in range(item_changes):  # items first, while they are still the example's items
        item = report["items"][data.draw(st.integers(0, len(report["items"]) - 1))]
        item[data.draw(st.sampled_from(sorted(item)))] = data.draw(json_values)
    if header_change:
        report[data.draw(st.sampled_from(sorted(report)))] = data.draw(json_values)
    payload = orjson.dumps(report)
    outcome = validate_report(payload, now=EXAMPLE_NOW, policy=POLICY)
    output = ingest(payload)
    assert len(outcome.results) == output.valid_results
    assert len(output.dead_letters) == len(outcome.rejections)
    items = report["items"] if isinstance(report.get("items"), list) else []
    if outcome.rejected_whole:
        assert outcome.results == [] and len(outcome.rejections) == 1
    else:
        assert len(outcome.results) + len(outcome.rejections) == len(items)  # each item: kept or rejected, never lost
    assert all(r.reason for r in outcome.rejections)
    for result in outcome.results:
        assert result.value is None or result.value >= 0
