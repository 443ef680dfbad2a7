"""Faust records matching ``lab_report.v1.json`` and ``alert.v1.json``.

For Python producers and consumers that want typed messages. ``include_metadata=False``
keeps Faust's ``__faust`` field out of the JSON, so a record serialises to exactly the
contract's shape. The ingest agent itself reads raw bytes (so that a message Faust could not
decode still reaches the dead-letter topic) and validates them against the JSON Schema.
"""

from __future__ import annotations

import faust


class Lab(faust.Record, include_metadata=False):
    id: str
    name: str


class ManufacturerRecord(faust.Record, include_metadata=False):
    name: str
    uscc: str | None = None


class SamplingSite(faust.Record, include_metadata=False):
    name: str
    kind: str | None = None
    district: str | None = None


class TestItemResult(faust.Record, include_metadata=False):
    __test__ = False  # not a pytest test class

    test_item: str
    verdict: str
    test_item_name: str | None = None
    value: float | None = None
    qualitative: str | None = None
    unit: str | None = None
    lod: float | None = None
    limit: float | None = None
    limit_type: str = "max"
    limit_unit: str | None = None
    standard: str | None = None
    method: str | None = None


class LabReport(faust.Record, include_metadata=False, serializer="json"):
    report_id: str
    sample_id: str
    lab: Lab
    city: str
    programme: str
    category: str
    product_name: str
    sampled_at: str
    tested_at: str
    published_at: str
    items: list[TestItemResult]
    schema: str = "riskwatch.lab_report.v1"
    category_name: str | None = None
    manufacturer: ManufacturerRecord | None = None
    sampling_site: SamplingSite | None = None
    synthetic: bool = False

    def to_contract(self) -> dict:
        """The report as the contract's JSON object (unset optional fields left out)."""
        return _drop_none(self.asdict())


class AlertRecord(faust.Record, include_metadata=False, serializer="json"):
    alert_id: str
    detector: str
    signal: str
    severity: str
    score: float
    title: str
    explanation: str
    category: str
    cities: list[str]
    labs: list[str]
    evidence: list[str]
    count: int
    first_seen: str
    last_seen: str
    detected_at: str
    schema: str = "riskwatch.alert.v1"
    title_zh: str = ""
    explanation_zh: str = ""
    test_item: str | None = None
    manufacturer: ManufacturerRecord | None = None
    synthetic: bool = False


def _drop_none(value):
    if isinstance(value, faust.Record):
        value = value.asdict()
    if isinstance(value, dict):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_none(v) for v in value]
    return value
