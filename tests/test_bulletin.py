"""The risk bulletin, rendered from a chDB store loaded with known data: its figures are those data."""

from __future__ import annotations

import dataclasses
import random
import re
from datetime import UTC, date, datetime, timedelta

import msgspec
import pytest

from detectors import LimitExceedance
from schemas.results import Severity, result_id_for
from streams.bulletin import BulletinBuilder, _cjk_font, render
from streams.lifecycle import set_status
from tests.test_detectors import result

START, END = date(2026, 11, 1), date(2026, 11, 8)


def at(day: int, hour: int) -> datetime:
    return datetime(2026, 11, day, hour, tzinfo=UTC)


def known(n: int, value: float, city: str, when: datetime, lab: str) -> object:
    r = result(n, value, city=city, lab_id=lab, sample_id=f"{lab}-{n}")
    return msgspec.structs.replace(r, sampled_at=when, tested_at=when + timedelta(hours=2), published_at=when + timedelta(hours=6),
                               result_id=result_id_for(lab, f"{lab}-{n}", "cadmium"))  # fmt: skip


@pytest.fixture
def loaded(store):
    """Period: Zibo 10 results (2 failing), Jinan 20 (1 failing). Previous week: Zibo 10, none failing."""
    rows = [known(n, 0.8 if n == 0 else 0.3 if n == 1 else 0.05 + 0.001 * n, "zibo", at(1 + n % 7, 10), "ZBQI") for n in range(10)]
    rows += [known(100 + n, 0.22 if n == 0 else 0.04 + 0.001 * n, "jinan", at(1 + n % 7, 12), "JNQI") for n in range(20)]
    rows += [known(200 + n, 0.05, "zibo", at(1, 8) - timedelta(days=1 + n % 6), "ZBQI") for n in range(10)]
    store.insert_results(rows)
    alerts = [a for r in rows if r.failing for a in LimitExceedance().process_one(r, at(8, 0))]
    assert sorted(a.severity.value for a in alerts) == ["not_serious", "potentially_serious", "serious"]
    cross = dataclasses.replace(alerts[0], alert_id="00000000-0000-0000-0000-0000000000cc", detector="cross_city", signal="x",
                                severity=Severity.POTENTIALLY_SERIOUS, cities=["jinan", "zibo"], explanation="2 cities", explanation_zh="两市")  # fmt: skip
    store.insert_alerts([*alerts, cross])
    serious = next(a for a in alerts if a.severity is Severity.SERIOUS)
    minor = next(a for a in alerts if a.severity is Severity.NOT_SERIOUS)
    set_status(store.client, serious.alert_id, "resolved", "test")
    set_status(store.client, minor.alert_id, "false_alarm", "test")
    return store.client


def text_of(html: str, element_id: str) -> str:
    return re.search(rf'id="{element_id}"[^>]*>([^<]*)<', html).group(1).strip()


def test_headline_rates_alerts_and_precision_are_the_stored_figures(loaded):
    bulletin = BulletinBuilder(loaded, START, END, lang="en").build()
    assert (bulletin.headline.results, bulletin.headline.failures, bulletin.headline.samples) == (30, 3, 30)
    assert bulletin.headline.rate == pytest.approx(0.1) and bulletin.headline.change == pytest.approx(0.1)
    assert [(c["code"], c["results"], c["failures"], round(c["rate"], 4)) for c in bulletin.by_city] == [("zibo", 10, 2, 0.2), ("jinan", 20, 1, 0.05)]
    assert bulletin.alert_counts == {"serious": 1, "potentially_serious": 2, "not_serious": 1}
    assert [(p["detector"], p["judged"], p["real"], p["false"], p["precision"]) for p in bulletin.precision] == [
        ("cross_city", 0, 0, 0, None), ("limit_exceedance", 2, 1, 1, 0.5)]  # fmt: skip
    assert bulletin.cross_city[0]["cities"] == "Jinan, Zibo"
    html = render(bulletin)
    assert text_of(html, "results") == "30" and text_of(html, "failure-rate") == "10.00 %" and text_of(html, "change") == "+10.0 pp"
    assert text_of(html, "alerts-serious") == "1"
    assert re.search(r'data-city="zibo"><td>Zibo</td><td class="num">10</td><td class="num">2</td><td class="num">20.00 %</td>', html)
    assert html.count("data:image/png;base64,") >= 2  # the city chart and Zibo's control chart
    assert "http://" not in html and "https://" not in html  # opens offline


def test_chinese_bulletin_uses_chinese_names_and_a_cjk_font_for_the_charts(loaded):
    assert _cjk_font() is not None, "install Debian's fonts-noto-cjk (make test does)"
    html = render(BulletinBuilder(loaded, START, END, lang="zh").build())
    assert "产品质量安全风险预警通报" in html and "淄博" in html and "济南" in html and "镉(以Cd计)" in html
    assert "为限量的4.00倍" in html  # the Chinese explanation of the serious alert
    assert "两市" in html


def test_a_city_filter_and_a_bad_period(loaded):
    bulletin = BulletinBuilder(loaded, START, END, cities=["jinan"], lang="en").build()
    assert (bulletin.headline.results, bulletin.headline.failures) == (20, 1)
    with pytest.raises(ValueError, match="--to must be after --from"):
        BulletinBuilder(loaded, END, START)


def test_the_lab_table_names_the_lab_reading_high_and_not_the_one_whose_city_makes_worse_products(store):
    rng = random.Random(3)
    labs = {"JNQI": "jinan", "ZBQI": "zibo", "TAQI": "taian", "LCQI": "liaocheng", "DZQI": "dezhou", "BZQI": "binzhou"}
    quality = {f"M{lab}": 1.5 if lab == "ZBQI" else 1.0 for lab in labs}  # Zibo's own maker is sloppy; its lab is fine
    rows = []
    for n in range(600):
        lab = sorted(labs)[n % len(labs)]
        maker = f"M{lab}" if rng.random() < 0.7 else rng.choice(sorted(quality))
        bias = 1.8 if lab == "DZQI" else 1.0  # Dezhou's lab reads 1.8× (calibration)
        value = 0.05 * quality[maker] * bias * rng.lognormvariate(0, 0.3)
        rows.append(msgspec.structs.replace(known(n, round(value, 5), labs[lab], at(1 + n % 7, n % 24), lab), manufacturer_uscc=maker))
    store.insert_results(rows)
    bulletin = BulletinBuilder(store.client, START, END, lang="en").build()
    [segment] = bulletin.lab_z
    flags = {entry["lab"]: entry["flag"] for entry in segment["labs"]}
    assert flags["DZQI"] == "bad" and flags["ZBQI"] != "bad"
    assert max(segment["labs"], key=lambda entry: abs(entry["z"]))["lab"] == "DZQI"
