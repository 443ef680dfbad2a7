"""A value jumping away from its segment's usual level, before it fails.

Per category × test item × city, a rolling median / MAD of log(value / limit) is the usual
level. A value fires when its robust z-score passes ``threshold_z`` upwards (towards the
limit): one very unusual value. A level that has jumped shows as several moderately unusual
values in a row; an upper CUSUM of the z-scores with a large slack (``k``, half the jump it is
tuned for) and each z capped at ``z_cap`` (so that no single value is enough) fires when they
add up past ``h``, typically on the second or third value after a jump. Unusual values are kept
out of the baseline (as out-of-control points are kept out of a control chart's limits) until
``adapt_after`` of them in a row say the level has really moved. A failing result is limit
exceedance's alert, so it never fires here alone; it counts towards the CUSUM and fires it like
any value, because a failure on top of a raised run says more than the failure itself: the
segment's level has moved. Non-detects carry no level.
"""

from __future__ import annotations

import math
from datetime import datetime

from detectors.base import Detector, firing, log_level, percent_of_limit, segment_text
from detectors.univariate import RobustBaseline, cusum_run_step, cusum_step, z_to_score
from detectors.window import Window, interned
from schemas.results import Alert, LabResult, Severity

Segment = tuple[str, str, str]


class _SegmentState(RobustBaseline):
    """One segment: its baseline (this object, extended) and, once it has ``min_history`` values,
    its CUSUM and that run's results.

    One object per segment rather than an entry per segment in four dicts, or a state holding a
    baseline: one look-up a result, one key and one object kept, and nothing held for the levels
    kept out of the baseline while there are none. The CUSUM is two numbers here rather than a
    ``Cusum`` object (~50 bytes a segment)."""

    __slots__ = ("recent", "held", "cusum", "run")

    def __init__(self, window: int, min_scale: float) -> None:
        super().__init__(window, min_scale)
        self.recent: Window | None = None  # the CUSUM run's results and their z, newest last: its evidence (None at rest)
        self.held: list[float] | None = None  # unusual levels kept out of the baseline
        self.cusum = 0.0  # the upper CUSUM's S
        self.run = 0  # consecutive results with S > 0


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
        self.segments: dict[Segment, _SegmentState] = {}

    @staticmethod
    def segment(result: LabResult) -> Segment:
        return result.category, result.test_item, result.city

    def _judged(self, result: LabResult) -> _SegmentState | None:
        """The result's segment, if its baseline has the history to judge by."""
        state = self.segments.get(self.segment(result))
        return state if state is not None and len(state) >= self.min_history else None

    def learn_one(self, result: LabResult) -> None:
        level = log_level(result)
        if level is not None:
            key = self.segment(result)
            self._learn(result, self.segments.get(key) or self._new(key), level)

    def _new(self, key: Segment) -> _SegmentState:
        state = self.segments[interned(key)] = _SegmentState(self.window, self.min_scale)
        return state

    def _learn(self, result: LabResult, state: _SegmentState, level: float, z: float | None = None) -> None:
        """Learn a level; ``z`` is its z-score against the baseline, when the caller has it already."""
        if len(state) < self.min_history:
            state.learn_one(level)
            return
        if z is None:
            z = state.z(level)
        state.cusum, state.run = cusum_run_step(state.cusum, state.run, min(z, self.z_cap), self.k)
        if state.run > 0:  # the run's evidence; at rest there is none, and no window is kept (most segments, most of the time)
            if state.recent is None:
                state.recent = Window(self.adapt_after)
            state.recent.append(result, z)
        else:
            state.recent = None
        if z < self.hold_z:
            state.held = None
            state.learn_one(level)
            return
        if state.held is None:
            state.held = []
        state.held.append(level)
        if len(state.held) >= self.adapt_after:  # the level has moved for good: accept it
            for value in state.held:
                state.learn_one(value)
            state.held = None

    def score_one(self, result: LabResult) -> float:
        level, state = log_level(result), self._judged(result)
        if level is None or state is None:
            return 0.0
        return state.score_one(level)

    def alerts_for(self, result: LabResult, score: float, now: datetime) -> list[Alert]:
        level, state = log_level(result), self._judged(result)
        if level is None or state is None:
            return []
        return self._judge(result, state, level, state.z(level), score, now)

    def _judge(self, result: LabResult, state: _SegmentState, level: float, z: float, score: float, now: datetime) -> list[Alert]:
        cusum = cusum_step(state.cusum, min(z, self.z_cap), self.k)
        if cusum <= self.h and (z < self.threshold_z or result.failing):
            return []
        run = state.run if cusum > self.h else 0  # the CUSUM's run so far
        earlier = state.recent.evidence(-run) if run else []
        zs = ", ".join(f"{earlier_z:.1f}" for earlier_z in state.recent.column()[-run:]) if run else ""
        usual = state.median
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
                    f"{limit_en}: {factor:.1f}× the usual level of the last {len(state)} results, a robust z-score of {z:.1f}"
                    + (
                        f", after {zs} (CUSUM {cusum:.1f} past {self.h:g}: the level has jumped)"
                        if earlier
                        else f" (alert at {self.threshold_z:g})"
                    )
                    + (". Over the limit." if result.failing else ". Not yet over the limit.")
                ),
                explanation_zh=(
                    f"{result.product_name}({result.manufacturer_name or '生产者不详'})检测值{result.value:.4g} {result.unit}{limit_zh},"
                    f"为近{len(state)}批次通常水平的{factor:.1f}倍(稳健z值{z:.1f}"
                    + (f",此前z值{zs},累积和{cusum:.1f}超过{self.h:g},水平已跃升" if earlier else "")
                    + ("),已超过限量。" if result.failing else "),尚未超过限量。")
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
        state = self.segments.get(key) or self._new(key)
        if len(state) < self.min_history:
            self._learn(result, state, level)
            return []
        z = state.z(level)
        alerts = self._judge(result, state, level, z, z_to_score(z), now)
        self._learn(result, state, level, z)
        if alerts and state.cusum > self.h:  # the CUSUM fired: a new alert needs fresh evidence
            state.cusum, state.run = 0.0, 0
            state.recent = None
        return alerts

    def reset(self) -> None:
        self.segments.clear()
