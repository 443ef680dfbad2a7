"""The same hazard in the same category failing in several cities within a short time.

This is the signal the alliance exists for. Per category × test item, the failures of the
last ``window`` (event time) are scanned for the most improbable recent run of them
(``FailureScan``) against the segment's usual failure rate; a run that spans at least
``min_cities`` cities with a p-value below ``alpha`` fires. On an item that seldom fails, three
failures in two cities within a few dozen results fire at once; a slower spread fires when it
has become improbable.

Two cities, not three: with a hazard in four cities the third city shows only after four or
more failures, while the second usually shows with the second or third. What keeps chance
pairs of cities quiet is the run's improbability (``alpha``), not the count of cities: over
the bench's five seeds, two cities at 3e-5 warned earlier (median delay 6 → 4 results) with
fewer alerts on the clean streams (4 → 1) than three cities at 1e-4.

Failures far over the limit are rarer than failures as such, so a few of them say more. The
results that fail by ``severe_ratio`` or more (the severity policy's "potentially serious", 1.3×
the limit) are scanned a second time, against their own usual rate: two of them in two cities
can be improbable where two failures of any size are not yet. Either scan fires the same alert.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from detectors.base import Detector, firing, segment_text
from detectors.univariate import BaselineRates, FailureCluster, FailureScan, RecentFailureScans, runs_spanning
from schemas.catalogue import city_name
from schemas.results import Alert, LabResult, Severity


class CrossCityCluster(Detector):
    name = "cross_city"

    def __init__(
        self,
        window: timedelta = timedelta(days=14),
        min_cities: int = 2,
        alpha: float = 3e-5,
        serious_cities: int = 5,
        prior_rate: float = 0.005,
        prior_weight: float = 400.0,
        memory: float = 5000.0,
        severe_ratio: float | None = 1.3,
        severe_prior_rate: float = 0.002,
    ) -> None:
        self.window, self.min_cities, self.alpha, self.serious_cities = window, min_cities, alpha, serious_cities
        self.usual = BaselineRates(prior_rate, prior_weight, memory)
        # category × item, a scan kept only while it has recent failures (most segments seldom fail)
        self.segments = RecentFailureScans(window)
        self.last_p: dict[tuple[str, str], float] = {}
        self.severe_ratio = severe_ratio  # None: failures of any size only
        self.usual_severe = BaselineRates(severe_prior_rate, prior_weight, memory)
        self.severe = RecentFailureScans(window)  # the failures by severe_ratio or more

    def _is_severe(self, result: LabResult) -> bool:
        ratio = result.limit_ratio
        return self.severe_ratio is not None and result.failing and ratio is not None and ratio >= self.severe_ratio

    def _add(self, scans: RecentFailureScans, usual: BaselineRates, result: LabResult, failed: bool) -> None:
        key = (result.category, result.test_item)
        scans.add(key, result.sampled_at, usual.rate(key), failed, result)
        usual.learn(key, failed)

    def learn_one(self, result: LabResult) -> None:
        self._add(self.segments, self.usual, result, result.failing)
        if self.severe_ratio is not None:
            self._add(self.severe, self.usual_severe, result, self._is_severe(result))

    def score_one(self, result: LabResult) -> float:
        return 1 - self.last_p.get((result.category, result.test_item), 1.0) if result.failing else 0.0

    def alerts_for(self, result: LabResult, score: float, now: datetime) -> list[Alert]:
        return []  # judged after learning, in process_one: the new failure belongs to the run

    def process_one(self, result: LabResult, now: datetime) -> list[Alert]:
        self.learn_one(result)
        if not result.failing:
            return []
        key = (result.category, result.test_item)
        cluster, fails = self._cluster(self.segments.scans.get(key))
        self.last_p[key] = cluster.p_value if cluster else 1.0
        if cluster is not None and cluster.p_value < self.alpha:
            return [self._firing(result, cluster, fails[cluster.start :], now)]
        if not self._is_severe(result):
            return []
        cluster, fails = self._cluster(self.severe.scans.get(key))
        if cluster is None or cluster.p_value >= self.alpha:
            return []
        self.last_p[key] = min(self.last_p[key], cluster.p_value)
        return [self._firing(result, cluster, fails[cluster.start :], now, self.severe_ratio)]

    def _cluster(self, scan: FailureScan | None) -> tuple[FailureCluster | None, list[LabResult]]:
        """The scan's most improbable recent run of failures spanning ``min_cities`` cities, and its failures.

        No scan (None): the failure just added was older than the window, and left with its stream's scan."""
        if scan is None:
            return None, []
        fails = scan.payloads()
        spans = runs_spanning(fails, lambda r: r.city, self.min_cities)
        return scan.cluster(min_failures=self.min_cities, eligible=spans), fails

    def _firing(
        self, result: LabResult, cluster: FailureCluster, evidence: list[LabResult], now: datetime, severe: float | None = None
    ) -> Alert:
        cities = sorted({r.city for r in evidence})
        names_en = ", ".join(city_name(c) for c in cities)
        names_zh = "、".join(city_name(c, "zh") for c in cities)
        days = max(1, round((max(r.sampled_at for r in evidence) - min(r.sampled_at for r in evidence)).total_seconds() / 86400))
        severity = Severity.SERIOUS if len(cities) >= self.serious_cities else Severity.POTENTIALLY_SERIOUS
        where_en = segment_text(result.category, result.test_item, None)
        where_zh = segment_text(result.category, result.test_item, None, "zh")
        return firing(
            self.name,
            f"{result.category}|{result.test_item}",
            severity=severity,
            score=1 - cluster.p_value,
            title=f"Same hazard in {len(cities)} cities: {where_en}",
            title_zh=f"{names_zh}等{len(cities)}市同时出现{where_zh}不合格",
            explanation=(
                f"{cluster.failures} {f'results at {severe:g}× the limit or more' if severe else 'failing results'} in {len(cities)} cities "
                f"({names_en}) sampled within {days} days, out of the last {cluster.results} tested; at the usual "
                f"{'rate of such failures' if severe else 'failure rate'} about {cluster.expected:.2g} would be expected "
                f"(chance of this many or more: {cluster.p_value:.1g})."
            ),
            explanation_zh=(
                f"{names_zh}共{len(cities)}市在{days}天内抽取的样品中检出{cluster.failures}批次"
                f"{f'达到限量{severe:g}倍及以上' if severe else '不合格'}(近{cluster.results}批次);"
                f"按通常{'同等超标率' if severe else '不合格率'}仅应约{cluster.expected:.2g}批次(偶然出现的概率{cluster.p_value:.1g})。"
            ),
            category=result.category,
            test_item=result.test_item,
            evidence=evidence,
            now=now,
        )

    def reset(self) -> None:
        self.segments.clear()
        self.usual.clear()
        self.last_p.clear()
        self.severe.clear()
        self.usual_severe.clear()
