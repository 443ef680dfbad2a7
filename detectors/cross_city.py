"""The same hazard in the same category failing in several cities within a short time.

This is the signal the alliance exists for. Per category × test item, failing results of the
last ``window`` (event time) are kept; when they come from at least ``min_cities`` cities
and their number is improbable under the segment's usual failure rate (Poisson tail
probability below ``alpha``), the cluster fires.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from scipy.stats import poisson

from detectors.base import Detector, firing, segment_text
from detectors.univariate import RateEstimate
from schemas.catalogue import city_name
from schemas.results import Alert, LabResult, Severity


@dataclass(slots=True)
class _Segment:
    fails: deque = field(default_factory=deque)  # failing results in the window
    seen: deque = field(default_factory=deque)  # (sampled_at, failed) of every result in the window
    history: RateEstimate = field(default_factory=RateEstimate)  # results that have left the window: untouched by a current cluster


class CrossCityCluster(Detector):
    name = "cross_city"

    def __init__(
        self,
        window: timedelta = timedelta(days=14),
        min_cities: int = 3,
        alpha: float = 1e-4,
        prior_rate: float = 0.005,
        prior_weight: float = 400.0,
        memory: float = 5000.0,
    ) -> None:
        self.window, self.min_cities, self.alpha = window, min_cities, alpha
        self.prior = (prior_rate, prior_weight, memory)
        self.segments: dict[tuple[str, str], _Segment] = {}

    def _segment(self, result: LabResult) -> _Segment:
        key = (result.category, result.test_item)
        segment = self.segments.get(key)
        if segment is None:
            segment = self.segments[key] = _Segment(history=RateEstimate(*self.prior))
        return segment

    def _trim(self, segment: _Segment, now: datetime) -> None:
        horizon = now - self.window
        while segment.fails and segment.fails[0].sampled_at < horizon:
            segment.fails.popleft()
        while segment.seen and segment.seen[0][0] < horizon:
            _, failed = segment.seen.popleft()
            segment.history.learn(failed)

    def learn_one(self, result: LabResult) -> None:
        segment = self._segment(result)
        failed = result.failing
        segment.seen.append((result.sampled_at, failed))
        if failed:
            segment.fails.append(result)
        self._trim(segment, result.sampled_at)

    def _tail(self, segment: _Segment, fails: int, results: int) -> float:
        return float(poisson.sf(fails - 1, segment.history.rate * results))

    def score_one(self, result: LabResult) -> float:
        segment = self.segments.get((result.category, result.test_item))
        if segment is None or not result.failing:
            return 0.0
        cities = {r.city for r in segment.fails} | {result.city}
        return min(1.0, len(cities) / self.min_cities) * (1 - self._tail(segment, len(segment.fails) + 1, len(segment.seen) + 1))

    def alerts_for(self, result: LabResult, score: float, now: datetime) -> list[Alert]:
        if not result.failing:
            return []
        segment = self._segment(result)
        self._trim(segment, result.sampled_at)
        cluster = [r for r in segment.fails if r.sampled_at <= result.sampled_at] + [result]
        cities = sorted({r.city for r in cluster})
        if len(cities) < self.min_cities:
            return []
        results = len(segment.seen) + 1
        tail = self._tail(segment, len(cluster), results)
        if tail >= self.alpha:
            return []
        rate = segment.history.rate
        names_en = ", ".join(city_name(c) for c in cities)
        names_zh = "、".join(city_name(c, "zh") for c in cities)
        days = self.window.days
        severity = Severity.SERIOUS if len(cities) >= self.min_cities + 2 else Severity.POTENTIALLY_SERIOUS
        where_en = segment_text(result.category, result.test_item, None)
        where_zh = segment_text(result.category, result.test_item, None, "zh")
        return [
            firing(
                self.name,
                f"{result.category}|{result.test_item}",
                severity=severity,
                score=min(1.0, 1 - tail),
                title=f"Same hazard in {len(cities)} cities: {where_en}",
                title_zh=f"{names_zh}等{len(cities)}市同时出现{where_zh}不合格",
                explanation=(
                    f"{len(cluster)} failing results in {len(cities)} cities ({names_en}) within {days} days, out of {results} tested; "
                    f"at the usual failure rate of {100 * rate:.2f} % about {rate * results:.1f} would be expected "
                    f"(chance of this many or more: {tail:.1g})."
                ),
                explanation_zh=(
                    f"{days}天内{names_zh}共{len(cities)}市检出{len(cluster)}批次不合格(共检{results}批次);"
                    f"按通常不合格率{100 * rate:.2f}%仅应约{rate * results:.1f}批次(偶然出现的概率{tail:.1g})。"
                ),
                category=result.category,
                test_item=result.test_item,
                evidence=cluster,
                now=now,
            )
        ]

    def reset(self) -> None:
        self.segments.clear()
