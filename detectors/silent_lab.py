"""A lab that has gone silent: nothing published for much longer than its usual cadence.

The clock is event time (the latest ``published_at`` seen from any lab), so a backtest and
a live worker judge alike, and a pipeline outage does not make every lab look silent.
"""

from __future__ import annotations

import statistics
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from detectors.base import Detector, firing
from schemas.catalogue import city_name
from schemas.results import Alert, LabResult, Severity


@dataclass(slots=True)
class _Lab:
    last: LabResult
    gaps: deque = field(default_factory=lambda: deque(maxlen=200))  # hours between reports
    fired_for: datetime | None = None  # the last report of the silence already alerted
    limit: timedelta | None = None  # how long a silence must last to be unusual (cached)


class SilentLab(Detector):
    name = "silent_lab"

    def __init__(self, factor: float = 4.0, min_silence: timedelta = timedelta(hours=6), min_gaps: int = 20) -> None:
        self.factor, self.min_silence, self.min_gaps = factor, min_silence, min_gaps
        self.labs: dict[str, _Lab] = {}
        self.clock: datetime | None = None

    def learn_one(self, result: LabResult) -> None:
        lab = self.labs.get(result.lab_id)
        if lab is None:
            self.labs[result.lab_id] = _Lab(result)
        elif result.published_at > lab.last.published_at:
            if result.report_id != lab.last.report_id:
                lab.gaps.append((result.published_at - lab.last.published_at).total_seconds() / 3600)
                lab.limit = self.threshold(lab)
            lab.last = result
        if self.clock is None or result.published_at > self.clock:
            self.clock = result.published_at

    def score_one(self, result: LabResult) -> float:
        return 0.0  # a result is the opposite of silence

    def alerts_for(self, result: LabResult, score: float, now: datetime) -> list[Alert]:
        return []

    def process_one(self, result: LabResult, now: datetime) -> list[Alert]:
        self.learn_one(result)  # every result moves the event clock: judge the silences now
        return self.flush(now)

    def threshold(self, lab: _Lab) -> timedelta | None:
        """How long a silence must last to be unusual for this lab."""
        if len(lab.gaps) < self.min_gaps:
            return None
        gaps = sorted(lab.gaps)
        p99 = gaps[min(len(gaps) - 1, int(0.99 * len(gaps)))]
        return max(self.min_silence, timedelta(hours=self.factor * p99))

    def flush(self, now: datetime) -> list[Alert]:
        if self.clock is None:
            return []
        alerts = []
        for lab_id, lab in self.labs.items():
            limit = lab.limit
            silence = self.clock - lab.last.published_at
            if limit is None or silence <= limit or lab.fired_for == lab.last.published_at:
                continue
            lab.fired_for = lab.last.published_at
            usual = statistics.median(lab.gaps)
            hours = silence.total_seconds() / 3600
            city = lab.last.city
            alerts.append(
                firing(
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
            )
            alerts[-1].last_seen = self.clock  # the silence was observed up to here (event time)
        return alerts

    def reset(self) -> None:
        self.labs.clear()
        self.clock = None
