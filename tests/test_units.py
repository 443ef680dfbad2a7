import pytest

from schemas.units import Dimension, IncompatibleUnitsError, UnknownUnitError, convert, parse_unit


@pytest.mark.parametrize(
    "text, symbol",
    [("mg/kg", "mg/kg"), ("MG/KG", "mg/kg"), ("ug/kg", "µg/kg"), ("μg/kg", "µg/kg"), ("µg/kg", "µg/kg"),
     ("微克/千克", "µg/kg"), ("g/100 g", "g/100g"), (" mg / L ", "mg/L"), ("cfu/g", "CFU/g"), ("%", "%")],
)  # fmt: skip
def test_spellings_labs_use_resolve_to_one_unit(text, symbol):
    assert parse_unit(text).symbol == symbol


@pytest.mark.parametrize(
    "value, source, target, expected",
    [(86, "µg/kg", "mg/kg", 0.086), (0.1, "%", "mg/kg", 1000), (150, "mg/kg", "g/kg", 0.15),
     (0.25, "g/100g", "mg/kg", 2500), (2, "ppm", "mg/kg", 2), (5, "ppb", "µg/kg", 5), (1.2, "g/L", "mg/L", 1200)],
)  # fmt: skip
def test_conversion_within_a_dimension(value, source, target, expected):
    assert convert(value, parse_unit(source), parse_unit(target)) == pytest.approx(expected)


def test_unknown_unit_names_the_known_ones():
    with pytest.raises(UnknownUnitError, match=r"unknown unit 'bananas/kg'; known units: mg/kg"):
        parse_unit("bananas/kg")


def test_units_of_different_dimensions_do_not_convert():
    assert parse_unit("mg/L").dimension is Dimension.MASS_CONCENTRATION
    with pytest.raises(IncompatibleUnitsError, match="cannot convert mg/L"):
        convert(1.0, parse_unit("mg/L"), parse_unit("mg/kg"))
