"""One manufacturer failing repeatedly: in several batches or several cities within a window.

Per category × manufacturer (its unified social credit code, else its name), the results of
the last ``window`` are kept. It fires when at least ``min_batches`` distinct samples failed
and that many failures among the maker's results is improbable under the category's usual
failure rate (binomial tail below ``alpha``): a repeat offender, not bad luck.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from scipy.stats import binom

from detectors.base import Detector, firing
from detectors.univariate import RateEstimate
from schemas.catalogue import category_name, city_name
from schemas.results import Alert, LabResult, Manufacturer, Severity


@dataclass(slots=True)
class _Maker:
    results: deque = field(default_factory=deque)  # (sampled_at, failed, result)


class ManufacturerRecurrence(Detector):
    name = "manufacturer"

    def __init__(
        self,
        window: timedelta = timedelta(days=180),
        min_batches: int = 2,
        alpha: float = 1e-4,
        prior_rate: float = 0.005,
        prior_weight: float = 400.0,
        memory: float = 5000.0,
    ) -> None:
        self.window, self.min_batches, self.alpha = window, min_batches, alpha
        self.prior = (prior_rate, prior_weight, memory)
        self.makers: dict[tuple[str, str], _Maker] = {}
        self.category_rate: dict[str, RateEstimate] = {}

    @staticmethod
    def _key(result: LabResult) -> tuple[str, str] | None:
        maker = result.manufacturer_uscc or result.manufacturer_name
        return (result.category, maker) if maker else None

    def _rate(self, category: str) -> float:
        estimate = self.category_rate.get(category)
        return estimate.rate if estimate is not None else RateEstimate(*self.prior).rate

    def learn_one(self, result: LabResult) -> None:
        failed = result.failing
        self.category_rate.setdefault(result.category, RateEstimate(*self.prior)).learn(failed)
        key = self._key(result)
        if key is None:
            return
        maker = self.makers.get(key)
        if maker is None:
            maker = self.makers[key] = _Maker()
        maker.results.append((result.sampled_at, failed, result))
        horizon = result.sampled_at - self.window
        while maker.results and maker.results[0][0] < horizon:
            maker.results.popleft()

    def _window(self, result: LabResult) -> tuple[list[LabResult], int]:
        key = self._key(result)
        maker = self.makers.get(key) if key else None
        horizon = result.sampled_at - self.window
        entries = [e for e in (maker.results if maker else ()) if e[0] >= horizon]
        fails = [r for _, failed, r in entries if failed]
        return fails, len(entries)

    def score_one(self, result: LabResult) -> float:
        if not result.failing or self._key(result) is None:
            return 0.0
        fails, n = self._window(result)
        return 1 - float(binom.sf(len(fails), n + 1, self._rate(result.category)))

    def alerts_for(self, result: LabResult, score: float, now: datetime) -> list[Alert]:
        if not result.failing or self._key(result) is None:
            return []
        earlier, n = self._window(result)
        fails = earlier + [result]
        batches = {(r.lab_id, r.sample_id) for r in fails}
        if len(batches) < self.min_batches:
            return []
        rate = self._rate(result.category)
        tail = float(binom.sf(len(fails) - 1, n + 1, rate))
        if tail >= self.alpha:
            return []
        cities = sorted({r.city for r in fails})
        items = sorted({r.test_item for r in fails})
        severity = Severity.SERIOUS if len(cities) >= 2 and len(batches) >= 3 else Severity.POTENTIALLY_SERIOUS
        maker = result.manufacturer_name or result.manufacturer_uscc
        where_en = ", ".join(city_name(c) for c in cities)
        where_zh = "、".join(city_name(c, "zh") for c in cities)
        return [
            firing(
                self.name,
                f"{result.category}|{self._key(result)[1]}",
                severity=severity,
                score=min(1.0, 1 - tail),
                title=f"{maker} failing repeatedly ({category_name(result.category)})",
                title_zh=f"{maker}产品({category_name(result.category, 'zh')})多批次不合格",
                explanation=(
                    f"{len(batches)} batches of {maker} failed within {self.window.days} days "
                    f"({len(fails)} failing results of {n + 1} tested; items: {', '.join(items)}) in {where_en}. "
                    f"At the category's usual failure rate of {100 * rate:.2f} % the chance of this is {tail:.1g}."
                ),
                explanation_zh=(
                    f"{self.window.days}天内{maker}共{len(batches)}批次产品不合格(检验{n + 1}项、不合格{len(fails)}项),"
                    f"涉及{where_zh};按该类别通常不合格率{100 * rate:.2f}%,偶然出现的概率为{tail:.1g}。"
                ),
                category=result.category,
                test_item=result.test_item if len(items) == 1 else None,
                manufacturer=Manufacturer(result.manufacturer_name, result.manufacturer_uscc or None),
                evidence=fails,
                now=now,
            )
        ]

    def reset(self) -> None:
        self.makers.clear()
        self.category_rate.clear()
