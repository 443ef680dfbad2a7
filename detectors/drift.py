"""Values creeping towards the limit in a category × test item × city.

Each new log(value / limit) is standardised against a reference: the values that came
before the most recent ``recent`` ones, so that a drift cannot hide in its own baseline.
A CUSUM (ISO 7870-4) and an EWMA chart (ISO 7870-6) on those z-scores say that the level has
moved; a Mann-Kendall test with a Theil-Sen slope over the recent values says that it is
rising steadily rather than jumping once. Both must agree, which keeps false alarms rare.

A city that seldom tests the item has no reference of its own for weeks; until it has
``min_reference`` values, the item's alliance-wide reference (all cities' values, lagged alike)
stands in, so that a rare segment drifting to the limit is still watched.
"""

from __future__ import annotations

import math
from array import array
from datetime import datetime

from detectors.base import Detector, firing, log_level, segment_text
from detectors.univariate import RobustBaseline, cusum_step, ewma_limit, ewma_step, kendall_s, trend_test
from detectors.window import Window, interned
from schemas.results import Alert, LabResult, Severity

Segment = tuple[str, str, str]


class _SegmentState(RobustBaseline):
    """A segment: its reference (this object, a ``RobustBaseline``, extended: one object a
    segment, not two), the levels not yet in it, the charts as numbers, not ``Cusum`` and ``Ewma``
    objects (~130 bytes a segment), and the records of the CUSUM's current run.

    The trend test needs the recent levels, 4 bytes each; a firing cites the results of the
    CUSUM's run, as lab bias's does, so only those keep their records (26 bytes each, the id most
    of it), in a ``Window`` that exists only while the CUSUM runs. Keeping a record of every recent
    result took 0.9 KB a segment, a sixth of a worker's memory with full windows, to cite results
    the charts had not found unusual."""

    __slots__ = ("levels", "alliance", "run", "cusum", "ewma", "charted")

    def __init__(self, reference: int, alliance: RobustBaseline) -> None:
        super().__init__(reference, 0.1)
        self.levels = array("f")  # the recent levels, oldest first
        self.alliance = alliance  # the category × item's reference over every city, shared
        self.run: Window | None = None  # the CUSUM run's results (None at rest)
        self.cusum = 0.0  # the upper CUSUM's S
        self.ewma = 0.0
        self.charted = 0  # z-scores charted so far (the EWMA's t)


class LimitDrift(Detector):
    name = "limit_drift"

    def __init__(
        self,
        recent: int = 32,
        reference: int = 80,
        min_reference: int = 20,
        cusum_k: float = 0.5,
        cusum_h: float = 5.0,
        ewma_lambda: float = 0.2,
        ewma_width: float = 3.0,
        z_cap: float = 4.0,
        alpha: float = 5e-4,
        min_fraction_of_limit: float = 0.4,
    ) -> None:
        self.recent, self.reference, self.min_reference = recent, reference, min_reference
        self.cusum_k, self.cusum_h, self.ewma_lambda, self.ewma_width = cusum_k, cusum_h, ewma_lambda, ewma_width
        self.z_cap, self.alpha, self.min_level = z_cap, alpha, math.log(min_fraction_of_limit)
        self.segments: dict[Segment, _SegmentState] = {}
        self.alliance: dict[tuple[str, str], RobustBaseline] = {}

    @staticmethod
    def segment(result: LabResult) -> Segment:
        return result.category, result.test_item, result.city

    def _state(self, result: LabResult) -> _SegmentState:
        key = self.segment(result)
        state = self.segments.get(key)
        if state is None:
            key = interned(key)
            alliance = self.alliance.get(key[:2])
            if alliance is None:
                alliance = self.alliance[key[:2]] = RobustBaseline(self.reference, 0.1)
            state = self.segments[key] = _SegmentState(self.reference, alliance)
        return state

    def _z(self, state: _SegmentState, level: float) -> float | None:
        reference = state if len(state) >= self.min_reference else state.alliance
        if len(reference) < self.min_reference:
            return None
        return max(-self.z_cap, min(self.z_cap, reference.z(level)))

    def learn_one(self, result: LabResult) -> None:
        level = log_level(result)
        if level is None or not result.limit:
            return
        state = self._state(result)
        self._learn(state, result, level, self._z(state, level))

    def _learn(self, state: _SegmentState, result: LabResult, level: float, z: float | None) -> None:
        if z is not None:
            self._chart(state, result, *self._steps(state, z))
        self._keep(state, level)

    def _steps(self, state: _SegmentState, z: float) -> tuple[float, float]:
        """The CUSUM and the EWMA after one more z."""
        return cusum_step(state.cusum, z, self.cusum_k), ewma_step(state.ewma, z, self.ewma_lambda)

    def _chart(self, state: _SegmentState, result: LabResult, cusum: float, ewma: float) -> None:
        """The charts after a result; while the CUSUM runs, the result joins its run's records."""
        state.cusum, state.ewma = cusum, ewma
        state.charted += 1
        if cusum > 0:
            if state.run is None:
                state.run = Window(self.recent, width=0)
            state.run.append(result)
        else:
            state.run = None

    def _keep(self, state: _SegmentState, level: float) -> None:
        """The level joins the recent ones; the one it pushes out joins the references."""
        levels = state.levels
        if len(levels) == self.recent:
            old_level = levels.pop(0)
            state.learn_one(old_level)
            state.alliance.learn_one(old_level)
        levels.append(level)

    def _score(self, cusum: float) -> float:
        """The CUSUM after a result, as a score: 1 at twice its limit."""
        return min(1.0, cusum / (2 * self.cusum_h))

    def score_one(self, result: LabResult) -> float:
        level = log_level(result)
        state = self.segments.get(self.segment(result))
        if level is None or state is None or (z := self._z(state, level)) is None:
            return 0.0
        return self._score(cusum_step(state.cusum, z, self.cusum_k))

    def process_one(self, result: LabResult, now: datetime) -> list[Alert]:
        """The protocol's score, alert and learn with one look-up, one z and one step of each chart
        (three of each per result cost a fifth of the detector)."""
        level = log_level(result)
        if level is None or not result.limit:
            return []
        state = self.segments.get(self.segment(result))
        z = self._z(state, level) if state is not None else None  # a segment's first result is not judged
        if z is None:
            self._keep(state or self._state(result), level)
            return []
        cusum, ewma = self._steps(state, z)
        alerts = self._judge(result, state, level, cusum, ewma, self._score(cusum), now)
        self._chart(state, result, cusum, ewma)
        self._keep(state, level)
        return alerts

    def alerts_for(self, result: LabResult, score: float, now: datetime) -> list[Alert]:
        level = log_level(result)
        state = self.segments.get(self.segment(result))
        if level is None or not result.limit or state is None or (z := self._z(state, level)) is None:
            return []
        return self._judge(result, state, level, *self._steps(state, z), score, now)

    def _judge(
        self, result: LabResult, state: _SegmentState, level: float, cusum: float, ewma: float, score: float, now: datetime
    ) -> list[Alert]:
        """Judge a result by the charts' values after it (``cusum``, ``ewma``), before it is learned."""
        limit = ewma_limit(self.ewma_lambda, self.ewma_width, state.charted + 1)
        if cusum <= self.cusum_h and ewma <= limit:
            return []
        window = [*state.levels, level]
        if len(window) < 8 or (s := kendall_s(window)) <= 0:
            return []
        trend = trend_test(window, s)
        if trend.p_value >= self.alpha or trend.slope <= 0 or trend.level < self.min_level:
            return []
        return [self._firing(result, state, trend, cusum, ewma, limit, score, now)]

    def _firing(self, result, state, trend, cusum, ewma, ewma_limit, score, now) -> Alert:
        start = math.exp(trend.level - trend.slope * len(state.levels))
        end = math.exp(trend.level)
        steps = -trend.level / trend.slope if trend.level < 0 else 0.0
        severity = Severity.POTENTIALLY_SERIOUS if end >= 0.8 else Severity.NOT_SERIOUS
        where_en = segment_text(result.category, result.test_item, result.city)
        where_zh = segment_text(result.category, result.test_item, result.city, "zh")
        n = len(state.levels) + 1
        charts = f"CUSUM {cusum:.1f} (limit {self.cusum_h:g}), EWMA {ewma:.2f} (limit {ewma_limit:.2f})"
        eta_en = f" At this rate it reaches the limit in about {steps:.0f} more results." if steps > 0 else " It is at the limit."
        eta_zh = f"按此速度约再{steps:.0f}批次将达到限量。" if steps > 0 else "已达到限量。"
        evidence = [*(state.run.evidence() if state.run else ()), result]
        return firing(
            self.name,
            "|".join(self.segment(result)),
            severity=severity,
            score=max(score, trend.tau),
            title=f"Rising towards the limit: {where_en}",
            title_zh=f"{where_zh}检测值持续上升、逼近限量",
            explanation=(
                f"Over the last {n} results the level rose from about {100 * start:.0f} % to {100 * end:.0f} % of the limit "
                f"(Theil-Sen slope ×{math.exp(trend.slope):.3f} per result; Mann-Kendall tau {trend.tau:.2f}, p = {trend.p_value:.2g}; "
                f"{charts}).{eta_en} Cited: the {len(evidence)} results since the CUSUM last stood at zero."
            ),
            explanation_zh=(
                f"近{n}批次检测水平由限量的约{100 * start:.0f}%升至{100 * end:.0f}%"
                f"(Mann-Kendall检验tau={trend.tau:.2f},p={trend.p_value:.2g};{charts})。{eta_zh}"
                f"所列证据为CUSUM上次归零以来的{len(evidence)}项结果。"
            ),
            category=result.category,
            test_item=result.test_item,
            evidence=evidence,
            now=now,
        )

    def reset(self) -> None:
        self.segments.clear()
        self.alliance.clear()
