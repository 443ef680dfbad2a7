"""A value jumping away from its segment's usual level, before it fails.

Per category × test item × city, a rolling median / MAD of log(value / limit) is the usual
level. A value fires when its robust z-score passes ``threshold_z`` upwards (towards the
limit), or when it and another of the last ``recent`` values pass ``pair_z``: one very
unusual value, or a level that has jumped. Unusual values are kept out of the baseline (as
out-of-control points are kept out of a control chart's limits) until ``adapt_after`` of them
in a row say the level has really moved. Failing results are left to limit exceedance;
non-detects carry no level.
"""

from __future__ import annotations

import math
from collections import deque
from datetime import datetime

from detectors.base import Detector, firing, log_level, percent_of_limit, segment_text
from detectors.univariate import RobustBaseline
from schemas.results import Alert, LabResult, Severity

Segment = tuple[str, str, str]


class ValueAnomaly(Detector):
    name = "value_anomaly"

    def __init__(
        self,
        window: int = 60,
        min_history: int = 20,
        threshold_z: float = 6.0,
        pair_z: float = 3.5,
        recent: int = 3,
        adapt_after: int = 10,
        min_scale: float = 0.1,
    ) -> None:
        self.window, self.min_history, self.threshold_z, self.pair_z, self.min_scale = window, min_history, threshold_z, pair_z, min_scale
        self.recent, self.adapt_after = recent, adapt_after
        self.baselines: dict[Segment, RobustBaseline] = {}
        self.recent_z: dict[Segment, deque] = {}  # z of the last `recent` values, newest last
        self.held: dict[Segment, list[float]] = {}  # unusual levels kept out of the baseline

    @staticmethod
    def segment(result: LabResult) -> Segment:
        return result.category, result.test_item, result.city

    def _baseline(self, result: LabResult) -> RobustBaseline | None:
        baseline = self.baselines.get(self.segment(result))
        return baseline if baseline is not None and len(baseline) >= self.min_history else None

    def learn_one(self, result: LabResult) -> None:
        level = log_level(result)
        if level is None:
            return
        key = self.segment(result)
        baseline = self.baselines.get(key)
        if baseline is None:
            baseline = self.baselines[key] = RobustBaseline(self.window, self.min_scale)
        if len(baseline) < self.min_history:
            baseline.learn_one(level)
            return
        z = baseline.z(level)
        self.recent_z.setdefault(key, deque(maxlen=self.recent)).append(z)
        held = self.held.setdefault(key, [])
        if z < self.pair_z:
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
        z = baseline.z(level)
        earlier = list(self.recent_z.get(self.segment(result), ()))[-(self.recent - 1) :]
        previous = max(earlier, default=0.0)
        if z < self.threshold_z and not (z >= self.pair_z and previous >= self.pair_z):
            return []
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
                "|".join(self.segment(result)),
                severity=severity,
                score=score,
                title=f"Unusually high {where_en}",
                title_zh=f"{where_zh}检测值异常偏高",
                explanation=(
                    f"{result.product_name} from {result.manufacturer_name or 'an unnamed maker'} measured {result.value:.4g} {result.unit}"
                    f"{limit_en}: {factor:.1f}× the usual level of the last {len(baseline)} results, a robust z-score of {z:.1f} "
                    f"(highest of the previous {self.recent - 1}: {previous:.1f}; alert at {self.threshold_z:g}, or {self.pair_z:g} twice within {self.recent}). Not yet over the limit."
                ),
                explanation_zh=(
                    f"{result.product_name}({result.manufacturer_name or '生产者不详'})检测值{result.value:.4g} {result.unit}{limit_zh},"
                    f"为近{len(baseline)}批次通常水平的{factor:.1f}倍(稳健z值{z:.1f}),尚未超过限量。"
                ),
                category=result.category,
                test_item=result.test_item,
                evidence=[result],
                now=now,
            )
        ]

    def reset(self) -> None:
        self.baselines.clear()
        self.recent_z.clear()
        self.held.clear()
