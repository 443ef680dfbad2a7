"""A result on the failing side of its regulatory limit, ranked by how far past it is.

Severity follows RASFF's risk decision: far over the limit, or a pathogen or prohibited
substance found at all, is serious; a modest exceedance is potentially serious; an
exceedance within typical measurement uncertainty is not serious. The lab's verdict is the
authority, but a value over the limit that the lab passed is raised too (as not serious),
because it is either a reporting error or a judgement a risk officer should see.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime

from detectors.base import Detector, firing
from schemas.catalogue import SERIOUS_WHEN_DETECTED, TEST_ITEMS, category_name, city_name, test_item_name
from schemas.results import Alert, LabResult, Manufacturer, Severity


@dataclass(frozen=True, slots=True)
class SeverityPolicy:
    serious_ratio: float = 3.0  # ≥ 3× the limit
    potentially_serious_ratio: float = 1.3  # beyond ~30 %: outside typical measurement uncertainty


class LimitExceedance(Detector):
    name = "limit_exceedance"

    def __init__(self, policy: SeverityPolicy = SeverityPolicy()) -> None:
        self.policy = policy

    def score_one(self, result: LabResult) -> float:
        """0 within the limit; rises towards 1 with the ratio (1 at ≥ 2× the serious ratio)."""
        if result.limit_ratio is None:
            return 1.0 if result.failing else 0.0
        if result.limit_ratio <= 1.0 and not result.failed:
            return 0.0
        return min(1.0, max(result.limit_ratio, 1.0) / (2 * self.policy.serious_ratio))

    def alerts_for(self, result: LabResult, score: float, now: datetime) -> list[Alert]:
        if not result.failing:
            return []
        severity = self.severity(result)
        title, title_zh = self._titles(result)
        explanation, explanation_zh = self._explanations(result)
        manufacturer = Manufacturer(result.manufacturer_name, result.manufacturer_uscc or None) if result.manufacturer_name else None
        ratio = result.limit_ratio
        return [
            firing(
                self.name,
                result.result_id,
                severity=severity,
                score=ratio if ratio is not None and math.isfinite(ratio) else score,
                title=title,
                title_zh=title_zh,
                explanation=explanation,
                explanation_zh=explanation_zh,
                category=result.category,
                test_item=result.test_item,
                manufacturer=manufacturer,
                evidence=[result],
                now=now,
            )
        ]

    def severity(self, result: LabResult) -> Severity:
        ratio = result.limit_ratio
        item = TEST_ITEMS.get(result.test_item)
        if item is not None and item.hazard in SERIOUS_WHEN_DETECTED and (result.qualitative == "detected" or result.failed):
            return Severity.SERIOUS
        if ratio is None:
            return Severity.POTENTIALLY_SERIOUS
        if ratio >= self.policy.serious_ratio:
            return Severity.SERIOUS
        if ratio >= self.policy.potentially_serious_ratio:
            return Severity.POTENTIALLY_SERIOUS
        return Severity.NOT_SERIOUS

    @staticmethod
    def _titles(result: LabResult) -> tuple[str, str]:
        en = f"{test_item_name(result.test_item)} over the limit in {result.product_name} ({city_name(result.city)})"
        zh = f"{city_name(result.city, 'zh')}{result.product_name}{test_item_name(result.test_item, 'zh')}不合格"
        return en, zh

    @staticmethod
    def _explanations(result: LabResult) -> tuple[str, str]:
        item_en, item_zh = test_item_name(result.test_item), test_item_name(result.test_item, "zh")
        maker_en = f" made by {result.manufacturer_name}" if result.manufacturer_name else ""
        maker_zh = f"(标称生产者:{result.manufacturer_name})" if result.manufacturer_name else ""
        where_en = f"sampled in {city_name(result.city)} on {result.sampled_at:%Y-%m-%d} by lab {result.lab_id}"
        where_zh = f"{result.sampled_at:%Y-%m-%d}在{city_name(result.city, 'zh')}抽样,检验机构{result.lab_id}"
        standard = f" ({result.standard})" if result.standard else ""
        standard_zh = result.standard
        what_en = f"{result.product_name} ({category_name(result.category)}){maker_en}, {where_en}"
        what_zh = f"{result.product_name}({category_name(result.category, 'zh')}){maker_zh},{where_zh}"
        if result.value is not None and result.limit is not None and result.limit_ratio is not None:
            bound_en = "at most" if result.limit_type == "max" else "at least"
            bound_zh = "不得超过" if result.limit_type == "max" else "不得低于"
            numbers_en = (
                f"{item_en} measured {result.value:.4g} {result.unit}; the limit{standard} is {bound_en} "
                f"{result.limit:.4g} {result.unit}, so it is {result.limit_ratio:.2f}× the limit"
            )
            numbers_zh = (
                f"{item_zh}检测值{result.value:.4g} {result.unit},标准{standard_zh}{bound_zh}{result.limit:.4g} {result.unit},"
                f"为限量的{result.limit_ratio:.2f}倍"
            )
        elif result.qualitative == "detected":
            numbers_en = f"{item_en} was detected where the standard{standard} does not allow it"
            numbers_zh = f"检出{item_zh},标准{standard_zh}规定不得检出"
        else:
            numbers_en = f"{item_en} did not meet the requirement{standard}"
            numbers_zh = f"{item_zh}不符合标准{standard_zh}要求"
        if result.failed:
            verdict_en, verdict_zh = "The lab judged it a fail.", "检验结论:不合格。"
        else:
            verdict_en = "The lab judged it a pass although the value is over the limit: check the report."
            verdict_zh = "检验结论为合格,但检测值超过限量,请核查报告。"
        return f"{what_en}: {numbers_en}. {verdict_en}", f"{what_zh}:{numbers_zh}。{verdict_zh}"
