"""The Faust records and the alert type speak exactly the JSON Schema contracts."""

import random
import uuid

import jsonschema
import orjson

from detectors.limit_exceedance import LimitExceedance
from schemas.records import AlertRecord, LabReport
from schemas.results import _NAMESPACE, Alert, alert_id_for, name_uuid, result_id_for
from schemas.validation import load_schema, validate_report
from tests.conftest import EXAMPLE_NOW


def test_lab_report_record_round_trips_the_example(report):
    record = LabReport.from_data(report)
    assert record.items[1].test_item == "cadmium" and record.lab.id == "ZBQI"
    # The record writes its defaults out and leaves nulls out; otherwise it is the report as sent.
    items = [{"limit_type": "max", **{k: v for k, v in item.items() if v is not None}} for item in report["items"]]
    expected = {**report, "synthetic": False, "items": items}
    assert record.to_contract() == expected
    jsonschema.Draft7Validator(load_schema()).validate(orjson.loads(record.dumps()))


def test_alerts_validate_against_the_alert_schema_and_load_as_records(report):
    result = validate_report(orjson.dumps(report), now=EXAMPLE_NOW).results[1]
    (alert,) = LimitExceedance().process_one(result, EXAMPLE_NOW)
    wire = alert.to_wire()
    jsonschema.Draft7Validator(load_schema("alert.v1.json")).validate(wire)
    record = AlertRecord.from_data(wire)
    assert (record.alert_id, record.severity, record.evidence) == (alert.alert_id, "potentially_serious", [result.result_id])
    assert Alert.from_wire(wire).to_wire() == wire


def test_result_and_alert_ids_are_the_standard_name_based_uuids_of_their_names():
    rng = random.Random(4)
    names = [
        "",
        "ZBQI",
        "济南市食品药品检验研究院\x1fS-1\x1fcadmium",
        *("".join(rng.choices("ab-_\x1f7é漢", k=rng.randint(1, 60))) for _ in range(2000)),
    ]
    assert all(name_uuid(name) == str(uuid.uuid5(_NAMESPACE, name)) for name in names)
    assert result_id_for("ZBQI", "S-1", "lead") == str(uuid.uuid5(_NAMESPACE, "result\x1fZBQI\x1fS-1\x1flead"))
    assert alert_id_for("value_anomaly", "x") == str(uuid.uuid5(_NAMESPACE, "alert\x1fvalue_anomaly\x1fx"))
