"""A rising failure rate in a category, per city and across the alliance (Bernoulli CUSUM).

The in-control rate p0 is the segment's own history (exponential forgetting, with a prior
so that a new segment starts sensible). Each result adds its log-likelihood ratio of
"rate is ``ratio`` × p0" against "rate is p0"; the CUSUM signals when the evidence passes h.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime

from detectors.base import Detector, firing, segment_text
from detectors.univariate import RateEstimate
from schemas.results import Alert, LabResult, Severity

ALLIANCE = "*"


@dataclass(slots=True)
class _Rate:
    usual: RateEstimate
    s: float = 0.0
    recent_fails: deque = field(default_factory=lambda: deque(maxlen=20))
    since_reset: int = 0
    fails_since_reset: int = 0


class FailureRateTrend(Detector):
    name = "failure_rate"

    def __init__(
        self,
        prior_rate: float = 0.005,
        prior_weight: float = 400.0,
        memory: float = 3000.0,
        ratio: float = 4.0,
        h: float = 5.5,
        min_rate: float = 0.002,
    ) -> None:
        self.prior = (prior_rate, prior_weight, memory)
        self.ratio, self.h, self.min_rate = ratio, h, min_rate
        self.segments: dict[tuple[str, str], _Rate] = {}

    def _keys(self, result: LabResult) -> tuple[tuple[str, str], tuple[str, str]]:
        return (result.category, result.city), (result.category, ALLIANCE)

    def _state(self, key: tuple[str, str]) -> _Rate:
        state = self.segments.get(key)
        if state is None:
            state = self.segments[key] = _Rate(RateEstimate(*self.prior))
        return state

    def _llr(self, state: _Rate, failed: bool) -> tuple[float, float, float]:
        p0 = max(self.min_rate, state.usual.rate)
        p1 = min(0.5, self.ratio * p0)
        return (math.log(p1 / p0) if failed else math.log((1 - p1) / (1 - p0))), p0, p1

    def learn_one(self, result: LabResult) -> None:
        failed = result.failing
        for key in self._keys(result):
            state = self._state(key)
            llr, _, _ = self._llr(state, failed)
            state.s = max(0.0, state.s + llr)
            state.since_reset += 1
            state.fails_since_reset += failed
            if failed:
                state.recent_fails.append(result)
            if state.s > self.h:  # signalled (see alerts_for): start a fresh run
                state.s, state.since_reset, state.fails_since_reset = 0.0, 0, 0
            if state.s == 0.0:
                state.since_reset, state.fails_since_reset = 0, 0
            state.usual.learn(failed)

    def score_one(self, result: LabResult) -> float:
        state = self.segments.get(self._keys(result)[0])
        if state is None:
            return 0.0
        llr, _, _ = self._llr(state, result.failing)
        return min(1.0, max(0.0, state.s + llr) / self.h)

    def alerts_for(self, result: LabResult, score: float, now: datetime) -> list[Alert]:
        if not result.failing:
            return []  # only a failure can push the CUSUM over its limit
        alerts = []
        for category, city in self._keys(result):
            state = self.segments.get((category, city))
            if state is None:
                continue
            llr, p0, _ = self._llr(state, True)
            s = max(0.0, state.s + llr)
            if s <= self.h:
                continue
            run, fails = state.since_reset + 1, state.fails_since_reset + 1
            observed = fails / run
            evidence = list(state.recent_fails)[-min(fails - 1, 19) or len(state.recent_fails) :] if fails > 1 else []
            evidence.append(result)
            place = None if city == ALLIANCE else city
            where_en, where_zh = segment_text(category, None, place), segment_text(category, None, place, "zh")
            severity = Severity.POTENTIALLY_SERIOUS if observed >= 5 * p0 and fails >= 5 else Severity.NOT_SERIOUS
            alerts.append(
                firing(
                    self.name,
                    f"{category}|{city}",
                    severity=severity,
                    score=min(1.0, observed / max(p0 * self.ratio * 2, 1e-9)),
                    title=f"Failure rate rising: {where_en}",
                    title_zh=f"{where_zh}不合格率上升",
                    explanation=(
                        f"{fails} of the last {run} results failed ({100 * observed:.1f} %), against a usual rate of {100 * p0:.2f} %. "
                        f"The CUSUM of the evidence for a {self.ratio:g}× higher rate reached {s:.1f} (limit {self.h:g})."
                    ),
                    explanation_zh=(
                        f"近{run}项结果中{fails}项不合格({100 * observed:.1f}%),通常不合格率为{100 * p0:.2f}%;"
                        f"累积和(CUSUM)统计量{s:.1f}超过控制限{self.h:g}。"
                    ),
                    category=category,
                    cities=[result.city] if place else None,
                    evidence=evidence,
                    now=now,
                )
            )
        return alerts

    def reset(self) -> None:
        self.segments.clear()
