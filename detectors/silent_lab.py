"""A lab that has gone silent: nothing published for much longer than its usual cadence.

The clock is event time (the latest ``published_at`` seen from any lab), so a backtest and
a live worker judge alike, and a pipeline outage does not make every lab look silent.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from detectors.base import Detector, firing
from detectors.univariate import RobustBaseline
from detectors.window import interned
from schemas.catalogue import city_name
from schemas.results import Alert, LabResult, Severity


@dataclass(slots=True)
class _Lab:
    last: LabResult
    gaps: RobustBaseline = field(default_factory=lambda: RobustBaseline(window=200))  # hours between reports, kept sorted too
    fired_for: datetime | None = None  # the last report of the silence already alerted
    limit: timedelta | None = None  # how long a silence must last to be unusual (cached)


class SilentLab(Detector):
    name = "silent_lab"
    per_category = False  # a lab's cadence spans every category it tests

    def __init__(self, factor: float = 4.0, min_silence: timedelta = timedelta(hours=6), min_gaps: int = 20) -> None:
        self.factor, self.min_silence, self.min_gaps = factor, min_silence, min_gaps
        self.labs: dict[str, _Lab] = {}
        self.clock: datetime | None = None

    def learn_one(self, result: LabResult) -> None:
        self._learn(result)

    def _learn(self, result: LabResult) -> tuple[bool, bool]:
        """Learn a result; whether it moved the clock, and whether it changed its lab."""
        lab = self.labs.get(result.lab_id)
        changed = False
        if lab is None:
            self.labs[interned(result.lab_id)] = _Lab(result)
            changed = True
        elif result.published_at > lab.last.published_at:
            if result.report_id != lab.last.report_id:
                lab.gaps.learn_one((result.published_at - lab.last.published_at).total_seconds() / 3600)
                lab.limit = self.threshold(lab)
            lab.last, changed = result, True
        if self.clock is None or result.published_at > self.clock:
            self.clock = result.published_at
            return True, changed
        return False, changed

    def score_one(self, result: LabResult) -> float:
        return 0.0  # a result is the opposite of silence

    def alerts_for(self, result: LabResult, score: float, now: datetime) -> list[Alert]:
        return []

    def process_one(self, result: LabResult, now: datetime) -> list[Alert]:
        """Judge the silences the result may have changed: every lab's when it moved the clock, else its own lab's."""
        moved, changed = self._learn(result)
        if moved:
            return self.flush(now)
        alert = self._judge(result.lab_id, self.labs[result.lab_id], now) if changed else None
        return [alert] if alert else []

    def threshold(self, lab: _Lab) -> timedelta | None:
        """How long a silence must last to be unusual for this lab."""
        if len(lab.gaps) < self.min_gaps:
            return None
        return max(self.min_silence, timedelta(hours=self.factor * lab.gaps.quantile(0.99)))

    def flush(self, now: datetime) -> list[Alert]:
        if self.clock is None:
            return []
        return [alert for lab_id, lab in self.labs.items() if (alert := self._judge(lab_id, lab, now))]

    def _judge(self, lab_id: str, lab: _Lab, now: datetime) -> Alert | None:
        limit = lab.limit
        silence = self.clock - lab.last.published_at
        if limit is None or silence <= limit or lab.fired_for == lab.last.published_at:
            return None
        lab.fired_for = lab.last.published_at
        usual = lab.gaps.median
        hours = silence.total_seconds() / 3600
        city = lab.last.city
        alert = firing(
            self.name,
            lab_id,
            severity=Severity.NOT_SERIOUS,
            score=min(1.0, silence / (2 * limit)),
            title=f"Lab {lab_id} ({city_name(city)}) has gone silent",
            title_zh=f"检验机构{lab_id}({city_name(city, 'zh')})已停止报送数据",
            explanation=(
                f"Lab {lab_id} ({lab.last.lab_name}) has published nothing for {hours:.1f} hours (up to the latest report "
                f"from any lab); it usually publishes every {usual:.2f} hours, and a silence over {limit.total_seconds() / 3600:.1f} "
                "hours is unusual for it. Its results are missing from every other detector meanwhile."
            ),
            explanation_zh=(
                f"检验机构{lab_id}({lab.last.lab_name})已{hours:.1f}小时未报送结果,通常每{usual:.2f}小时报送一次;"
                "期间其他预警模型缺少该机构数据。"
            ),
            category=lab.last.category,
            evidence=[lab.last],
            labs=[lab_id],
            now=now,
        )
        alert.last_seen = self.clock  # the silence was observed up to here (event time)
        return alert

    def reset(self) -> None:
        self.labs.clear()
        self.clock = None
