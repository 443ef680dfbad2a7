"""Reading LIMS exports: Chinese headers and values, encodings, XLSX, and line-exact rejections."""

from pathlib import Path

import orjson
import pytest

from streams.lims import LimsMapping, MappingError, parse_limit, parse_measurement, parse_time
from streams.publisher import prepare

EXAMPLES = Path(__file__).parent.parent / "docs" / "examples"


@pytest.fixture
def mapping() -> LimsMapping:
    return LimsMapping.load(EXAMPLES / "zbqi-mapping.toml")


@pytest.mark.parametrize(
    "text, expected",
    [("0.12", (0.12, None)), (" 12.5 ", (12.5, None)), ("ND", (None, "not_detected")), ("未检出", (None, "not_detected")),
     ("<0.01", (None, "not_detected")), ("＜0.01", (None, "not_detected")), ("检出", (None, "detected")), ("1e-3", (0.001, None))],
)  # fmt: skip
def test_measurements_as_labs_write_them(text, expected):
    assert parse_measurement(text) == expected


@pytest.mark.parametrize(
    "text, expected",
    [("0.2", (0.2, "max")), ("≤0.2", (0.2, "max")), ("≥49", (49.0, "min")), ("不得检出", (None, None)), (None, (None, None))],
)
def test_limits_as_labs_write_them(text, expected):
    assert parse_limit(text) == expected


def test_dates_get_the_labs_offset():
    assert parse_time("2026/11/18", "+08:00") == "2026-11-18T00:00:00+08:00"
    assert parse_time("2026年11月18日", "+08:00") == "2026-11-18T00:00:00+08:00"
    assert parse_time("2026-11-18 09:30", "+08:00") == "2026-11-18T09:30:00+08:00"
    assert parse_time("2026-11-18T09:30:00Z", "+08:00") == "2026-11-18T09:30:00+00:00"
    with pytest.raises(ValueError, match="is not a date"):
        parse_time("2026-13-03", "+08:00")
    with pytest.raises(ValueError, match="neither a number"):
        parse_measurement("about 3")


def test_a_mapping_must_name_the_essential_columns(tmp_path):
    broken = tmp_path / "m.toml"
    broken.write_text('[lab]\nid = "X1"\nname = "x"\ncity = "zibo"\n[columns]\nsample_id = "样品编号"\ncolour = "颜色"\n', encoding="utf-8")
    with pytest.raises(MappingError, match="unknown fields in \\[columns\\]: colour"):
        LimsMapping.load(broken)
    broken.write_text('[lab]\nid = "X1"\nname = "x"\ncity = "zibo"\n[columns]\nsample_id = "样品编号"\n', encoding="utf-8")
    with pytest.raises(MappingError, match="must name the column of test_item"):
        LimsMapping.load(broken)


def test_the_example_export_becomes_four_reports_and_three_line_exact_rejections(mapping):
    prepared = prepare(EXAMPLES / "zbqi-export.csv", mapping)
    summary = prepared.summary
    assert (summary.rows, summary.reports_ready, summary.items_sent) == (11, 4, 8)
    assert [(r.line, r.reason.split(":")[0]) for r in summary.rejected] == [
        (9, "items[0] (benzoic_acid)"), (11, "no sample id (column '样品编号' is empty)"), (12, "date '2026-13-03' is not a date (write e.g. 2026-11-18 or 2026-11-18 09"),
    ]  # fmt: skip
    rice = orjson.loads(prepared.messages[0][1])
    assert prepared.messages[0][0] == b"food/grain_products/rice" and prepared.messages[0][2] == b"ZBQI/ZB20261101001"
    assert rice["programme"] == "city_supervision" and rice["sampled_at"] == "2026-11-01T00:00:00+08:00"
    lead, cadmium, aflatoxin = rice["items"]
    assert lead == {"test_item": "lead", "verdict": "pass", "value": 0.086, "limit": 0.2, "limit_type": "max", "lod": 0.005,
                    "unit": "mg/kg", "standard": "GB 2762-2022", "test_item_name": "铅"}  # fmt: skip
    assert cadmium["verdict"] == "fail" and aflatoxin["qualitative"] == "not_detected" and aflatoxin["test_item"] == "aflatoxin_b1"
    clothing = orjson.loads(prepared.messages[2][1])
    assert clothing["category"] == "industrial/childrens_products/clothing"
    assert clothing["items"][1] == {"test_item": "aromatic_amines", "verdict": "pass", "qualitative": "not_detected", "unit": "mg/kg",
                                    "standard": "GB 18401-2010", "test_item_name": "可分解致癌芳香胺染料"}  # fmt: skip


def test_gb18030_csv_and_xlsx_read_like_utf8_csv(mapping, tmp_path):
    from openpyxl import Workbook

    text = (EXAMPLES / "zbqi-export.csv").read_text(encoding="utf-8")
    gbk = tmp_path / "export-gbk.csv"
    gbk.write_bytes(text.replace("μg/kg", "ug/kg").replace("₁", "1").encode("gb18030"))
    workbook = Workbook()
    sheet = workbook.active
    for line in text.splitlines():
        sheet.append(line.split(","))
    xlsx = tmp_path / "export.xlsx"
    workbook.save(xlsx)
    reference = prepare(EXAMPLES / "zbqi-export.csv", mapping)
    for path in (gbk, xlsx):
        prepared = prepare(path, mapping)
        assert [r.line for r in prepared.summary.rejected] == [9, 11, 12], path
        assert len(prepared.messages) == len(reference.messages)
    assert prepare(xlsx, mapping).messages == reference.messages


def test_contract_reports_in_json_lines_pass_through_without_a_mapping(tmp_path):
    from tests.conftest import example_report

    good = example_report()
    bad = {**example_report(), "city": "qingdao"}
    path = tmp_path / "reports.jsonl"
    path.write_bytes(orjson.dumps(good) + b"\n" + orjson.dumps(bad) + b"\nnot json\n")
    prepared = prepare(path, None)
    assert len(prepared.messages) == 1 and orjson.loads(prepared.messages[0][1]) == good
    assert [(r.line, r.reason[:16]) for r in prepared.summary.rejected] == [(2, "city must be one"), (3, "not valid JSON: ")]


def test_batches_group_reports_by_category_within_the_size_and_byte_limits(report):
    from schemas.validation import validate_message
    from streams.publisher import Batching, batch_messages
    from tests.conftest import EXAMPLE_NOW

    singles = []
    for n in range(25):
        one = {**report, "sample_id": f"S-{n}", "category": ["food/grain_products/rice", "food/dairy/milk"][n % 2]}
        singles.append((one["category"].encode(), orjson.dumps(one), f"lab/S-{n}".encode()))
    batches = batch_messages(singles, Batching(size=5, max_bytes=1_000_000))
    assert [len(orjson.loads(v)["reports"]) for _, v, _ in batches] == [5, 5, 3, 5, 5, 2]
    assert {k for k, _, _ in batches[:3]} == {b"food/grain_products/rice"}
    sent = [o.results[0].sample_id for _, v, _ in batches for o in validate_message(v, now=EXAMPLE_NOW) if not o.rejections]
    assert sorted(sent) == sorted(f"S-{n}" for n in range(25)), "every report once, all valid"
    small = batch_messages(singles, Batching(size=100, max_bytes=3 * len(singles[0][1]) + 200))
    assert all(len(v) <= 3 * len(singles[0][1]) + 200 for _, v, _ in small) and len(small) > 2
