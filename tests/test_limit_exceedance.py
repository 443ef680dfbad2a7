import msgspec
import orjson
import pytest

from detectors import LimitExceedance, SeverityPolicy
from schemas.results import Severity, alert_id_for
from schemas.validation import validate_report
from tests.conftest import EXAMPLE_NOW


@pytest.fixture
def cadmium(report):
    return validate_report(orjson.dumps(report), now=EXAMPLE_NOW).results[1]


def with_value(result, value, verdict="fail"):
    """The cadmium result as the lab would have reported it with another value (through validation)."""
    from tests.conftest import example_report

    report = example_report()
    report["items"][1].update(value=value, verdict=verdict)
    return validate_report(orjson.dumps(report), now=EXAMPLE_NOW).results[1]


def test_a_failing_result_raises_one_explained_alert(cadmium):
    (alert,) = LimitExceedance().process_one(cadmium, EXAMPLE_NOW)
    assert alert.alert_id == alert_id_for("limit_exceedance", f"{cadmium.result_id}\x1f{cadmium.result_id}")
    assert alert.evidence == [cadmium.result_id] and alert.cities == ["zibo"] and alert.labs == ["ZBQI"]
    assert alert.score == pytest.approx(2.05)
    assert alert.severity is Severity.POTENTIALLY_SERIOUS
    assert "cadmium (as Cd) measured 0.41 mg/kg" in alert.explanation
    assert "at most 0.2 mg/kg, so it is 2.05× the limit" in alert.explanation
    assert "淄博鲁丰粮油有限公司" in alert.explanation and "GB 2762-2022" in alert.explanation
    assert "为限量的2.05倍" in alert.explanation_zh and alert.title_zh.startswith("淄博东北大米镉")


@pytest.mark.parametrize(
    "value, severity",
    [(0.21, Severity.NOT_SERIOUS), (0.259, Severity.NOT_SERIOUS), (0.26, Severity.POTENTIALLY_SERIOUS),
     (0.59, Severity.POTENTIALLY_SERIOUS), (0.6, Severity.SERIOUS), (3.0, Severity.SERIOUS)],
)  # fmt: skip
def test_severity_follows_the_ratio_to_the_limit(cadmium, value, severity):
    assert LimitExceedance().severity(with_value(cadmium, value)) is severity


def test_severity_thresholds_are_a_policy(cadmium):
    strict = LimitExceedance(SeverityPolicy(serious_ratio=2.0, potentially_serious_ratio=1.1))
    assert strict.severity(with_value(cadmium, 0.41)) is Severity.SERIOUS


def test_a_pathogen_found_is_serious_without_a_ratio(cadmium):
    salmonella = msgspec.structs.replace(cadmium, test_item="salmonella", value=None, limit=None, limit_ratio=None, qualitative="detected", unit="")
    (alert,) = LimitExceedance().process_one(salmonella, EXAMPLE_NOW)
    assert alert.severity is Severity.SERIOUS and "was detected where the standard" in alert.explanation


def test_passing_results_within_the_limit_raise_nothing(cadmium):
    detector = LimitExceedance()
    assert detector.process_one(with_value(cadmium, 0.1, "pass"), EXAMPLE_NOW) == []
    assert detector.score_one(with_value(cadmium, 0.1, "pass")) == 0.0


def test_a_pass_over_the_limit_is_raised_as_a_reporting_question(cadmium):
    (alert,) = LimitExceedance().process_one(with_value(cadmium, 0.23, "pass"), EXAMPLE_NOW)
    assert alert.severity is Severity.NOT_SERIOUS
    assert "judged it a pass although the value is over the limit" in alert.explanation


def test_scores_rank_by_how_far_over_the_limit(cadmium):
    detector = LimitExceedance()
    scores = [detector.score_one(with_value(cadmium, v)) for v in (0.21, 0.4, 0.8, 1.2, 5.0)]
    assert scores == sorted(scores) and 0 < scores[0] < scores[-1] == 1.0
