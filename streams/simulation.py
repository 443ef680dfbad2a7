"""Synthetic lab reports from the seven cities, with scripted incidents. All marked synthetic.

Values are drawn per category × test item as a log-normal fraction of the regulatory limit
(most results sit far below it; a thin tail crosses it), scaled by a per-manufacturer quality
factor. Incidents, scheduled by report number so that they happen at any publishing rate,
bend those draws: contamination in some cities, values drifting towards the limit, one
manufacturer failing everywhere, a lab reading high, a lab going silent. Simulated time runs
at a realistic cadence (``reports_per_day``), not at the publishing rate.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from schemas.catalogue import CITIES
from schemas.results import result_id_for


@dataclass(frozen=True, slots=True)
class ItemProfile:
    test_item: str
    limit: float | None
    unit: str
    standard: str
    median_fraction: float = 0.15  # typical value as a fraction of the limit
    spread: float = 0.6  # sigma of log(value)
    limit_type: str = "max"
    detect_probability: float = 0.0  # qualitative items: chance of "detected"


@dataclass(frozen=True, slots=True)
class CategoryProfile:
    code: str
    products: tuple[str, ...]
    items: tuple[ItemProfile, ...]
    weight: float = 1.0


_P, _C = ItemProfile, CategoryProfile
_GB2762, _GB2761, _GB2763, _GB2760 = "GB 2762-2022", "GB 2761-2017", "GB 2763-2021", "GB 2760-2024"
CATEGORY_PROFILES: tuple[CategoryProfile, ...] = (
    _C("food/grain_products/rice", ("大米", "东北大米", "香米"), (
        _P("lead", 0.2, "mg/kg", _GB2762, 0.12), _P("cadmium", 0.2, "mg/kg", _GB2762, 0.2),
        _P("inorganic_arsenic", 0.35, "mg/kg", _GB2762, 0.2), _P("aflatoxin_b1", 10, "µg/kg", _GB2761, 0.08),
        _P("mercury", 0.02, "mg/kg", _GB2762, 0.1)), 2.0),
    _C("food/grain_products/wheat_flour", ("小麦粉", "高筋小麦粉", "饺子粉"), (
        _P("lead", 0.2, "mg/kg", _GB2762, 0.1), _P("cadmium", 0.1, "mg/kg", _GB2762, 0.15),
        _P("deoxynivalenol", 1000, "µg/kg", _GB2761, 0.2), _P("zearalenone", 60, "µg/kg", _GB2761, 0.1),
        _P("benzoic_acid", None, "g/kg", _GB2760, 0.0, detect_probability=0.001)), 2.0),
    _C("food/grain_products/corn_flour", ("玉米粉", "玉米糁"), (
        _P("aflatoxin_b1", 20, "µg/kg", _GB2761, 0.1), _P("zearalenone", 60, "µg/kg", _GB2761, 0.15),
        _P("lead", 0.2, "mg/kg", _GB2762, 0.1))),
    _C("food/edible_oils/peanut_oil", ("压榨花生油", "浓香花生油"), (
        _P("aflatoxin_b1", 20, "µg/kg", _GB2761, 0.1), _P("acid_value", 3, "mg/g", "GB 2716-2018", 0.2),
        _P("peroxide_value", 0.25, "g/100g", "GB 2716-2018", 0.2), _P("lead", 0.08, "mg/kg", _GB2762, 0.15)), 1.5),
    _C("food/edible_oils/blended_oil", ("食用植物调和油",), (
        _P("acid_value", 3, "mg/g", "GB 2716-2018", 0.2), _P("peroxide_value", 0.25, "g/100g", "GB 2716-2018", 0.2),
        _P("lead", 0.08, "mg/kg", _GB2762, 0.12))),
    _C("food/vegetables/leafy", ("菠菜", "油菜", "小白菜", "生菜"), (
        _P("lead", 0.3, "mg/kg", _GB2762, 0.1), _P("cadmium", 0.2, "mg/kg", _GB2762, 0.12),
        _P("chlorpyrifos", 0.02, "mg/kg", _GB2763, 0.08, 0.9), _P("omethoate", 0.02, "mg/kg", _GB2763, 0.06, 0.9)), 2.0),
    _C("food/vegetables/celery", ("芹菜", "西芹"), (
        _P("chlorpyrifos", 0.05, "mg/kg", _GB2763, 0.1, 0.9), _P("procymidone", 5, "mg/kg", _GB2763, 0.05, 0.8),
        _P("lead", 0.1, "mg/kg", _GB2762, 0.12), _P("cadmium", 0.05, "mg/kg", _GB2762, 0.15)), 1.5),
    _C("food/vegetables/leek", ("韭菜",), (
        _P("procymidone", 0.2, "mg/kg", _GB2763, 0.1, 0.9), _P("carbofuran", 0.02, "mg/kg", _GB2763, 0.05, 0.9),
        _P("chlorpyrifos", 0.02, "mg/kg", _GB2763, 0.08, 0.9), _P("cadmium", 0.05, "mg/kg", _GB2762, 0.15)), 1.5),
    _C("food/fruit/fresh", ("苹果", "梨", "桃", "葡萄"), (
        _P("chlorpyrifos", 1, "mg/kg", _GB2763, 0.02, 0.9), _P("procymidone", 5, "mg/kg", _GB2763, 0.02, 0.9),
        _P("lead", 0.1, "mg/kg", _GB2762, 0.1))),
    _C("food/aquatic/freshwater_fish", ("鲤鱼", "草鱼", "鲫鱼"), (
        _P("malachite_green", None, "µg/kg", "农业农村部公告第250号", 0, detect_probability=0.002),
        _P("enrofloxacin", 100, "µg/kg", "GB 31650-2019", 0.1, 0.9), _P("mercury", 0.5, "mg/kg", _GB2762, 0.06),
        _P("chloramphenicol", None, "µg/kg", "农业农村部公告第250号", 0, detect_probability=0.001)), 1.5),
    _C("food/meat/pork", ("猪肉", "猪后腿肉"), (
        _P("enrofloxacin", 100, "µg/kg", "GB 31650-2019", 0.05, 0.9), _P("lead", 0.2, "mg/kg", _GB2762, 0.1),
        _P("chloramphenicol", None, "µg/kg", "农业农村部公告第250号", 0, detect_probability=0.001))),
    _C("food/meat/cooked", ("酱牛肉", "卤猪头肉", "烤鸡"), (
        _P("salmonella", None, "CFU/g", "GB 29921-2021", 0, detect_probability=0.002),
        _P("listeria", None, "CFU/g", "GB 29921-2021", 0, detect_probability=0.001),
        _P("coliforms", 100, "CFU/g", "GB 2726-2016", 0.08, 1.0), _P("sorbic_acid", 0.075, "g/kg", _GB2760, 0.2))),
    _C("food/dairy/infant_formula", ("婴儿配方乳粉(0-6月龄)", "较大婴儿配方乳粉"), (
        _P("salmonella", None, "CFU/g", "GB 10765-2021", 0, detect_probability=0.0005),
        _P("aflatoxin_b1", 0.5, "µg/kg", _GB2761, 0.05), _P("lead", 0.02, "mg/kg", _GB2762, 0.1),
        _P("aerobic_count", 1000, "CFU/g", "GB 10765-2021", 0.05, 1.0))),
    _C("food/condiments/soy_sauce", ("酿造酱油", "生抽", "老抽"), (
        _P("benzoic_acid", 1.0, "g/kg", _GB2760, 0.2), _P("sorbic_acid", 1.0, "g/kg", _GB2760, 0.2),
        _P("aerobic_count", 30000, "CFU/g", "GB 2717-2018", 0.05, 1.0))),
    _C("food/condiments/chili_sauce", ("辣椒酱", "剁辣椒"), (
        _P("sudan_red", None, "mg/kg", "整顿办函〔2011〕1号", 0, detect_probability=0.0008),
        _P("benzoic_acid", 1.0, "g/kg", _GB2760, 0.2), _P("sodium_cyclamate", 0.65, "g/kg", _GB2760, 0.1))),
    _C("food/beverages/fruit_juice", ("橙汁饮料", "苹果汁"), (
        _P("benzoic_acid", 1.0, "g/kg", _GB2760, 0.1), _P("sodium_cyclamate", 0.65, "g/kg", _GB2760, 0.05),
        _P("coliforms", 10, "CFU/mL", "GB 7101-2022", 0.1, 1.0)), 1.0),
    _C("food/pastries/bread", ("吐司面包", "全麦面包"), (
        _P("aluminium", 100, "mg/kg", _GB2760, 0.1), _P("sorbic_acid", 1.0, "g/kg", _GB2760, 0.15),
        _P("aerobic_count", 10000, "CFU/g", "GB 7099-2015", 0.08, 1.0))),
    _C("food/fried/dough_sticks", ("油条",), (
        _P("aluminium", 100, "mg/kg", _GB2760, 0.25, 0.7),)),
    _C("food/preserved/dried_fruit", ("杏脯", "话梅", "葡萄干"), (
        _P("sulfur_dioxide", 0.35, "g/kg", _GB2760, 0.15), _P("sodium_cyclamate", 1.0, "g/kg", _GB2760, 0.1),
        _P("benzoic_acid", 0.5, "g/kg", _GB2760, 0.1))),
    _C("food/liquor/baijiu", ("浓香型白酒", "酱香型白酒"), (
        _P("methanol", 2.0, "g/L", "GB 2757-2012", 0.15), _P("sodium_cyclamate", None, "g/kg", _GB2760, 0, detect_probability=0.002))),
    _C("industrial/childrens_products/toys", ("塑胶玩具", "毛绒玩具", "儿童滑板车"), (
        _P("phthalates_dehp_dbp_bbp", 0.1, "%", "GB 6675.1-2014", 0.1, 1.0), _P("migrated_lead", 90, "mg/kg", "GB 6675.4-2014", 0.05)), 1.5),
    _C("industrial/childrens_products/clothing", ("婴幼儿连体衣", "儿童T恤", "儿童羽绒服"), (
        _P("formaldehyde", 20, "mg/kg", "GB 31701-2015", 0.2, 0.7), _P("aromatic_amines", None, "mg/kg", "GB 18401-2010", 0, detect_probability=0.0005)), 1.5),
    _C("industrial/childrens_products/stationery", ("儿童橡皮擦", "水彩笔"), (
        _P("phthalates_dehp_dbp_bbp", 0.1, "%", "GB 21027-2020", 0.1, 1.0), _P("migrated_lead", 90, "mg/kg", "GB 21027-2020", 0.05))),
    _C("industrial/textiles/bedding", ("纯棉四件套", "夏凉被"), (
        _P("formaldehyde", 75, "mg/kg", "GB 18401-2010", 0.15), _P("aromatic_amines", None, "mg/kg", "GB 18401-2010", 0, detect_probability=0.0005))),
    _C("industrial/building/coatings", ("内墙乳胶漆",), (
        _P("vocs", 80, "g/L", "GB 18582-2020", 0.3, 0.5), _P("formaldehyde", 50, "mg/kg", "GB 18582-2020", 0.1))),
    _C("industrial/building/adhesives", ("瓷砖胶", "白乳胶"), (
        _P("benzene", 0.1, "g/kg", "GB 33372-2020", 0.1), _P("vocs", 50, "g/L", "GB 33372-2020", 0.3, 0.5))),
    _C("industrial/fuel/diesel", ("0号车用柴油",), (
        _P("sulfur_content", 10, "mg/kg", "GB 19147-2016", 0.5, 0.3), _P("cetane_number", 51, "1", "GB 19147-2016", 1.08, 0.02, "min"))),
    _C("industrial/food_contact/plastic_tableware", ("密胺餐具", "塑料饭盒"), (
        _P("formaldehyde", 15, "mg/kg", "GB 4806.7-2023", 0.1), _P("migrated_lead", 1, "mg/kg", "GB 4806.7-2023", 0.05))),
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Lab:
    id: str
    name: str
    city: str


LABS: tuple[Lab, ...] = (
    Lab("JNQI", "济南市产品质量检验院", "jinan"),
    Lab("JNFD", "济南市食品药品检验检测中心", "jinan"),
    Lab("ZBQI", "淄博市产品质量检验研究院", "zibo"),
    Lab("TAQI", "泰安市产品质量监督检验所", "taian"),
    Lab("LCQI", "聊城市产品质量监督检验所", "liaocheng"),
    Lab("DZQI", "德州市产品质量检验所", "dezhou"),
    Lab("BZQI", "滨州市检验检测中心", "binzhou"),
    Lab("DYQI", "东营市产品质量检验所", "dongying"),
)

_REGION_CODES = {
    "jinan": "370100", "zibo": "370300", "taian": "370900", "liaocheng": "371500",
    "dezhou": "371400", "binzhou": "371600", "dongying": "370500",
}  # fmt: skip
_USCC_ALPHABET = "0123456789ABCDEFGHJKLMNPQRTUWXY"
_USCC_WEIGHTS = (1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28)


def uscc_check_character(first17: str) -> str:
    """GB 32100-2015 check character of a unified social credit code."""
    total = sum(_USCC_ALPHABET.index(ch) * w for ch, w in zip(first17, _USCC_WEIGHTS, strict=True))
    return _USCC_ALPHABET[(31 - total % 31) % 31]


@dataclass(frozen=True, slots=True)
class Manufacturer:
    name: str
    uscc: str
    city: str
    trade: str
    quality: float  # multiplies value draws; > 1 is a sloppier maker

    @property
    def risky(self) -> bool:
        """Its products are drawn at ≥ ``RISKY_QUALITY`` × the typical level: a standing risk, not noise."""
        return self.quality >= RISKY_QUALITY


# Makers' quality factors are log-normal (σ 0.25), so about 1 maker in 20 reaches 1.5×: its
# products fail several times as often as its trade's on every item, in every city it sells in,
# all the time. An alert about such a maker is the manufacturer detector doing its job.
RISKY_QUALITY = 1.5


_NAME_CORES = ("鲁丰", "泉城", "齐鲁", "金穗", "华康", "信诚", "恒源", "瑞禾", "宏达", "泰山", "黄河", "惠民", "福瑞", "嘉和", "润生", "鑫源")
# The trade in a maker's name, by the second level of the category path.
_TRADES = {
    "grain_products": "粮油", "edible_oils": "粮油", "vegetables": "果蔬", "fruit": "果蔬", "aquatic": "水产",
    "meat": "肉类食品", "dairy": "乳业", "condiments": "调味品", "beverages": "饮品", "pastries": "食品",
    "fried": "餐饮管理", "preserved": "食品", "liquor": "酒业", "childrens_products": "儿童用品",
    "textiles": "纺织", "building": "建材", "fuel": "石化", "food_contact": "塑料制品",
}  # fmt: skip


def trade_of(category: str) -> str:
    return _TRADES.get(category.split("/")[1] if "/" in category else category, "实业")


def _manufacturers(rng: random.Random, per_trade: int = 14) -> list[Manufacturer]:
    makers: list[Manufacturer] = []
    cities = list(CITIES)
    for trade in sorted(set(_TRADES.values())):
        names: set[str] = set()
        while len(names) < per_trade:
            city = rng.choice(cities)
            name = f"{CITIES[city].zh}{rng.choice(_NAME_CORES)}{trade}有限公司"
            if name in names:
                continue
            names.add(name)
            body = "91" + _REGION_CODES[city] + "".join(rng.choice(_USCC_ALPHABET) for _ in range(9))
            quality = math.exp(rng.gauss(0.0, 0.25))
            makers.append(Manufacturer(name, body + uscc_check_character(body), city, trade, quality))
    return makers


@dataclass(frozen=True, slots=True)
class Incident:
    """A scripted change to the draws, active for reports [start, start + length).

    kinds: contamination (values × factor in some cities, for a share of samples), drift
    (× 1 → factor over the incident), combination (several items of one sample × factor
    together), manufacturer (one maker's products × factor everywhere), lab_bias (one lab's
    values × factor), silent_lab (one lab publishes nothing). ``detector`` names the detector
    expected to catch it, for the benchmark.
    """

    kind: str
    start: int
    length: int
    category: str = ""
    test_item: str = ""
    cities: tuple[str, ...] = ()
    factor: float = 1.0  # value multiplier (drift: reached at the end)
    probability: float = 1.0  # share of matching samples affected
    lab: str = ""
    manufacturer_index: int = 0
    items: tuple[str, ...] = ()  # combination: the items raised together
    description: str = ""
    detector: str = ""

    def active(self, index: int) -> bool:
        return self.start <= index < self.start + self.length

    def progress(self, index: int) -> float:
        return (index - self.start) / max(self.length, 1)


DEFAULT_INCIDENTS: tuple[Incident, ...] = (
    Incident("contamination", 300, 1500, "food/grain_products/rice", "cadmium", ("zibo", "binzhou", "dongying"), 6.0, 0.6,
             description="cadmium in rice from Zibo, Binzhou and Dongying (a shared paddy region)", detector="cross_city"),
    Incident("drift", 200, 2400, "food/edible_oils/peanut_oil", "aflatoxin_b1", ("liaocheng", "dezhou"), 7.0,
             description="aflatoxin B1 in peanut oil creeping up in Liaocheng and Dezhou (poor storage after a wet harvest)",
             detector="limit_drift"),
    Incident("manufacturer", 500, 2000, "industrial/childrens_products/clothing", "formaldehyde", (), 4.0, 0.8, manufacturer_index=7,
             description="one clothing maker's formaldehyde over the limit wherever its products are sampled", detector="manufacturer"),
    Incident("lab_bias", 0, 10**9, "food/vegetables/leafy", "lead", (), 1.8, lab="DZQI",
             description="Dezhou's lab reads lead in leafy vegetables high (calibration)", detector="lab_bias"),
    Incident("silent_lab", 1200, 900, lab="TAQI", description="Tai'an's lab stops publishing (LIMS export broken)", detector="silent_lab"),
)  # fmt: skip


@dataclass(slots=True)
class Simulator:
    """Endless stream of lab reports (dicts matching lab_report.v1), reproducible from the seed.

    ``labels`` maps the result id of every value an incident changed to that incident's
    index, and ``silences`` each silent-lab incident to its (start, end) in simulated time:
    the ground truth a benchmark scores detectors against.
    """

    seed: int = 7
    start: datetime | None = None
    reports_per_day: float = 1500.0
    incidents: tuple[Incident, ...] = DEFAULT_INCIDENTS
    rng: random.Random = field(init=False)
    manufacturers: list[Manufacturer] = field(init=False)
    index: int = field(init=False, default=0)
    clock: datetime = field(init=False)
    labels: dict[str, int] = field(init=False, default_factory=dict)
    silences: dict[int, list[datetime]] = field(init=False, default_factory=dict)
    _sequence: dict[str, int] = field(init=False, default_factory=dict)
    _weights: list[float] = field(init=False, default_factory=list)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.manufacturers = _manufacturers(self.rng)
        self.clock = self.start or datetime.now(UTC) - timedelta(days=30)
        self._weights = [c.weight for c in CATEGORY_PROFILES]

    def __iter__(self) -> Iterator[dict[str, Any]]:
        while True:
            yield self.next_report()

    def next_report(self) -> dict[str, Any]:
        rng, index = self.rng, self.index
        self.index += 1
        self.clock = min(self.clock + timedelta(seconds=rng.expovariate(self.reports_per_day / 86400)), datetime.now(UTC))
        self._track_silences(index)
        profile = rng.choices(CATEGORY_PROFILES, self._weights)[0]
        lab = self._pick_lab(index)
        maker = self._pick_maker(index, profile, lab)
        sampled = self.clock - timedelta(hours=rng.uniform(48, 120))
        tested = sampled + timedelta(hours=rng.uniform(4, 36))
        seq = self._sequence[lab.id] = self._sequence.get(lab.id, 0) + 1
        sample_id = f"{lab.id}{sampled:%Y%m%d}{seq:06d}"
        together = self._combinations(index, profile, lab)
        items = [self._item(item, profile, lab, maker, index, sample_id, together) for item in profile.items]
        local = timedelta(hours=8)
        return {
            "schema": "riskwatch.lab_report.v1",
            "report_id": f"{lab.id}-{sampled:%Y}-{seq:06d}",
            "sample_id": sample_id,
            "lab": {"id": lab.id, "name": lab.name},
            "city": lab.city,
            "programme": rng.choices(
                ("national_supervision", "provincial_supervision", "city_supervision", "risk_monitoring"), (1, 2, 4, 2)
            )[0],
            "category": profile.code,
            "product_name": rng.choice(profile.products),
            "manufacturer": {"name": maker.name, "uscc": maker.uscc},
            "sampling_site": {
                "name": f"{CITIES[lab.city].zh}{rng.choice(('银座', '大润发', '家家悦', '农贸市场', '华联'))}{rng.randint(1, 40)}号店",
                "kind": rng.choices(("distribution", "production", "catering", "e_commerce"), (6, 2, 1, 1))[0],
            },
            "sampled_at": _rfc3339(sampled, local),
            "tested_at": _rfc3339(tested, local),
            "published_at": _rfc3339(self.clock, local),
            "synthetic": True,
            "items": items,
        }

    def _track_silences(self, index: int) -> None:
        for number, incident in enumerate(self.incidents):
            if incident.kind != "silent_lab":
                continue
            if incident.active(index) and number not in self.silences:
                self.silences[number] = [self.clock, self.clock]
            elif number in self.silences and incident.active(index):
                self.silences[number][1] = self.clock

    def _active(self, kind: str, index: int) -> list[Incident]:
        return [i for i in self.incidents if i.kind == kind and i.active(index)]

    def _pick_lab(self, index: int) -> Lab:
        silent = {i.lab for i in self._active("silent_lab", index)}
        return self.rng.choice([lab for lab in LABS if lab.id not in silent])

    def _pick_maker(self, index: int, profile: CategoryProfile, lab: Lab) -> Manufacturer:
        for incident in self._active("manufacturer", index):
            if incident.category == profile.code and self.rng.random() < 0.5:
                return self.incident_maker(incident)
        trade = [m for m in self.manufacturers if m.trade == trade_of(profile.code)]
        local = [m for m in trade if m.city == lab.city]
        return self.rng.choice(local if local and self.rng.random() < 0.7 else trade)

    def incident_maker(self, incident: Incident) -> Manufacturer:
        """The maker a manufacturer incident is about: the n-th of the category's trade."""
        trade = [m for m in self.manufacturers if m.trade == trade_of(incident.category)]
        return trade[incident.manufacturer_index % len(trade)]

    def _combinations(self, index: int, profile: CategoryProfile, lab: Lab) -> dict[str, tuple[int, float]]:
        """Items raised together in this sample by a combination incident: item → (incident, factor)."""
        raised: dict[str, tuple[int, float]] = {}
        for number, incident in enumerate(self.incidents):
            if incident.kind != "combination" or not incident.active(index) or incident.category != profile.code:
                continue
            if (not incident.cities or lab.city in incident.cities) and self.rng.random() < incident.probability:
                for item in incident.items:
                    raised[item] = (number, incident.factor * self.rng.uniform(0.85, 1.15))
        return raised

    def _multiplier(self, item: ItemProfile, profile: CategoryProfile, lab: Lab, maker: Manufacturer, index: int) -> tuple[float, int | None]:
        factor, cause = maker.quality, None
        for number, incident in enumerate(self.incidents):
            if not incident.active(index) or incident.category != profile.code or incident.test_item != item.test_item:
                continue
            if incident.kind == "contamination" and lab.city in incident.cities and self.rng.random() < incident.probability:
                factor *= incident.factor * self.rng.uniform(0.7, 1.3)
            elif incident.kind == "drift" and lab.city in incident.cities:
                factor *= 1 + (incident.factor - 1) * incident.progress(index)
            elif incident.kind == "manufacturer" and maker is self.incident_maker(incident):
                if self.rng.random() >= incident.probability:
                    continue
                factor *= incident.factor * self.rng.uniform(0.8, 1.2)
            elif incident.kind == "lab_bias" and lab.id == incident.lab:
                factor *= incident.factor
            else:
                continue
            cause = number
        return factor, cause

    def _item(
        self, item: ItemProfile, profile: CategoryProfile, lab: Lab, maker: Manufacturer, index: int, sample_id: str,
        together: dict[str, tuple[int, float]],
    ) -> dict[str, Any]:  # fmt: skip
        rng = self.rng
        base: dict[str, Any] = {"test_item": item.test_item, "standard": item.standard}
        if item.limit is None:  # must not be detected
            detected = rng.random() < item.detect_probability * maker.quality
            base.update(qualitative="detected" if detected else "not_detected", verdict="fail" if detected else "pass")
            return base
        factor, cause = self._multiplier(item, profile, lab, maker, index)
        if item.test_item in together:
            cause, extra = together[item.test_item]
            factor *= extra
        if cause is not None:
            self.labels[result_id_for(lab.id, sample_id, item.test_item)] = cause
        if item.limit_type == "min":  # e.g. cetane number: incidents do not move these
            value = _round(item.limit * item.median_fraction * math.exp(rng.gauss(0, item.spread)))
            failed = value < item.limit
        else:
            value = _round(item.limit * item.median_fraction * math.exp(rng.gauss(0, item.spread)) * factor)
            failed = value > item.limit
        lod = item.limit * 0.02
        base.update(unit=item.unit, limit=item.limit, lod=_round(lod), verdict="fail" if failed else "pass")
        if item.limit_type == "min":
            base["limit_type"] = "min"
        if value < lod:
            base.update(value=None, qualitative="not_detected")
        else:
            base["value"] = value
        return base


def _round(value: float) -> float:
    """Three significant figures, as a lab would report."""
    return float(f"{value:.3g}")


def _rfc3339(ts: datetime, offset: timedelta) -> str:
    return ts.astimezone(timezone(offset)).isoformat(timespec="seconds")
