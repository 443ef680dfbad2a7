"""One manufacturer failing repeatedly: in several batches or several cities within a window.

Per category × manufacturer (its unified social credit code, else its name), the maker's
failures of the last ``window`` are scanned for the most improbable recent run of them
(``FailureScan``), each of its results weighed by the usual failure rate of its test item in
the category: a maker failing twice on an item that hardly ever fails is a repeat offender, a
maker failing twice on an item that often fails may be bad luck. A maker under alert (its last
judged run below ``alpha``, at the latest until its failures age out of the window) does not
teach those usual rates, so one offender does not hide the next. It fires when the run holds
at least ``min_batches`` distinct samples and its p-value is below ``alpha``, or below the looser
``across_labs_alpha`` when its failures were found by two labs or more: one lab's error (a
contaminated blank, an instrument reading high) makes a maker fail in that lab's samples only, so
a run two labs found is less likely to be anything but the maker.

A maker failing again on the same item is scanned on that item's results of the maker too, while
it has recent failures (``RecentFailureScans``): among everything else the maker had tested, a
run on one item takes a few more failures to become improbable. Both fire under the maker's
signal, as one alert.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from detectors.base import Detector, firing
from detectors.univariate import BaselineRates, FailureCluster, RecentFailureScans, runs_spanning
from schemas.catalogue import category_name, city_name, test_item_name
from schemas.results import Alert, LabResult, Manufacturer, Severity


class ManufacturerRecurrence(Detector):
    name = "manufacturer"

    def __init__(
        self,
        window: timedelta = timedelta(days=180),
        min_batches: int = 2,
        alpha: float = 3e-5,
        across_labs_alpha: float = 1e-4,
        prior_rate: float = 0.005,
        prior_weight: float = 400.0,
        memory: float = 5000.0,
    ) -> None:
        self.window, self.min_batches, self.alpha, self.across_labs_alpha = window, min_batches, alpha, across_labs_alpha
        self.usual = BaselineRates(prior_rate, prior_weight, memory)  # per category × test item
        self.makers = RecentFailureScans(window)  # category × maker, a scan kept only while it has recent failures
        self.items = RecentFailureScans(window)  # category × maker × item

    @staticmethod
    def _key(result: LabResult) -> tuple[str, str] | None:
        maker = result.manufacturer_uscc or result.manufacturer_name
        return (result.category, maker) if maker else None

    def learn_one(self, result: LabResult) -> None:
        failed, item = result.failing, (result.category, result.test_item)
        key = self._key(result)
        if key is not None:
            rate = self.usual.rate(item)
            self.makers.add(key, result.sampled_at, rate, failed, result)
            item_key = (*key, result.test_item)
            self.items.add(item_key, result.sampled_at, rate, failed, result)
            if self.makers.alerting(key, self.alpha) or self.items.alerting(item_key, self.alpha):
                return  # a maker under alert does not teach the item's usual rate: it would mask the next offender
        self.usual.learn(item, failed)

    def score_one(self, result: LabResult) -> float:
        key = self._key(result)
        return 1 - self.makers.last_p.get(key, 1.0) if result.failing and key else 0.0

    def alerts_for(self, result: LabResult, score: float, now: datetime) -> list[Alert]:
        return []  # judged after learning, in process_one: the new failure belongs to the run

    def process_one(self, result: LabResult, now: datetime) -> list[Alert]:
        self.learn_one(result)
        key = self._key(result)
        if not result.failing or key is None:
            return []
        alerts = []
        item_key = (*key, result.test_item)
        for scan_key, scans, item in ((key, self.makers, None), (item_key, self.items, result.test_item)):
            scan = scans.scans.get(scan_key)
            if scan is None:
                continue  # the failure was older than the window (a late report) and left with the stream's scan
            fails = scan.payloads()
            enough = runs_spanning(fails, lambda r: (r.lab_id, r.sample_id), self.min_batches)  # distinct samples
            cluster = scan.cluster(min_failures=self.min_batches, eligible=enough)
            scans.last_p[scan_key] = self._judged_p(cluster, fails) if cluster else 1.0
            if cluster is not None and scans.last_p[scan_key] < self.alpha:
                alerts.append(self._firing(result, key[1], cluster, fails[cluster.start :], now, item))
        return alerts

    def _judged_p(self, cluster: FailureCluster, fails: list[LabResult]) -> float:
        """The run's p-value as ``alpha`` judges it: one found by several labs scaled by
        alpha / across_labs_alpha, so that one comparison (and one "under alert") serves both."""
        if len({r.lab_id for r in fails[cluster.start :]}) >= 2:
            return cluster.p_value * self.alpha / self.across_labs_alpha
        return cluster.p_value

    def _firing(
        self, result: LabResult, maker_id: str, cluster: FailureCluster, fails: list[LabResult], now: datetime, item: str | None
    ) -> Alert:
        """``item``: the test item whose own results the run was counted among, if not all the maker's."""
        batches = {(r.lab_id, r.sample_id) for r in fails}
        cities = sorted({r.city for r in fails})
        items = sorted({r.test_item for r in fails})
        severity = Severity.SERIOUS if len(cities) >= 2 and len(batches) >= 3 else Severity.POTENTIALLY_SERIOUS
        maker = result.manufacturer_name or result.manufacturer_uscc
        where_en = ", ".join(city_name(c) for c in cities)
        where_zh = "、".join(city_name(c, "zh") for c in cities)
        return firing(
            self.name,
            f"{result.category}|{maker_id}",
            severity=severity,
            score=1 - cluster.p_value,
            title=f"{maker} failing repeatedly ({category_name(result.category)})",
            title_zh=f"{maker}产品({category_name(result.category, 'zh')})多批次不合格",
            explanation=(
                f"{len(batches)} batches of {maker} failed within {self.window.days} days "
                f"({cluster.failures} failing results of its last {cluster.results} tested{' for ' + test_item_name(item) if item else ''}; "
                f"items: {', '.join(items)}) in {where_en}. "
                f"At the usual failure rates of those items about {cluster.expected:.2g} would be expected; "
                f"the chance of this is {cluster.p_value:.1g}."
            ),
            explanation_zh=(
                f"{self.window.days}天内{maker}共{len(batches)}批次产品不合格"
                f"(近{cluster.results}项{test_item_name(item, 'zh') if item else ''}检验中{cluster.failures}项不合格),"
                f"涉及{where_zh};按这些项目通常的不合格率仅应约{cluster.expected:.2g}项,偶然出现的概率为{cluster.p_value:.1g}。"
            ),
            category=result.category,
            test_item=result.test_item if len(items) == 1 else None,
            manufacturer=Manufacturer(result.manufacturer_name, result.manufacturer_uscc or None),
            evidence=fails,
            now=now,
        )

    def reset(self) -> None:
        self.makers.clear()
        self.items.clear()
        self.usual.clear()
