"""A value jumping away from its segment's usual level, before it fails.

Per category × test item × city, a rolling median / MAD of log(value / limit) is the usual
level. A value fires when its robust z-score passes ``threshold_z`` upwards (towards the
limit): one very unusual value. A level that has jumped shows as several moderately unusual
values in a row; an upper CUSUM of the z-scores with a large slack (``k``, half the jump it is
tuned for) and each z capped at ``z_cap`` (so that no single value is enough) fires when they
add up past ``h``, typically on the second or third value after a jump. Unusual values are kept
out of the baseline (as out-of-control points are kept out of a control chart's limits) until
``adapt_after`` of them in a row say the level has really moved. Failing results count towards
the CUSUM but do not fire it: each is limit exceedance's alert; non-detects carry no level.
"""

from __future__ import annotations

import math
from datetime import datetime

from detectors.base import Detector, firing, log_level, percent_of_limit, segment_text
from detectors.univariate import Cusum, RobustBaseline, z_to_score
from detectors.window import Window
from schemas.results import Alert, LabResult, Severity

Segment = tuple[str, str, str]


class ValueAnomaly(Detector):
    name = "value_anomaly"

    def __init__(
        self,
        window: int = 60,
        min_history: int = 40,
        threshold_z: float = 6.0,
        k: float = 1.5,
        h: float = 5.0,
        z_cap: float = 5.0,
        hold_z: float = 3.5,
        adapt_after: int = 10,
        min_scale: float = 0.1,
    ) -> None:
        self.window, self.min_history, self.threshold_z, self.min_scale = window, min_history, threshold_z, min_scale
        self.k, self.h, self.z_cap, self.hold_z, self.adapt_after = k, h, z_cap, hold_z, adapt_after
        self.baselines: dict[Segment, RobustBaseline] = {}
        self.charts: dict[Segment, Cusum] = {}
        self.recent: dict[Segment, Window] = {}  # the last results and their z, newest last: the CUSUM run's evidence
        self.held: dict[Segment, list[float]] = {}  # unusual levels kept out of the baseline

    @staticmethod
    def segment(result: LabResult) -> Segment:
        return result.category, result.test_item, result.city

    def _baseline(self, result: LabResult) -> RobustBaseline | None:
        baseline = self.baselines.get(self.segment(result))
        return baseline if baseline is not None and len(baseline) >= self.min_history else None

    def learn_one(self, result: LabResult) -> None:
        level = log_level(result)
        if level is not None:
            self._learn(result, self.segment(result), level)

    def _learn(self, result: LabResult, key: Segment, level: float, z: float | None = None) -> None:
        """Learn a level; ``z`` is its z-score against the baseline, when the caller has it already."""
        baseline = self.baselines.get(key)
        if baseline is None:
            baseline = self.baselines[key] = RobustBaseline(self.window, self.min_scale)
        if len(baseline) < self.min_history:
            baseline.learn_one(level)
            return
        if z is None:
            z = baseline.z(level)
        chart = self.charts.get(key)
        if chart is None:
            chart = self.charts[key] = Cusum(self.k, self.h)
            self.recent[key] = Window(self.adapt_after)
        chart.update(min(z, self.z_cap))
        self.recent[key].append(result, z)
        held = self.held.setdefault(key, [])
        if z < self.hold_z:
            held.clear()
            baseline.learn_one(level)
            return
        held.append(level)
        if len(held) >= self.adapt_after:  # the level has moved for good: accept it
            for value in held:
                baseline.learn_one(value)
            held.clear()

    def score_one(self, result: LabResult) -> float:
        level, baseline = log_level(result), self._baseline(result)
        if level is None or baseline is None:
            return 0.0
        return baseline.score_one(level)

    def alerts_for(self, result: LabResult, score: float, now: datetime) -> list[Alert]:
        level, baseline = log_level(result), self._baseline(result)
        if level is None or baseline is None or result.failing:
            return []
        return self._judge(result, self.segment(result), baseline, level, baseline.z(level), score, now)

    def _judge(
        self, result: LabResult, key: Segment, baseline: RobustBaseline, level: float, z: float, score: float, now: datetime
    ) -> list[Alert]:
        chart = self.charts.get(key)
        cusum = max(0.0, chart.s + min(z, self.z_cap) - self.k) if chart is not None else 0.0
        if z < self.threshold_z and cusum <= self.h:
            return []
        run = chart.run if chart is not None and chart.run and cusum > self.h else 0  # the CUSUM's run so far
        earlier = self.recent[key].evidence(-run) if run else []
        zs = ", ".join(f"{earlier_z:.1f}" for earlier_z in self.recent[key].column()[-run:]) if run else ""
        usual = baseline.median
        factor = math.exp(level - usual)
        severity = Severity.POTENTIALLY_SERIOUS if result.limit and level >= math.log(0.5) else Severity.NOT_SERIOUS
        where_en = segment_text(result.category, result.test_item, result.city)
        where_zh = segment_text(result.category, result.test_item, result.city, "zh")
        limit_en = f" ({percent_of_limit(level)}; usually {percent_of_limit(usual)})" if result.limit else ""
        limit_zh = f"(达限量的{100 * math.exp(level):.0f}%,通常为{100 * math.exp(usual):.0f}%)" if result.limit else ""
        return [
            firing(
                self.name,
                "|".join(key),
                severity=severity,
                score=score,
                title=f"Unusually high {where_en}",
                title_zh=f"{where_zh}检测值异常偏高",
                explanation=(
                    f"{result.product_name} from {result.manufacturer_name or 'an unnamed maker'} measured {result.value:.4g} {result.unit}"
                    f"{limit_en}: {factor:.1f}× the usual level of the last {len(baseline)} results, a robust z-score of {z:.1f}"
                    + (
                        f", after {zs} (CUSUM {cusum:.1f} past {self.h:g}: the level has jumped)"
                        if earlier
                        else f" (alert at {self.threshold_z:g})"
                    )
                    + ". Not yet over the limit."
                ),
                explanation_zh=(
                    f"{result.product_name}({result.manufacturer_name or '生产者不详'})检测值{result.value:.4g} {result.unit}{limit_zh},"
                    f"为近{len(baseline)}批次通常水平的{factor:.1f}倍(稳健z值{z:.1f}"
                    + (f",此前z值{zs},累积和{cusum:.1f}超过{self.h:g},水平已跃升" if earlier else "")
                    + "),尚未超过限量。"
                ),
                category=result.category,
                test_item=result.test_item,
                evidence=[*earlier, result],
                now=now,
            )
        ]

    def process_one(self, result: LabResult, now: datetime) -> list[Alert]:
        """The protocol's score, alert and learn with one look-up and one z (they cost three of each)."""
        level = log_level(result)
        if level is None:
            return []
        key = self.segment(result)
        baseline = self.baselines.get(key)
        if baseline is None or len(baseline) < self.min_history:
            self._learn(result, key, level)
            return []
        z = baseline.z(level)
        alerts = [] if result.failing else self._judge(result, key, baseline, level, z, z_to_score(z), now)
        self._learn(result, key, level, z)
        chart = self.charts[key]
        if alerts and chart.s > self.h:  # the CUSUM fired: a new alert needs fresh evidence
            chart.reset()
        return alerts

    def reset(self) -> None:
        self.baselines.clear()
        self.charts.clear()
        self.recent.clear()
        self.held.clear()
