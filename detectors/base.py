"""The one protocol every detector follows, modelled on River's ``learn_one`` / ``score_one``.

``score_one`` says how unusual a result is (0 normal … 1 certainly anomalous) without changing
state; ``learn_one`` updates state; ``process_one`` does both and returns the alerts that the
result raises. Rebuilding state after a restart is ``learn_one`` over recent history: no
alerts come out of it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable
from datetime import datetime

from schemas.results import Alert, LabResult


class Detector(ABC):
    name: str

    def learn_one(self, result: LabResult) -> None:  # noqa: B027 - stateless detectors learn nothing
        """Update state with a result that has been seen (live or replayed)."""

    @abstractmethod
    def score_one(self, result: LabResult) -> float:
        """How anomalous the result is, in [0, 1], without learning from it."""

    @abstractmethod
    def alerts_for(self, result: LabResult, score: float, now: datetime) -> list[Alert]:
        """The alerts a scored result raises (before it is learned)."""

    def process_one(self, result: LabResult, now: datetime) -> list[Alert]:
        """Score, alert, then learn: the live path."""
        alerts = self.alerts_for(result, self.score_one(result), now)
        self.learn_one(result)
        return alerts

    def process_many(self, results: Iterable[LabResult], now: datetime) -> list[Alert]:
        alerts: list[Alert] = []
        for result in results:
            alerts.extend(self.process_one(result, now))
        return alerts
