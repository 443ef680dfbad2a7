import copy
from datetime import UTC, datetime, timedelta

import jsonschema
import msgspec
import orjson
import pytest

from schemas import typed_reports
from schemas.results import result_id_for
from schemas.validation import ValidationPolicy, load_schema, validate_report
from tests.conftest import EXAMPLE_NOW


def check(report, now=EXAMPLE_NOW, **kwargs):
    return validate_report(orjson.dumps(report), now=now, **kwargs)


def test_the_example_is_valid_for_the_reference_validator_and_for_ours(report):
    jsonschema.Draft7Validator(load_schema()).validate(report)
    outcome = check(report)
    assert outcome.rejections == []
    assert [r.test_item for r in outcome.results] == ["lead", "cadmium", "aflatoxin_b1", "inorganic_arsenic"]


@pytest.mark.parametrize("path", ["typed", "schema"])
def test_every_field_of_a_result_holds_what_its_name_says(report, path, monkeypatch):
    """Results are built from positional fields: one out of place would swap two columns."""
    if path == "schema":
        monkeypatch.setattr(typed_reports, "decode", lambda payload: None)
    report["synthetic"] = True
    cadmium = check(report, source_partition=5, source_offset=77).results[1]
    sampled, tested, published = (datetime.fromisoformat(report[name]).astimezone(UTC) for name in ("sampled_at", "tested_at", "published_at"))
    assert msgspec.structs.asdict(cadmium) == {
        "result_id": result_id_for("ZBQI", "ZBQI20261118004127", "cadmium"),
        "report_id": "ZBQI-2026-004127", "sample_id": "ZBQI20261118004127", "lab_id": "ZBQI", "lab_name": "淄博市产品质量检验研究院",
        "city": "zibo", "programme": "city_supervision", "category": "food/grain_products/rice", "product_name": "东北大米",
        "manufacturer_name": "淄博鲁丰粮油有限公司", "manufacturer_uscc": "91370300MA3C7G2X5B", "sampling_site": "淄博银座张店店",
        "site_kind": "distribution", "sampled_at": sampled, "tested_at": tested, "published_at": published, "test_item": "cadmium",
        "value": 0.41, "unit": "mg/kg", "qualitative": None, "lod": 0.002, "limit": 0.2, "limit_type": "max",
        "limit_ratio": pytest.approx(2.05), "standard": "GB 2762-2022", "verdict": "fail", "reported_value": 0.41, "reported_unit": "mg/kg",
        "synthetic": True, "source_partition": 5, "source_offset": 77,
    }  # fmt: skip
    assert (cadmium.sampled_at, cadmium.published_at) == (datetime(2026, 11, 18, 1, 30, tzinfo=UTC), datetime(2026, 11, 20, 2, 12, tzinfo=UTC))


def test_values_are_converted_to_the_items_canonical_unit(report):
    lead = check(report).results[0]
    assert (lead.value, lead.unit, lead.lod, lead.limit) == (pytest.approx(0.086), "mg/kg", pytest.approx(0.005), 0.2)
    assert (lead.reported_value, lead.reported_unit) == (86, "µg/kg")
    assert lead.limit_ratio == pytest.approx(0.43)


def test_a_g_per_kg_item_reported_in_mg_per_kg(report):
    report["items"] = [{"test_item": "benzoic_acid", "value": 150, "unit": "mg/kg", "limit": 1.0, "limit_unit": "g/kg", "verdict": "pass"}]
    (result,) = check(report).results
    assert (result.value, result.unit, result.limit_ratio) == (pytest.approx(0.15), "g/kg", pytest.approx(0.15))


def test_a_minimum_limit_ratio_is_above_one_on_the_failing_side(report):
    report["items"] = [{"test_item": "cetane_number", "value": 46, "unit": "1", "limit": 49, "limit_type": "min", "verdict": "fail"}]
    (result,) = check(report).results
    assert result.limit_ratio == pytest.approx(49 / 46)


def test_qualitative_item_has_no_value_or_ratio(report):
    aflatoxin = check(report).results[2]
    assert (aflatoxin.value, aflatoxin.qualitative, aflatoxin.limit_ratio) == (None, "not_detected", None)


def test_result_ids_are_stable_per_lab_sample_and_item(report):
    first, again = check(report).results, check(copy.deepcopy(report)).results
    assert [r.result_id for r in first] == [r.result_id for r in again]
    assert first[0].result_id == result_id_for("ZBQI", "ZBQI20261118004127", "lead")
    assert len({r.result_id for r in first}) == 4


@pytest.mark.parametrize(
    "mutate, code, reason",
    [
        (lambda i: i.update(unit="bananas/kg"), "item_unit", "unknown unit 'bananas/kg'"),
        (lambda i: i.update(value=-1), "item_value", "is negative"),
        (lambda i: i.update(value="0.41"), "item_schema", "value must be number or null"),
        (lambda i: i.pop("verdict"), "item_schema", "must contain ['verdict']"),
        (lambda i: i.update(value=200, unit="%"), "item_value", "more than 100 % of the sample"),
        (lambda i: i.update(limit_unit="mg/L"), "item_unit", "cannot convert mg/L"),
        (lambda i: i.update(colour="red"), "item_schema", "must not contain {'colour'} properties"),
        (lambda i: [i.pop("value"), i.pop("qualitative", None)], "item_value", "neither a value nor a qualitative outcome"),
    ],
)
def test_a_bad_item_is_rejected_alone_with_its_reason(report, mutate, code, reason):
    mutate(report["items"][1])
    outcome = check(report)
    assert [r.test_item for r in outcome.results] == ["lead", "aflatoxin_b1", "inorganic_arsenic"]
    (rejection,) = outcome.rejections
    assert (rejection.code, rejection.item_index) == (code, 1)
    assert reason in rejection.reason and rejection.reason.startswith("items[1]")
    assert rejection.item == report["items"][1]


def test_the_same_item_twice_keeps_the_first(report):
    report["items"].append(dict(report["items"][0]))
    outcome = check(report)
    assert len(outcome.results) == 4
    assert outcome.rejections[0].code == "duplicate_item" and outcome.rejections[0].item_index == 4


@pytest.mark.parametrize(
    "payload, code, reason",
    [
        (b'{"schema": "riskwatch.lab_report.v1", ', "not_json", "not valid UTF-8 JSON"),
        (b"\xff\xfe\x00", "not_json", "not valid UTF-8 JSON"),
        (b"[1, 2]", "not_object", "expected a JSON object"),
        (b"NaN", "not_json", "not valid UTF-8 JSON"),
    ],
)
def test_unparseable_messages_are_rejected_whole(payload, code, reason):
    outcome = validate_report(payload, now=EXAMPLE_NOW)
    assert outcome.results == [] and outcome.rejected_whole
    assert outcome.rejections[0].code == code and reason in outcome.rejections[0].reason


@pytest.mark.parametrize(
    "mutate, code, reason",
    [
        (lambda r: r.pop("sample_id"), "schema", "sample_id"),
        (lambda r: r.update(city="qingdao"), "schema", "city must be one of"),
        (lambda r: r.update(schema="riskwatch.lab_report.v2"), "schema", "schema must be same as const"),
        (lambda r: r.update(items=[]), "schema", "items must contain at least 1 items"),
        (lambda r: r.update(sampled_at="2026-11-18 09:30"), "timestamp", "has no UTC offset"),
        (lambda r: r.update(sampled_at="yesterday"), "timestamp", "not an RFC 3339 timestamp"),
        (lambda r: r.update(tested_at="2026-11-17T09:30:00+08:00"), "timestamp", "is before sampled_at"),
        (lambda r: r.update(published_at="2027-01-01T00:00:00Z"), "timestamp", "is in the future"),
        (lambda r: r.update(sampled_at="1999-01-01T00:00:00Z", tested_at="1999-01-02T00:00:00Z"), "timestamp", "older than"),
        (lambda r: r["manufacturer"].update(uscc="not-a-code"), "schema", "manufacturer.uscc must match pattern"),
    ],
)
def test_a_bad_report_header_rejects_the_whole_report(report, mutate, code, reason):
    mutate(report)
    outcome = check(report)
    assert outcome.results == []
    (rejection,) = outcome.rejections
    assert rejection.code == code and reason in rejection.reason, rejection.reason


def test_lab_extensions_are_allowed(report):
    report["x_lims_batch"] = "B-17"
    report["items"][0]["x_instrument"] = "ICP-MS 7"
    assert check(report).rejections == []


def test_policy_bounds_are_configurable(report):
    report["published_at"] = (EXAMPLE_NOW + timedelta(hours=2)).isoformat()
    assert check(report).rejections[0].code == "timestamp"
    assert check(report, policy=ValidationPolicy(max_future_skew=timedelta(hours=3))).rejections == []
