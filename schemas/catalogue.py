"""Shared vocabulary of the alliance: cities, test items and product categories.

Labs send codes (``zibo``, ``lead``, ``food/grain_products/rice``); people read names.
The test-item catalogue also fixes each item's canonical unit so that values from
different labs are comparable. Items and categories outside the catalogue are accepted
(labs test far more than any list holds); they keep the code as their name and the base
unit of the dimension they were reported in.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from schemas.units import UNITS, Unit


@dataclass(frozen=True, slots=True)
class City:
    code: str
    zh: str
    en: str


CITIES: dict[str, City] = {
    c.code: c
    for c in (
        City("jinan", "济南", "Jinan"),
        City("zibo", "淄博", "Zibo"),
        City("taian", "泰安", "Tai'an"),
        City("liaocheng", "聊城", "Liaocheng"),
        City("dezhou", "德州", "Dezhou"),
        City("binzhou", "滨州", "Binzhou"),
        City("dongying", "东营", "Dongying"),
    )
}


class Hazard(StrEnum):
    """Hazard class of a test item; pathogens and prohibited substances are serious when found."""

    HEAVY_METAL = "heavy_metal"
    MYCOTOXIN = "mycotoxin"
    PESTICIDE = "pesticide"
    VETERINARY_DRUG = "veterinary_drug"
    ADDITIVE = "additive"
    PROHIBITED = "prohibited"
    PATHOGEN = "pathogen"
    HYGIENE = "hygiene"
    CHEMICAL = "chemical"
    QUALITY = "quality"
    SAFETY = "safety"


SERIOUS_WHEN_DETECTED = frozenset({Hazard.PATHOGEN, Hazard.PROHIBITED})


@dataclass(frozen=True, slots=True)
class TestItem:
    __test__ = False  # not a pytest test class

    code: str
    zh: str
    en: str
    unit: str  # canonical unit symbol
    hazard: Hazard

    @property
    def canonical_unit(self) -> Unit:
        return UNITS[self.unit]


_H = Hazard
TEST_ITEMS: dict[str, TestItem] = {
    t.code: t
    for t in (
        TestItem("lead", "铅(以Pb计)", "lead (as Pb)", "mg/kg", _H.HEAVY_METAL),
        TestItem("cadmium", "镉(以Cd计)", "cadmium (as Cd)", "mg/kg", _H.HEAVY_METAL),
        TestItem("mercury", "总汞(以Hg计)", "total mercury (as Hg)", "mg/kg", _H.HEAVY_METAL),
        TestItem("inorganic_arsenic", "无机砷(以As计)", "inorganic arsenic (as As)", "mg/kg", _H.HEAVY_METAL),
        TestItem("chromium", "铬(以Cr计)", "chromium (as Cr)", "mg/kg", _H.HEAVY_METAL),
        TestItem("aflatoxin_b1", "黄曲霉毒素B1", "aflatoxin B1", "µg/kg", _H.MYCOTOXIN),
        TestItem("deoxynivalenol", "脱氧雪腐镰刀菌烯醇", "deoxynivalenol", "µg/kg", _H.MYCOTOXIN),
        TestItem("zearalenone", "玉米赤霉烯酮", "zearalenone", "µg/kg", _H.MYCOTOXIN),
        TestItem("chlorpyrifos", "毒死蜱", "chlorpyrifos", "mg/kg", _H.PESTICIDE),
        TestItem("procymidone", "腐霉利", "procymidone", "mg/kg", _H.PESTICIDE),
        TestItem("omethoate", "氧乐果", "omethoate", "mg/kg", _H.PESTICIDE),
        TestItem("carbofuran", "克百威", "carbofuran", "mg/kg", _H.PESTICIDE),
        TestItem("enrofloxacin", "恩诺沙星", "enrofloxacin", "µg/kg", _H.VETERINARY_DRUG),
        TestItem("malachite_green", "孔雀石绿", "malachite green", "µg/kg", _H.PROHIBITED),
        TestItem("chloramphenicol", "氯霉素", "chloramphenicol", "µg/kg", _H.PROHIBITED),
        TestItem("sudan_red", "苏丹红", "Sudan red", "mg/kg", _H.PROHIBITED),
        TestItem("benzoic_acid", "苯甲酸及其钠盐(以苯甲酸计)", "benzoic acid and its sodium salt", "g/kg", _H.ADDITIVE),
        TestItem("sorbic_acid", "山梨酸及其钾盐(以山梨酸计)", "sorbic acid and its potassium salt", "g/kg", _H.ADDITIVE),
        TestItem("sulfur_dioxide", "二氧化硫残留量", "sulfur dioxide residue", "g/kg", _H.ADDITIVE),
        TestItem("sodium_cyclamate", "甜蜜素(以环己基氨基磺酸计)", "sodium cyclamate", "g/kg", _H.ADDITIVE),
        TestItem("aluminium", "铝的残留量(干样品,以Al计)", "aluminium residue (dry, as Al)", "mg/kg", _H.ADDITIVE),
        TestItem("acid_value", "酸价(以脂肪计)(KOH)", "acid value (KOH, of fat)", "mg/g", _H.QUALITY),
        TestItem("peroxide_value", "过氧化值(以脂肪计)", "peroxide value (of fat)", "g/100g", _H.QUALITY),
        TestItem("salmonella", "沙门氏菌", "Salmonella", "CFU/g", _H.PATHOGEN),
        TestItem("listeria", "单核细胞增生李斯特氏菌", "Listeria monocytogenes", "CFU/g", _H.PATHOGEN),
        TestItem("coliforms", "大肠菌群", "coliforms", "CFU/g", _H.HYGIENE),
        TestItem("aerobic_count", "菌落总数", "aerobic plate count", "CFU/g", _H.HYGIENE),
        TestItem("phthalates_dehp_dbp_bbp", "邻苯二甲酸酯(DEHP+DBP+BBP)", "phthalates (DEHP+DBP+BBP)", "%", _H.CHEMICAL),
        TestItem("formaldehyde", "甲醛含量", "formaldehyde content", "mg/kg", _H.CHEMICAL),
        TestItem("aromatic_amines", "可分解致癌芳香胺染料", "carcinogenic aromatic amines", "mg/kg", _H.PROHIBITED),
        TestItem("ph_value", "pH值", "pH value", "1", _H.QUALITY),
        TestItem("migrated_lead", "可迁移元素铅", "migratable lead", "mg/kg", _H.HEAVY_METAL),
        TestItem("benzene", "苯", "benzene", "g/kg", _H.CHEMICAL),
        TestItem("vocs", "挥发性有机化合物(VOCs)", "volatile organic compounds", "g/L", _H.CHEMICAL),
        TestItem("sulfur_content", "硫含量", "sulfur content", "mg/kg", _H.CHEMICAL),
        TestItem("methanol", "甲醇", "methanol", "g/L", _H.CHEMICAL),
        TestItem("cetane_number", "十六烷值", "cetane number", "1", _H.QUALITY),
    )
}


@dataclass(frozen=True, slots=True)
class Category:
    code: str  # path, "/"-separated, broadest first
    zh: str
    en: str


CATEGORIES: dict[str, Category] = {
    c.code: c
    for c in (
        Category("food/grain_products/rice", "食品›粮食加工品›大米", "food › grain products › rice"),
        Category("food/grain_products/wheat_flour", "食品›粮食加工品›小麦粉", "food › grain products › wheat flour"),
        Category("food/grain_products/corn_flour", "食品›粮食加工品›玉米粉", "food › grain products › corn flour"),
        Category("food/edible_oils/peanut_oil", "食品›食用油›花生油", "food › edible oils › peanut oil"),
        Category("food/edible_oils/blended_oil", "食品›食用油›食用植物调和油", "food › edible oils › blended oil"),
        Category("food/vegetables/leafy", "食品›蔬菜›叶菜类", "food › vegetables › leafy vegetables"),
        Category("food/vegetables/celery", "食品›蔬菜›芹菜", "food › vegetables › celery"),
        Category("food/vegetables/leek", "食品›蔬菜›韭菜", "food › vegetables › Chinese leek"),
        Category("food/fruit/fresh", "食品›水果›鲜果", "food › fruit › fresh fruit"),
        Category("food/aquatic/freshwater_fish", "食品›水产品›淡水鱼", "food › aquatic products › freshwater fish"),
        Category("food/meat/pork", "食品›肉制品›猪肉", "food › meat › pork"),
        Category("food/meat/cooked", "食品›肉制品›熟肉制品", "food › meat › cooked meat products"),
        Category("food/dairy/infant_formula", "食品›乳制品›婴幼儿配方乳粉", "food › dairy › infant formula"),
        Category("food/condiments/soy_sauce", "食品›调味品›酱油", "food › condiments › soy sauce"),
        Category("food/condiments/chili_sauce", "食品›调味品›辣椒酱", "food › condiments › chili sauce"),
        Category("food/beverages/fruit_juice", "食品›饮料›果汁饮料", "food › beverages › fruit juice drinks"),
        Category("food/pastries/bread", "食品›糕点›面包", "food › pastries › bread"),
        Category("food/fried/dough_sticks", "食品›餐饮食品›油条", "food › catering › fried dough sticks"),
        Category("food/preserved/dried_fruit", "食品›水果制品›蜜饯果干", "food › fruit products › preserved fruit"),
        Category("food/liquor/baijiu", "食品›酒类›白酒", "food › liquor › baijiu"),
        Category("industrial/childrens_products/toys", "工业产品›儿童用品›玩具", "industrial › children's products › toys"),
        Category("industrial/childrens_products/clothing", "工业产品›儿童用品›童装", "industrial › children's products › clothing"),
        Category("industrial/childrens_products/stationery", "工业产品›儿童用品›学生文具", "industrial › children's products › stationery"),
        Category("industrial/textiles/bedding", "工业产品›纺织品›床上用品", "industrial › textiles › bedding"),
        Category("industrial/building/coatings", "工业产品›建材›内墙涂料", "industrial › building materials › interior coatings"),
        Category("industrial/building/adhesives", "工业产品›建材›胶粘剂", "industrial › building materials › adhesives"),
        Category("industrial/fuel/diesel", "工业产品›燃料›车用柴油", "industrial › fuel › automotive diesel"),
        Category("industrial/food_contact/plastic_tableware", "工业产品›食品相关产品›塑料餐具", "industrial › food contact › plastic tableware"),
    )
}


def city_name(code: str, lang: str = "en") -> str:
    city = CITIES.get(code)
    return code if city is None else (city.zh if lang == "zh" else city.en)


def test_item_name(code: str, lang: str = "en") -> str:
    item = TEST_ITEMS.get(code)
    return code.replace("_", " ") if item is None else (item.zh if lang == "zh" else item.en)


def category_name(code: str, lang: str = "en") -> str:
    category = CATEGORIES.get(code)
    if category is not None:
        return category.zh if lang == "zh" else category.en
    return " › ".join(part.replace("_", " ") for part in code.split("/"))
