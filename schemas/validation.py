"""Validate a lab report against the contract and normalise its items into ``LabResult``s.

The JSON Schema (``lab_report.v1.json``) is the contract labs validate against in any
language; this module applies that same file (compiled with fastjsonschema), then the
checks a schema cannot express: units, plausible values, consistent dates. A report whose
header breaks the contract is rejected whole; a bad item is rejected alone, with its reason,
and the other items of the report are kept.

A message is first decoded straight into the contract's msgspec types (``typed_reports``): when
it and every item in it are valid, that is the whole of validation, at a fraction of the cost.
Anything else takes the schema path above, which gives every reason.
"""

from __future__ import annotations

import copy
import json
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from importlib import resources
from typing import Any, NamedTuple

import fastjsonschema
import orjson

from schemas import typed_reports
from schemas.catalogue import TEST_ITEMS
from schemas.results import LabResult, result_id_for
from schemas.units import BASE_UNIT, IncompatibleUnitsError, Unit, UnknownUnitError, convert, parse_unit

REPORT_SCHEMA_NAME = "riskwatch.lab_report.v1"
BATCH_SCHEMA_NAME = "riskwatch.lab_report_batch.v1"


def load_schema(name: str = "lab_report.v1.json") -> dict[str, Any]:
    return json.loads(resources.files("schemas").joinpath(name).read_text(encoding="utf-8"))


def _compile_validators() -> tuple[Any, Any]:
    schema = load_schema()
    item_schema = schema["definitions"]["test_item"]
    header_schema = copy.deepcopy(schema)
    # Items are checked one by one so that one bad item does not reject the whole report.
    header_schema["properties"]["items"]["items"] = {"type": "object"}
    del header_schema["definitions"]
    formats = {"date-time": lambda _value: True}  # parsed and checked below with clearer reasons
    # use_default=False: the dead-letter topic must show items exactly as the lab sent them.
    return (
        fastjsonschema.compile(header_schema, formats=formats, use_default=False),
        fastjsonschema.compile(item_schema, use_default=False),
    )


_validate_header, _validate_item = _compile_validators()
_validate_batch = fastjsonschema.compile(load_schema("lab_report_batch.v1.json"), use_default=False)


@dataclass(frozen=True, slots=True)
class ValidationPolicy:
    """Plausibility bounds that the schema cannot express."""

    max_future_skew: timedelta = timedelta(hours=1)
    max_age: timedelta = timedelta(days=3650)
    max_mass_fraction_mg_per_kg: float = 1e6  # 100 %: no sample holds more than itself


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why (part of) a report was refused. item_index is None when the whole report was.

    code is a short machine label (for metrics), reason the sentence a person reads.
    """

    code: str  # not_json, not_object, schema, timestamp, item_schema, item_value, item_unit, duplicate_item
    reason: str
    item_index: int | None = None
    item: Any = None


@dataclass(slots=True)
class ValidationOutcome:
    results: list[LabResult] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)
    report: Any = None  # the report as parsed (a dict, or a typed report on the fast path); None when rejected whole
    batch_index: int | None = None  # the report's place in a batch message; None for a single report
    original: Any = None  # a batch's report as found there, when the schema path judged it: what a dead letter must show

    @property
    def rejected_whole(self) -> bool:
        return self.report is None


class _ItemError(ValueError):
    def __init__(self, message: str, code: str = "item_value") -> None:
        super().__init__(message)
        self.code = code


def _schema_reason(error: fastjsonschema.JsonSchemaValueException) -> str:
    return error.message.replace("data.", "").replace("data ", "report ")


def _parse_time(name: str, text: str) -> datetime:
    try:
        ts = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{name} {text!r} is not an RFC 3339 timestamp") from None
    if ts.tzinfo is None:
        raise ValueError(f"{name} {text!r} has no UTC offset (write e.g. +08:00 or Z)")
    return ts.astimezone(UTC)


def _check_times(
    sampled_at: str, tested_at: str, published_at: str, now: datetime, policy: ValidationPolicy
) -> tuple[datetime, datetime, datetime]:
    sampled, tested, published = _parse_time("sampled_at", sampled_at), _parse_time("tested_at", tested_at), _parse_time("published_at", published_at)
    if sampled > tested:
        raise ValueError(f"tested_at {tested_at} is before sampled_at {sampled_at}")
    if tested > published:
        raise ValueError(f"published_at {published_at} is before tested_at {tested_at}")
    if published > now + policy.max_future_skew:
        raise ValueError(f"published_at {published_at} is in the future")
    if sampled < now - policy.max_age:
        raise ValueError(f"sampled_at {sampled_at} is older than {policy.max_age.days} days")
    return sampled, tested, published


def _finite(name: str, value: float | None) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _ItemError(f"{name} must be a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise _ItemError(f"{name} must be finite, got {value}")
    return value


def _canonical_unit(test_item: str, reported: Unit) -> Unit:
    """The catalogue's unit for the item, or the base unit of the dimension it was reported in.

    Some items are legitimately measured per mass in one category and per volume in another
    (coliforms in cooked meat vs juice), so a different dimension is not an error; segments
    are category × item, within which the dimension is the same.
    """
    known = TEST_ITEMS.get(test_item)
    if known is not None and known.canonical_unit.dimension is reported.dimension:
        return known.canonical_unit
    return parse_unit(BASE_UNIT[reported.dimension])


def _limit_ratio(value: float | None, limit: float | None, limit_type: str) -> float | None:
    """How far a value sits towards the failing side of its limit: > 1 fails."""
    if value is None or limit is None:
        return None
    ratio = value / limit if limit_type == "max" else (limit / value if value > 0 else None)
    # Twelve significant figures: 0.6 against 0.2 must be exactly 3, not 2.9999999999999996.
    return None if ratio is None else float(f"{ratio:.12g}")


class _Normalised(NamedTuple):
    value: float | None  # in the canonical unit, as are lod and limit
    unit: str
    lod: float | None
    limit: float | None
    ratio: float | None
    reported_value: float | None
    reported_unit: str


class _Item(NamedTuple):
    """The fields of a test item that normalisation reads, from a dict or a typed item alike."""

    test_item: str
    value: Any
    qualitative: str | None
    unit: str | None
    lod: Any
    limit: Any
    limit_type: str
    limit_unit: str | None
    standard: str
    verdict: str


def _item(
    test_item: str, value: Any, qualitative: str | None, unit: str | None, lod: Any, limit: Any, limit_type: str | None,
    limit_unit: str | None, standard: str | None, verdict: str,
) -> _Item:  # fmt: skip
    """An item's fields with the contract's defaults filled in: a limit is a maximum unless it says
    otherwise, and no standard is an empty one."""
    return _Item(test_item, value, qualitative, unit, lod, limit, limit_type or "max", limit_unit, standard or "", verdict)


def _item_of(item: dict[str, Any]) -> _Item:
    return _item(
        item["test_item"], item.get("value"), item.get("qualitative"), item.get("unit"), item.get("lod"), item.get("limit"),
        item.get("limit_type"), item.get("limit_unit"), item.get("standard"), item["verdict"],
    )  # fmt: skip


def _normalise_item(item: _Item, policy: ValidationPolicy) -> _Normalised:
    """The item's numbers in its test item's canonical unit, with the limit ratio."""
    reported_value = value = _finite("value", item.value)
    lod = _finite("lod", item.lod)
    limit = _finite("limit", item.limit)
    if value is None and item.qualitative is None:
        raise _ItemError("item has neither a value nor a qualitative outcome")
    unit_text = item.unit
    if unit_text is None:
        if value is not None or lod is not None or limit is not None:
            raise _ItemError("value, lod or limit given without a unit")
        return _Normalised(None, "", None, None, None, None, "")
    try:
        reported_unit = parse_unit(unit_text)
        canonical = _canonical_unit(item.test_item, reported_unit)
        limit_unit = parse_unit(item.limit_unit) if item.limit_unit else reported_unit
        if value is not None:
            if value < 0:
                raise _ItemError(f"value {value:g} {unit_text} is negative")
            value = convert(value, reported_unit, canonical)
        if lod is not None:
            lod = convert(lod, reported_unit, canonical)
        if limit is not None:
            limit = convert(limit, limit_unit, canonical)
    except (UnknownUnitError, IncompatibleUnitsError) as error:
        raise _ItemError(str(error), "item_unit") from None
    if value is not None and canonical.dimension.value == "mass_fraction":
        in_mg_per_kg = convert(value, canonical, parse_unit("mg/kg"))
        if in_mg_per_kg > policy.max_mass_fraction_mg_per_kg:
            raise _ItemError(f"value {item.value:g} {unit_text} is more than 100 % of the sample")
    ratio = _limit_ratio(value, limit, item.limit_type)
    return _Normalised(value, canonical.symbol, lod, limit, ratio, reported_value, reported_unit.symbol)


class _Header(NamedTuple):
    """What every result of a report shares: ``LabResult``'s fields before ``test_item``, and after
    ``reported_unit``, in their order, so that a result is built from positional fields (keywords
    cost a Struct ten times as much)."""

    front: tuple[str, str, str, str, str, str, str, str, str, str, str, str, datetime, datetime, datetime]
    back: tuple[bool, int, int]


def _header(report_id: str, sample_id: str, lab: tuple[str, str], city: str, programme: str, category: str, product_name: str,
            maker: tuple[str, str], site: tuple[str, str], times: tuple[datetime, datetime, datetime], synthetic: bool,
            source: tuple[int, int]) -> _Header:  # fmt: skip
    return _Header(
        (report_id, sample_id, lab[0], lab[1], city, programme, category, product_name, *maker, *site, *times), (synthetic, *source)
    )


def _result(header: _Header, item: _Item, numbers: _Normalised) -> LabResult:
    front = header.front
    return LabResult(
        result_id_for(front[2], front[1], item.test_item),  # lab_id, sample_id
        *front,
        item.test_item,
        numbers.value,
        numbers.unit,
        item.qualitative,
        numbers.lod,
        numbers.limit,
        item.limit_type,
        numbers.ratio,
        item.standard,
        item.verdict,
        numbers.reported_value,
        numbers.reported_unit,
        *header.back,
    )


def validate_report(
    payload: bytes,
    *,
    now: datetime | None = None,
    policy: ValidationPolicy = ValidationPolicy(),
    source_partition: int = -1,
    source_offset: int = -1,
) -> ValidationOutcome:
    """Check one lab report message and normalise every valid item; never raises on bad input."""
    now = now or datetime.now(UTC)
    typed = typed_reports.decode(payload)
    if isinstance(typed, typed_reports.Report):
        outcome = _validate_typed(typed, now, policy, source_partition, source_offset)
        if outcome is not None:
            return outcome
    parsed = _parse(payload)
    if isinstance(parsed, Rejection):
        return ValidationOutcome(rejections=[parsed])
    return _validate_parsed(parsed, now, policy, source_partition, source_offset)


def validate_message(
    payload: bytes,
    *,
    now: datetime | None = None,
    policy: ValidationPolicy = ValidationPolicy(),
    source_partition: int = -1,
    source_offset: int = -1,
) -> list[ValidationOutcome]:
    """One outcome per report: one for a single report, one per report of a batch message
    (``riskwatch.lab_report_batch.v1``, each report judged alone); never raises on bad input."""
    now = now or datetime.now(UTC)
    typed = typed_reports.decode(payload)
    if typed is not None:
        outcomes = _validate_typed_message(typed, now, policy, source_partition, source_offset)
        if outcomes is not None:
            return outcomes
    parsed = _parse(payload)
    if isinstance(parsed, Rejection):
        return [ValidationOutcome(rejections=[parsed])]
    if parsed.get("schema") != BATCH_SCHEMA_NAME:
        return [_validate_parsed(parsed, now, policy, source_partition, source_offset)]
    try:
        _validate_batch(parsed)
    except fastjsonschema.JsonSchemaValueException as error:
        return [ValidationOutcome(rejections=[Rejection("batch_schema", _schema_reason(error).replace("report ", "batch "))])]
    outcomes = []
    for index, report in enumerate(parsed["reports"]):
        outcome = _validate_parsed(report, now, policy, source_partition, source_offset)
        outcome.batch_index, outcome.original = index, report
        outcomes.append(outcome)
    return outcomes


def _validate_typed_message(
    typed: typed_reports.Report | typed_reports.ReportBatch, now: datetime, policy: ValidationPolicy, source_partition: int, source_offset: int
) -> list[ValidationOutcome] | None:
    """The fast path: outcomes when the message is one valid report, or a batch envelope whose
    reports are objects. A batch's report that the typed path declines is judged alone by the
    schema path; None sends the whole message there."""
    if isinstance(typed, typed_reports.Report):
        outcome = _validate_typed(typed, now, policy, source_partition, source_offset)
        return None if outcome is None else [outcome]
    outcomes = []
    for index, raw in enumerate(typed.reports):
        report = typed_reports.decode_report(raw)
        outcome = None if report is None else _validate_typed(report, now, policy, source_partition, source_offset)
        if outcome is None:
            parsed = orjson.loads(bytes(raw))  # valid JSON: the envelope decoded
            if not isinstance(parsed, dict):
                return None  # the batch schema rejects the whole message
            outcome = _validate_parsed(parsed, now, policy, source_partition, source_offset)
            outcome.original = parsed
        outcome.batch_index = index
        outcomes.append(outcome)
    return outcomes


def _validate_typed(
    report: typed_reports.Report, now: datetime, policy: ValidationPolicy, source_partition: int, source_offset: int
) -> ValidationOutcome | None:
    """A typed report's results when it and every item are valid; None for anything the schema
    path must judge, so that every reason is given in one place."""
    try:
        sampled, tested, published = _check_times(report.sampled_at, report.tested_at, report.published_at, now, policy)
    except ValueError:
        return None
    maker, site = report.manufacturer, report.sampling_site
    header = _header(
        report.report_id, report.sample_id, (report.lab.id, report.lab.name), report.city, report.programme, report.category,
        report.product_name, (maker.name, maker.uscc or "") if maker else ("", ""), (site.name, site.kind or "") if site else ("", ""),
        (sampled, tested, published), bool(report.synthetic), (source_partition, source_offset),
    )  # fmt: skip
    outcome, seen_items = ValidationOutcome(report=report), set()
    for entry in report.items:
        item = _item(
            entry.test_item, entry.value, entry.qualitative, entry.unit, entry.lod, entry.limit, entry.limit_type, entry.limit_unit,
            entry.standard, entry.verdict,
        )  # fmt: skip
        if item.test_item in seen_items:
            return None
        try:
            numbers = _normalise_item(item, policy)
        except _ItemError:
            return None
        seen_items.add(item.test_item)
        outcome.results.append(_result(header, item, numbers))
    return outcome


def _parse(payload: bytes) -> dict[str, Any] | Rejection:
    try:
        report = orjson.loads(payload)
    except orjson.JSONDecodeError as error:
        return Rejection("not_json", f"not valid UTF-8 JSON: {error}")
    if not isinstance(report, dict):
        return Rejection("not_object", f"expected a JSON object (one lab report), got {type(report).__name__}")
    return report


def _validate_parsed(
    report: dict[str, Any], now: datetime, policy: ValidationPolicy, source_partition: int, source_offset: int
) -> ValidationOutcome:
    outcome = ValidationOutcome()
    try:
        _validate_header(report)
        sampled, tested, published = _check_times(report["sampled_at"], report["tested_at"], report["published_at"], now, policy)
    except fastjsonschema.JsonSchemaValueException as error:
        outcome.rejections.append(Rejection("schema", _schema_reason(error)))
        return outcome
    except ValueError as error:
        outcome.rejections.append(Rejection("timestamp", str(error)))
        return outcome
    outcome.report = report

    lab, maker, site = report["lab"], report.get("manufacturer") or {}, report.get("sampling_site") or {}
    header = _header(
        report["report_id"], report["sample_id"], (lab["id"], lab["name"]), report["city"], report["programme"], report["category"],
        report["product_name"], (maker.get("name") or "", maker.get("uscc") or ""), (site.get("name") or "", site.get("kind") or ""),
        (sampled, tested, published), bool(report.get("synthetic", False)), (source_partition, source_offset),
    )  # fmt: skip
    seen_items: set[str] = set()
    for index, entry in enumerate(report["items"]):
        try:
            _validate_item(entry)
            item = _item_of(entry)
            if item.test_item in seen_items:
                raise _ItemError(f"test item {item.test_item!r} appears more than once in this report", "duplicate_item")
            numbers = _normalise_item(item, policy)
        except fastjsonschema.JsonSchemaValueException as error:
            outcome.rejections.append(Rejection("item_schema", f"items[{index}]: {_schema_reason(error)}", index, entry))
            continue
        except _ItemError as error:
            outcome.rejections.append(Rejection(error.code, f"items[{index}] ({entry.get('test_item')}): {error}", index, entry))
            continue
        seen_items.add(item.test_item)
        outcome.results.append(_result(header, item, numbers))
    return outcome
