"""Turn a LIMS export (CSV, XLSX or JSON Lines, one row per test item) into lab reports.

LIMS exports have one row per test item, with the sample's columns repeated and headers in
the lab's own words (样品编号, 检验项目, 检测值, 单位, 标准限量, 判定结论 …). A per-lab mapping
file (TOML) names the column behind each contract field and translates the lab's values
(合格 → pass, 铅(以Pb计) → lead). Rows are grouped by sample into one report each; every row
keeps its line number so that a rejection can be reported where the lab will look for it.
"""

from __future__ import annotations

import csv
import io
import re
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson

from schemas.catalogue import CATEGORIES, TEST_ITEMS

REPORT_FIELDS = (
    "report_id", "sample_id", "category", "category_name", "product_name", "programme", "manufacturer_name",
    "manufacturer_uscc", "sampling_site", "site_kind", "district", "sampled_at", "tested_at", "published_at", "city",
    "lab_id", "lab_name",
)  # fmt: skip
ITEM_FIELDS = ("test_item", "test_item_name", "value", "unit", "lod", "limit", "limit_unit", "standard", "method", "verdict")

# Common spellings in Chinese LIMS exports, used when the mapping leaves a value untranslated.
DEFAULT_VALUES: dict[str, dict[str, str]] = {
    "verdict": {"合格": "pass", "不合格": "fail", "符合": "pass", "不符合": "fail", "pass": "pass", "fail": "fail"},
    "programme": {
        "国家监督抽查": "national_supervision", "国抽": "national_supervision", "省级监督抽查": "provincial_supervision",
        "省抽": "provincial_supervision", "市级监督抽查": "city_supervision", "市抽": "city_supervision",
        "风险监测": "risk_monitoring",
    },  # fmt: skip
    "site_kind": {"生产": "production", "流通": "distribution", "餐饮": "catering", "网络": "e_commerce", "电商": "e_commerce"},
    # The catalogue's Chinese names: 铅(以Pb计) → lead, 大米 or 食品›粮食加工品›大米 → food/grain_products/rice.
    "test_item": {item.zh: code for code, item in TEST_ITEMS.items()},
    "category": {name: code for code, c in CATEGORIES.items() for name in (c.zh, c.zh.split("›")[-1])},
}
_NOT_DETECTED = {"nd", "n.d.", "未检出", "not detected", "not_detected", "阴性", "-"}
_DETECTED = {"检出", "detected", "阳性"}
_MUST_NOT_BE_DETECTED = {"不得检出", "不得使用", "not detected", "not allowed"}
_NUMBER = re.compile(r"^\s*([<>≤≥]=?|＜|＞)?\s*([-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)\s*$")


class MappingError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class LimsMapping:
    """How one lab's export maps onto the contract (see docs/publishing.md)."""

    lab_id: str
    lab_name: str
    city: str
    columns: dict[str, str]  # contract field → the export's column header
    defaults: dict[str, str] = field(default_factory=dict)  # contract field → value when the column is absent or empty
    values: dict[str, dict[str, str]] = field(default_factory=dict)  # contract field → {lab's value → contract value}
    utc_offset: str = "+08:00"
    synthetic: bool = False

    @classmethod
    def load(cls, path: Path) -> LimsMapping:
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as error:
            raise MappingError(f"cannot read mapping {path}: {error}") from None
        lab = data.get("lab", {})
        missing = [k for k in ("id", "name", "city") if k not in lab]
        if missing:
            raise MappingError(f"mapping {path}: [lab] needs {', '.join(missing)}")
        columns = data.get("columns", {})
        unknown = sorted(set(columns) - set(REPORT_FIELDS) - set(ITEM_FIELDS))
        if unknown:
            raise MappingError(f"mapping {path}: unknown fields in [columns]: {', '.join(unknown)}")
        for needed in ("sample_id", "test_item", "verdict"):
            if needed not in columns:
                raise MappingError(f"mapping {path}: [columns] must name the column of {needed}")
        return cls(
            lab_id=lab["id"], lab_name=lab["name"], city=lab["city"], columns=columns, defaults=data.get("defaults", {}),
            values=data.get("values", {}), utc_offset=lab.get("utc_offset", "+08:00"), synthetic=bool(lab.get("synthetic", False)),
        )  # fmt: skip

    def value(self, row: dict[str, Any], name: str) -> str | None:
        """The row's text for a contract field, translated; None when absent or empty."""
        column = self.columns.get(name)
        raw = row.get(column) if column else None
        text = "" if raw is None else str(raw).strip()
        if not text:
            text = str(self.defaults.get(name, "")).strip()
        if not text:
            return None
        table = self.values.get(name, {})
        if text in table:
            return table[text]
        return DEFAULT_VALUES.get(name, {}).get(text, text)


@dataclass(slots=True)
class Row:
    line: int  # line number in the file (header is line 1 in CSV/XLSX)
    data: dict[str, Any]


def read_rows(path: Path) -> Iterator[Row]:
    """Rows of a CSV (UTF-8, UTF-8 with BOM or GB18030), XLSX (first sheet) or JSON Lines file."""
    suffix = path.suffix.lower()
    if suffix == ".xlsx":
        from openpyxl import load_workbook

        sheet = load_workbook(path, read_only=True, data_only=True).worksheets[0]
        rows = sheet.iter_rows(values_only=True)
        header = [("" if h is None else str(h).strip()) for h in next(rows, ())]
        for number, values in enumerate(rows, start=2):
            if any(v not in (None, "") for v in values):
                yield Row(number, dict(zip(header, values, strict=False)))
        return
    raw = path.read_bytes()
    if suffix in (".jsonl", ".ndjson", ".json"):
        for number, line in enumerate(raw.splitlines(), start=1):
            if line.strip():
                yield Row(number, {"__raw__": line})
        return
    text = _decode(raw)
    for number, record in enumerate(csv.DictReader(io.StringIO(text)), start=2):
        if any((v or "").strip() for v in record.values()):
            yield Row(number, {(k or "").strip(): v for k, v in record.items()})


def _decode(raw: bytes) -> str:
    for encoding in ("utf-8-sig", "gb18030"):
        try:
            return raw.decode(encoding)
        except UnicodeDecodeError:
            continue
    raise ValueError("the file is neither UTF-8 nor GB18030 text")


def parse_measurement(text: str | None) -> tuple[float | None, str | None]:
    """(value, qualitative) from '0.12', 'ND', '未检出', '<0.01', '检出'."""
    if text is None:
        return None, None
    cleaned = text.strip()
    if cleaned.lower() in _NOT_DETECTED:
        return None, "not_detected"
    if cleaned in _DETECTED or cleaned.lower() in _DETECTED:
        return None, "detected"
    match = _NUMBER.match(cleaned)
    if match is None:
        raise ValueError(f"value {text!r} is neither a number nor ND/未检出/检出")
    if match.group(1) in ("<", "＜", "<="):
        return None, "not_detected"  # below the limit of detection or quantification
    return float(match.group(2)), None


def parse_limit(text: str | None) -> tuple[float | None, str | None]:
    """(limit, limit_type) from '0.2', '≤0.2', '≥49', '不得检出'."""
    if text is None or text.strip() in _MUST_NOT_BE_DETECTED:
        return None, None
    match = _NUMBER.match(text.replace("＜", "<").replace("＞", ">"))
    if match is None:
        raise ValueError(f"limit {text!r} is not a number (write e.g. 0.2, ≤0.2, ≥49 or 不得检出)")
    return float(match.group(2)), ("min" if match.group(1) in (">", "≥", ">=") else "max")


def parse_time(text: str | None, offset: str) -> str | None:
    """RFC 3339 from '2026-11-18', '2026/11/18 09:30', '2026年11月18日', an Excel datetime, or RFC 3339."""
    if text is None:
        return None
    if isinstance(text, datetime):
        parsed = text
    else:
        cleaned = str(text).strip().replace("/", "-").replace("年", "-").replace("月", "-").replace("日", "")
        try:
            parsed = datetime.fromisoformat(cleaned)
        except ValueError:
            raise ValueError(f"date {text!r} is not a date (write e.g. 2026-11-18 or 2026-11-18 09:30)") from None
    if parsed.tzinfo is None:
        sign = -1 if offset.startswith("-") else 1
        hours, minutes = (int(p) for p in offset.lstrip("+-").split(":"))
        parsed = parsed.replace(tzinfo=timezone(sign * timedelta(hours=hours, minutes=minutes)))
    return parsed.isoformat()


@dataclass(slots=True)
class Built:
    """A report ready to validate, with the file lines behind it (lines[i] is items[i]'s row)."""

    report: dict[str, Any] | None
    lines: list[int]
    error: str | None = None  # why the rows could not even form a report


def build_reports(rows: Iterator[Row], mapping: LimsMapping | None) -> Iterator[Built]:
    """Group rows by sample into contract reports (JSON Lines reports pass through as they are)."""
    groups: dict[str, list[Row]] = {}
    for row in rows:
        if "__raw__" in row.data:
            try:
                data = orjson.loads(row.data["__raw__"])
            except orjson.JSONDecodeError as error:
                yield Built(None, [row.line], f"not valid JSON: {error}")
                continue
            if isinstance(data, dict) and data.get("schema") == "riskwatch.lab_report.v1":
                yield Built(data, [row.line] * max(1, len(data.get("items") or [])))
                continue
            row = Row(row.line, data if isinstance(data, dict) else {})
        if mapping is None:
            yield Built(None, [row.line], "a row of a LIMS export needs a mapping file (--mapping)")
            continue
        sample = mapping.value(row.data, "sample_id")
        if sample is None:
            yield Built(None, [row.line], f"no sample id (column {mapping.columns['sample_id']!r} is empty)")
            continue
        groups.setdefault(sample, []).append(row)
    for sample, sample_rows in groups.items():
        yield _report(sample, sample_rows, mapping)


def _report(sample: str, rows: list[Row], mapping: LimsMapping) -> Built:
    first = rows[0].data
    get = mapping.value
    lines = [r.line for r in rows]
    try:
        items = [_item(row.data, mapping) for row in rows]
        report: dict[str, Any] = {
            "schema": "riskwatch.lab_report.v1",
            "report_id": get(first, "report_id") or sample,
            "sample_id": sample,
            "lab": {"id": get(first, "lab_id") or mapping.lab_id, "name": get(first, "lab_name") or mapping.lab_name},
            "city": get(first, "city") or mapping.city,
            "programme": get(first, "programme"),
            "category": get(first, "category"),
            "product_name": get(first, "product_name"),
            "sampled_at": parse_time(get(first, "sampled_at"), mapping.utc_offset),
            "tested_at": parse_time(get(first, "tested_at"), mapping.utc_offset),
            "published_at": parse_time(get(first, "published_at"), mapping.utc_offset)
            or datetime.now().astimezone().isoformat(timespec="seconds"),
            "items": items,
        }
    except ValueError as error:
        return Built(None, lines, str(error))
    if name := get(first, "category_name"):
        report["category_name"] = name
    if maker := get(first, "manufacturer_name"):
        report["manufacturer"] = {"name": maker}
        if uscc := get(first, "manufacturer_uscc"):
            report["manufacturer"]["uscc"] = uscc
    if site := get(first, "sampling_site"):
        report["sampling_site"] = {"name": site, **({"kind": k} if (k := get(first, "site_kind")) else {})}
        if district := get(first, "district"):
            report["sampling_site"]["district"] = district
    if mapping.synthetic:
        report["synthetic"] = True
    return Built({k: v for k, v in report.items() if v is not None}, lines)


def _item(row: dict[str, Any], mapping: LimsMapping) -> dict[str, Any]:
    get = mapping.value
    value, qualitative = parse_measurement(get(row, "value"))
    limit, limit_type = parse_limit(get(row, "limit"))
    item: dict[str, Any] = {"test_item": get(row, "test_item"), "verdict": get(row, "verdict")}
    if value is not None:
        item["value"] = value
    if qualitative is not None:
        item["qualitative"] = qualitative
    if limit is not None:
        item["limit"] = limit
        item["limit_type"] = limit_type
    if (lod := get(row, "lod")) is not None:
        item["lod"] = parse_measurement(lod)[0]
    for name in ("unit", "limit_unit", "standard", "method", "test_item_name"):
        if (text := get(row, name)) is not None:
            item[name] = text
    if "test_item_name" not in item and mapping.columns.get("test_item") in row:
        original = str(row[mapping.columns["test_item"]]).strip()
        if original != item["test_item"]:
            item["test_item_name"] = original
    return item
