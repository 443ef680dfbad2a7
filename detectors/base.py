"""The one protocol every detector follows, modelled on River's ``learn_one`` / ``score_one``.

``score_one`` says how unusual a result is (0 normal … 1 certainly anomalous) without changing
state; ``learn_one`` updates state; ``process_one`` does both and returns the firings that the
result raises. ``flush`` is called after each batch (and on a timer) for detectors that judge
groups or the passing of time (lab bias, silent labs, multivariate samples). Rebuilding state
after a restart is ``learn_one`` over recent history: no alerts come out of it.

Firings are ``Alert`` objects without their final id: ``detectors.merge.AlertMerger`` folds
repeated firings of one signal into one alert and gives it a deterministic id.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from datetime import datetime

from detectors.window import Evidence
from schemas.catalogue import category_name, city_name, test_item_name
from schemas.results import Alert, LabResult, alert_id_for


class Detector(ABC):
    name: str
    # Whether state and firings depend on one category's results at a time, so that categories
    # can be run apart (the backtest's processes) and give the same alerts; silent labs watch a
    # lab across categories.
    per_category: bool = True

    def learn_one(self, result: LabResult) -> None:  # noqa: B027 - stateless detectors learn nothing
        """Update state with a result that has been seen (live or replayed)."""

    @abstractmethod
    def score_one(self, result: LabResult) -> float:
        """How anomalous the result is, in [0, 1], without learning from it."""

    @abstractmethod
    def alerts_for(self, result: LabResult, score: float, now: datetime) -> list[Alert]:
        """The firings a scored result raises (before it is learned)."""

    def process_one(self, result: LabResult, now: datetime) -> list[Alert]:
        """Score, alert, then learn: the live path."""
        alerts = self.alerts_for(result, self.score_one(result), now)
        self.learn_one(result)
        return alerts

    def process_many(self, results: Iterable[LabResult], now: datetime) -> list[Alert]:
        alerts: list[Alert] = []
        for result in results:
            alerts.extend(self.process_one(result, now))
        alerts.extend(self.flush(now))
        return alerts

    def flush(self, now: datetime) -> list[Alert]:
        """Firings that need a whole batch or the passing of time; default none."""
        return []

    def reset(self) -> None:  # noqa: B027 - stateless detectors hold nothing
        """Forget all state (e.g. when partitions are revoked)."""


def log_level(result: LabResult) -> float | None:
    """log(value / limit), oriented so that up is towards failing; None without a positive value.

    Working on the ratio makes segments with different limits comparable and turns the
    multiplicative spread of concentrations into an additive one.
    """
    value = result.value
    if value is None or value <= 0 or not math.isfinite(value):
        return None
    if result.limit:
        return math.log(value / result.limit) if result.limit_type == "max" else math.log(result.limit / value)
    return math.log(value)


def lod_level(result: LabResult) -> float | None:
    """log(LOD / limit) of a result against an upper limit with its LOD: the level below which its
    lab reports it as not detected; None for any other result."""
    if not result.lod or not result.limit or result.limit_type != "max":
        return None
    return math.log(result.lod / result.limit)


def non_detect_level(result: LabResult, share_of_lod: float) -> float | None:
    """The level a non-detect stands in at: log(share × LOD / limit), for a result reported as not
    detected against an upper limit with its LOD; None for any other result.

    A non-detect says that the value lies below the LOD, and that is evidence too. Dropped, it
    leaves only the values above the LOD, the upper tail of every lab's, where a difference
    between labs shows less than it is.
    """
    lod = lod_level(result) if result.value is None and result.qualitative == "not_detected" else None
    return None if lod is None else lod + math.log(share_of_lod)


def segment_text(category: str, test_item: str | None, city: str | None, lang: str = "en") -> str:
    """'cadmium (as Cd) in food › grain products › rice, Zibo' in words."""
    item = test_item_name(test_item, lang) if test_item else ""
    where = category_name(category, lang)
    place = city_name(city, lang) if city else ("联盟各市" if lang == "zh" else "all alliance cities")
    if lang == "zh":
        return f"{place}{where}{item}"
    return f"{item + ' in ' if item else ''}{where}, {place}"


def percent_of_limit(level: float) -> str:
    return f"{100 * math.exp(level):.0f} % of the limit"


def firing(
    detector: str,
    signal: str,
    *,
    severity,
    score: float,
    title: str,
    title_zh: str,
    explanation: str,
    explanation_zh: str,
    category: str,
    evidence: Sequence[LabResult | Evidence],
    now: datetime,
    test_item: str | None = None,
    cities: Iterable[str] | None = None,
    labs: Iterable[str] | None = None,
    manufacturer=None,
) -> Alert:
    """An alert for one firing; its id is the one a fresh merged alert gets (see merge.py)."""
    ids = [r.result_id for r in evidence]
    times = [r.sampled_at for r in evidence]
    return Alert(
        alert_id=alert_id_for(detector, f"{signal}\x1f{ids[0]}"),
        detector=detector,
        signal=signal,
        severity=severity,
        score=float(score),  # a plain float even from numpy's arithmetic: orjson sends no numpy scalars
        title=title,
        title_zh=title_zh,
        explanation=explanation,
        explanation_zh=explanation_zh,
        category=category,
        test_item=test_item,
        cities=sorted(set(cities if cities is not None else (r.city for r in evidence))),
        labs=sorted(set(labs if labs is not None else (r.lab_id for r in evidence))),
        manufacturer=manufacturer,
        evidence=ids,
        first_seen=min(times),
        last_seen=max(times),
        detected_at=now,
        synthetic=any(r.synthetic for r in evidence),
    )
