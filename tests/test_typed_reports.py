"""Validation's fast path (msgspec types) against its schema path (orjson + the JSON Schema).

The fast path may decline anything, since the schema path then judges it; what it must never do
is give a different outcome. Every case here is validated both ways and compared.
"""

from __future__ import annotations

import copy

import orjson
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from schemas import typed_reports
from schemas.validation import BATCH_SCHEMA_NAME, validate_message, validate_report
from tests.conftest import EXAMPLE_NOW, example_report
from tests.test_bad_input_properties import POLICY, json_values


def outcomes(payload: bytes) -> list[tuple]:
    return [
        (o.results, [(r.code, r.reason, r.item_index, r.item) for r in o.rejections], o.batch_index, o.rejected_whole)
        for o in validate_message(payload, now=EXAMPLE_NOW, policy=POLICY)
    ]


def schema_path(payload: bytes) -> list[tuple]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(typed_reports, "decode", lambda _payload: None)
        return outcomes(payload)


def assert_same(payload: bytes) -> bool:
    """Both paths agree on the payload; True when the fast path took it."""
    fast = outcomes(payload)
    assert fast == schema_path(payload)
    taken = typed_reports.decode(payload) is not None and not any(rejections for _, rejections, _, _ in fast)
    return taken


def batch(*reports: dict) -> bytes:
    return orjson.dumps({"schema": BATCH_SCHEMA_NAME, "reports": list(reports)})


def test_the_fast_path_takes_valid_reports_and_batches_and_gives_the_same_results():
    report = example_report()
    assert assert_same(orjson.dumps(report))
    assert isinstance(typed_reports.decode(orjson.dumps(report)), typed_reports.Report)
    others = [{**copy.deepcopy(report), "sample_id": f"S-{n}"} for n in range(3)]
    assert assert_same(batch(*others))
    assert len(outcomes(batch(*others))) == 3
    single = validate_report(orjson.dumps(report), now=EXAMPLE_NOW, policy=POLICY, source_partition=3, source_offset=9)
    assert [(r.source_partition, r.source_offset) for r in single.results] == [(3, 9)] * 4


def _set(path: tuple, value):
    def mutate(report: dict) -> None:
        target = report
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return mutate


def _drop(path: tuple):
    def mutate(report: dict) -> None:
        target = report
        for key in path[:-1]:
            target = target[key]
        target.pop(path[-1], None)

    return mutate


# Each at or just past one of the contract's edges; True where the report stays valid.
EDGES = [
    (_set(("report_id",), "r" * 64), True),
    (_set(("report_id",), "r" * 65), False),
    (_set(("sample_id",), ""), False),
    (_set(("lab", "id"), "ZBQI\n"), False),
    (_set(("lab", "id"), "Z"), False),
    (_set(("lab", "name"), "检" * 200), True),
    (_set(("lab", "name"), "检" * 201), False),
    (_set(("category",), "food/grain_products/rice\n"), False),
    (_set(("category",), "a/b/c/d/e/f"), True),
    (_set(("category",), "a/b/c/d/e/f/g"), False),
    (_set(("category_name",), None), True),
    (_set(("manufacturer",), None), True),
    (_drop(("manufacturer", "uscc")), True),
    (_set(("manufacturer", "uscc"), None), True),
    (_set(("manufacturer", "uscc"), "91370300MA3C5XYZ0I"), False),  # I is not in the code's alphabet
    (_set(("sampling_site",), None), True),
    (_set(("sampling_site", "kind"), None), True),
    (_set(("sampling_site", "kind"), "market"), False),
    (_set(("synthetic",), None), True),
    (_set(("synthetic",), 1), False),
    (_set(("x_lims_batch",), "B-17"), True),  # an extension: the schema path judges it
    (_set(("colour",), "red"), False),
    (_set(("items", 0, "value"), 86), True),
    (_set(("items", 0, "lod"), 2**64 - 1), True),  # no bound on a limit of detection
    (_set(("items", 0, "value"), True), False),
    (_set(("items", 0, "value"), -0.0), True),
    (_set(("items", 0, "value"), -1), False),
    (_set(("items", 0, "lod"), 0), True),
    (_set(("items", 0, "lod"), -0.001), False),
    (_set(("items", 0, "limit"), 0), False),
    (_set(("items", 0, "unit"), "u" * 33), False),
    (_set(("items", 0, "unit"), "ug/kg"), True),
    (_set(("items", 0, "unit"), "bananas"), False),
    (_set(("items", 0, "limit_type"), None), True),
    (_set(("items", 0, "limit_type"), "min"), True),
    (_set(("items", 0, "standard"), "s" * 101), False),
    (_set(("items", 0, "test_item"), "lead\n"), False),
    (_set(("items", 0, "x_instrument"), "ICP-MS 7"), True),
    (_set(("items", 1, "test_item"), "lead"), False),  # the same item twice
    (_drop(("items", 0, "verdict")), False),
    (_set(("items", 0, "verdict"), "not_judged"), False),
    (_set(("items", 2, "qualitative"), None), False),  # neither value nor outcome
    (_set(("sampled_at",), "2026-11-18 09:30"), False),
    (_set(("sampled_at",), "2026-11-18T09:30:00Z"), True),
]


@pytest.mark.parametrize("mutate, valid", EDGES)
def test_at_the_contracts_edges_both_paths_agree(mutate, valid):
    report = copy.deepcopy(example_report())
    mutate(report)
    payload = orjson.dumps(report)
    taken = assert_same(payload)
    assert not any(rejections for _, rejections, _, _ in outcomes(payload)) is valid
    assert taken is (valid and b'"x_' not in payload)  # the fast path takes every valid report but extensions
    assert_same(batch(example_report(), report))  # and as the second report of a batch


def test_duplicate_keys_and_numbers_beyond_64_bits_are_read_alike():
    text = orjson.dumps(example_report()).decode()
    assert assert_same(text.replace('"report_id":', '"report_id":"first","report_id":', 1).encode())
    assert assert_same(text.replace('"lod":5', '"lod":123456789012345678901234567890', 1).encode())


# Values a lab might really send, often valid for the field they land in, so that mutated
# reports reach the fast path too; ``json_values`` alone make nearly every report invalid.
plausible = (
    st.none()
    | st.integers(-3, 2**64 - 1)
    | st.floats(-1.0, 1e30, allow_nan=False)
    | st.sampled_from(["mg/kg", "µg/kg", "%", "g/L", "max", "min", "pass", "fail", "detected", "not_detected", "jinan", "risk_monitoring",
                       "production", "lead", "cadmium", "food/dairy/milk", "ZBQI", "GB 2762-2022", "2026-11-18T09:30:00+08:00", ""])
    | st.text(max_size=70)
    | st.text(alphabet="abz09_/", min_size=1, max_size=70)
)  # fmt: skip


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 2), st.booleans(), st.booleans(), st.data())
def test_a_report_mutated_anywhere_gets_the_same_outcome_both_ways(item_changes, header_change, in_batch, data):
    report = copy.deepcopy(example_report())
    for _ in range(item_changes):
        item = report["items"][data.draw(st.integers(0, len(report["items"]) - 1))]
        item[data.draw(st.sampled_from(sorted(item)))] = data.draw(plausible | json_values)
    if header_change:
        report[data.draw(st.sampled_from(sorted(report)))] = data.draw(plausible | json_values)
    taken = assert_same(batch(report, example_report()) if in_batch else orjson.dumps(report))
    event("taken by the fast path" if taken else "judged by the schema path")
