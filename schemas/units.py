"""Units labs write, and how to convert between units of the same dimension.

Labs in the alliance report the same test item in different units (lead in mg/kg or
µg/kg, benzoic acid in g/kg or mg/kg, a phthalate in % or mg/kg). Detectors compare
values across labs, so every value is converted to one canonical unit per test item.
Conversion is only possible within one dimension; a unit of another dimension is an error.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache


class Dimension(StrEnum):
    MASS_FRACTION = "mass_fraction"  # mass of analyte per mass of sample
    MASS_CONCENTRATION = "mass_concentration"  # mass of analyte per volume of sample
    COLONY_COUNT_MASS = "colony_count_mass"  # CFU or MPN per gram
    COLONY_COUNT_VOLUME = "colony_count_volume"  # CFU or MPN per millilitre
    DIMENSIONLESS = "dimensionless"  # pH, ratios


@dataclass(frozen=True, slots=True)
class Unit:
    symbol: str  # canonical spelling
    dimension: Dimension
    factor: float  # multiply a value in this unit by factor to get the dimension's base unit


# Base units: mg/kg, mg/L, CFU/g, CFU/mL, 1.
_UNITS: tuple[Unit, ...] = (
    Unit("mg/kg", Dimension.MASS_FRACTION, 1.0),
    Unit("µg/kg", Dimension.MASS_FRACTION, 1e-3),
    Unit("ng/g", Dimension.MASS_FRACTION, 1e-3),
    Unit("ng/kg", Dimension.MASS_FRACTION, 1e-6),
    Unit("µg/g", Dimension.MASS_FRACTION, 1.0),
    Unit("mg/g", Dimension.MASS_FRACTION, 1e3),
    Unit("g/kg", Dimension.MASS_FRACTION, 1e3),
    Unit("mg/100g", Dimension.MASS_FRACTION, 10.0),
    Unit("g/100g", Dimension.MASS_FRACTION, 1e4),
    Unit("%", Dimension.MASS_FRACTION, 1e4),
    Unit("ppm", Dimension.MASS_FRACTION, 1.0),
    Unit("ppb", Dimension.MASS_FRACTION, 1e-3),
    Unit("mg/L", Dimension.MASS_CONCENTRATION, 1.0),
    Unit("µg/L", Dimension.MASS_CONCENTRATION, 1e-3),
    Unit("ng/mL", Dimension.MASS_CONCENTRATION, 1e-3),
    Unit("µg/mL", Dimension.MASS_CONCENTRATION, 1.0),
    Unit("mg/mL", Dimension.MASS_CONCENTRATION, 1e3),
    Unit("g/L", Dimension.MASS_CONCENTRATION, 1e3),
    Unit("mg/100mL", Dimension.MASS_CONCENTRATION, 10.0),
    Unit("CFU/g", Dimension.COLONY_COUNT_MASS, 1.0),
    Unit("MPN/g", Dimension.COLONY_COUNT_MASS, 1.0),
    Unit("MPN/100g", Dimension.COLONY_COUNT_MASS, 1e-2),
    Unit("CFU/mL", Dimension.COLONY_COUNT_VOLUME, 1.0),
    Unit("MPN/mL", Dimension.COLONY_COUNT_VOLUME, 1.0),
    Unit("MPN/100mL", Dimension.COLONY_COUNT_VOLUME, 1e-2),
    Unit("1", Dimension.DIMENSIONLESS, 1.0),
    Unit("pH", Dimension.DIMENSIONLESS, 1.0),
)

# Other spellings seen in LIMS exports (ASCII "u", Greek mu, Chinese names, case variants).
_ALIASES: dict[str, str] = {
    "ug/kg": "µg/kg",
    "μg/kg": "µg/kg",  # Greek small letter mu (U+03BC) instead of micro sign (U+00B5)
    "ug/g": "µg/g",
    "μg/g": "µg/g",
    "ug/l": "µg/L",
    "μg/l": "µg/L",
    "ug/ml": "µg/mL",
    "μg/ml": "µg/mL",
    "mg/l": "mg/L",
    "g/l": "g/L",
    "mg/ml": "mg/mL",
    "ng/ml": "ng/mL",
    "mg/100ml": "mg/100mL",
    "cfu/g": "CFU/g",
    "cfu/ml": "CFU/mL",
    "mpn/g": "MPN/g",
    "mpn/100g": "MPN/100g",
    "mpn/ml": "MPN/mL",
    "mpn/100ml": "MPN/100mL",
    "ph": "pH",
    "毫克/千克": "mg/kg",
    "毫克/克": "mg/g",
    "微克/克": "µg/g",
    "纳克/克": "ng/g",
    "毫克/毫升": "mg/mL",
    "微克/毫升": "µg/mL",
    "毫克/100毫升": "mg/100mL",
    "微克/千克": "µg/kg",
    "克/千克": "g/kg",
    "毫克/升": "mg/L",
    "微克/升": "µg/L",
    "克/升": "g/L",
    "克/100克": "g/100g",
    "毫克/100克": "mg/100g",
    "g/100 g": "g/100g",
    "mg/100 g": "mg/100g",
    "mg/kg(ppm)": "mg/kg",
    "无量纲": "1",
    "-": "1",
}

UNITS: dict[str, Unit] = {u.symbol: u for u in _UNITS}
_LOOKUP: dict[str, Unit] = {u.symbol.lower(): u for u in _UNITS}
_LOOKUP.update({alias.lower(): UNITS[symbol] for alias, symbol in _ALIASES.items()})

BASE_UNIT: dict[Dimension, str] = {
    Dimension.MASS_FRACTION: "mg/kg",
    Dimension.MASS_CONCENTRATION: "mg/L",
    Dimension.COLONY_COUNT_MASS: "CFU/g",
    Dimension.COLONY_COUNT_VOLUME: "CFU/mL",
    Dimension.DIMENSIONLESS: "1",
}


class UnknownUnitError(ValueError):
    pass


class IncompatibleUnitsError(ValueError):
    pass


@lru_cache(maxsize=1024)
def parse_unit(text: str) -> Unit:
    """The unit a lab wrote, tolerant of spelling; raises UnknownUnitError with the known units.
    Cached: every item of every report names a unit, and labs write a handful."""
    key = " ".join(text.strip().split()).lower()
    unit = _LOOKUP.get(key) or _LOOKUP.get(key.replace(" ", ""))
    if unit is None:
        known = ", ".join(u.symbol for u in _UNITS)
        raise UnknownUnitError(f"unknown unit {text!r}; known units: {known}")
    return unit


def convert(value: float, source: Unit, target: Unit) -> float:
    """value expressed in source, re-expressed in target (same dimension only)."""
    if source.dimension is not target.dimension:
        raise IncompatibleUnitsError(
            f"cannot convert {source.symbol} ({source.dimension.value.replace('_', ' ')}) "
            f"to {target.symbol} ({target.dimension.value.replace('_', ' ')})"
        )
    if source is target:
        return value
    return float(f"{value * source.factor / target.factor:.12g}")  # drop binary noise: 86 µg/kg is 0.086 mg/kg
