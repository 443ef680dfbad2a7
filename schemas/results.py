"""The normalised lab result and the alert: the two types every stage after ingest works on.

A ``LabResult`` is one test item of one sample, its value converted to the item's canonical
unit. ``result_id`` is derived from lab, sample and test item, so a republished report yields
the same ids and can be recognised as a duplicate anywhere downstream. ``Alert.alert_id`` is
derived the same way from detector and signal, so a replay cannot create a second alert.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

# Fixed namespace: ids must be identical on every machine and across versions.
_NAMESPACE = uuid.UUID("6f1c2a57-3b8e-4d0e-9a51-2c7f4e8b9d10")


def result_id_for(lab_id: str, sample_id: str, test_item: str) -> str:
    return str(uuid.uuid5(_NAMESPACE, f"result\x1f{lab_id}\x1f{sample_id}\x1f{test_item}"))


def alert_id_for(detector: str, signal: str) -> str:
    return str(uuid.uuid5(_NAMESPACE, f"alert\x1f{detector}\x1f{signal}"))


class Severity(StrEnum):
    """RASFF's risk decision, from most to least urgent."""

    SERIOUS = "serious"
    POTENTIALLY_SERIOUS = "potentially_serious"
    NOT_SERIOUS = "not_serious"

    @property
    def rank(self) -> int:
        return {"serious": 3, "potentially_serious": 2, "not_serious": 1}[self.value]


def _ms(ts: datetime) -> int:
    return int(ts.timestamp() * 1000)


def _from_ms(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def _iso(ts: datetime) -> str:
    return ts.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class LabResult:
    result_id: str
    report_id: str
    sample_id: str
    lab_id: str
    lab_name: str
    city: str
    programme: str
    category: str
    product_name: str
    manufacturer_name: str
    manufacturer_uscc: str
    sampling_site: str
    site_kind: str
    sampled_at: datetime
    tested_at: datetime
    published_at: datetime
    test_item: str
    value: float | None  # in unit (canonical)
    unit: str
    qualitative: str | None  # detected / not_detected
    lod: float | None  # in unit
    limit: float | None  # in unit
    limit_type: str  # max / min
    limit_ratio: float | None  # > 1 means on the failing side of the limit
    standard: str
    verdict: str  # the lab's: pass / fail
    reported_value: float | None
    reported_unit: str
    synthetic: bool = False
    source_partition: int = -1
    source_offset: int = -1

    @property
    def failed(self) -> bool:
        """The lab's verdict."""
        return self.verdict == "fail"

    @property
    def failing(self) -> bool:
        """Failed by the lab's verdict, or over its limit although the lab passed it."""
        return self.verdict == "fail" or (self.limit_ratio is not None and self.limit_ratio > 1.0)

    def to_wire(self) -> dict[str, Any]:
        """JSON-ready dict for the results topic (timestamps as epoch milliseconds)."""
        data = {name: getattr(self, name) for name in _FIELDS}  # not asdict(): it deep-copies every value
        for name in _TIMESTAMPS:
            data[name] = _ms(data[name])
        return data

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> LabResult:
        data = dict(data)
        for name in _TIMESTAMPS:
            data[name] = _from_ms(data[name])
        return cls(**data)


_TIMESTAMPS = ("sampled_at", "tested_at", "published_at")
_FIELDS = tuple(f.name for f in fields(LabResult))


@dataclass(frozen=True, slots=True)
class Manufacturer:
    name: str
    uscc: str | None = None


@dataclass(slots=True)
class Alert:
    alert_id: str
    detector: str
    signal: str
    severity: Severity
    score: float
    title: str
    explanation: str
    category: str
    first_seen: datetime
    last_seen: datetime
    detected_at: datetime
    title_zh: str = ""
    explanation_zh: str = ""
    test_item: str | None = None
    cities: list[str] = field(default_factory=list)
    labs: list[str] = field(default_factory=list)
    manufacturer: Manufacturer | None = None
    evidence: list[str] = field(default_factory=list)
    count: int = 1
    synthetic: bool = False

    def to_wire(self) -> dict[str, Any]:
        """The alert as a ``riskwatch.alert.v1`` JSON document."""
        return {
            "schema": "riskwatch.alert.v1",
            "alert_id": self.alert_id,
            "detector": self.detector,
            "signal": self.signal,
            "severity": self.severity.value,
            "score": self.score,
            "title": self.title,
            "title_zh": self.title_zh,
            "explanation": self.explanation,
            "explanation_zh": self.explanation_zh,
            "category": self.category,
            "test_item": self.test_item,
            "cities": list(self.cities),
            "labs": list(self.labs),
            "manufacturer": None if self.manufacturer is None else {"name": self.manufacturer.name, "uscc": self.manufacturer.uscc},
            "evidence": list(self.evidence),
            "count": self.count,
            "first_seen": _iso(self.first_seen),
            "last_seen": _iso(self.last_seen),
            "detected_at": _iso(self.detected_at),
            "synthetic": self.synthetic,
        }

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> Alert:
        manufacturer = data.get("manufacturer")
        return cls(
            alert_id=data["alert_id"],
            detector=data["detector"],
            signal=data["signal"],
            severity=Severity(data["severity"]),
            score=float(data["score"]),
            title=data["title"],
            title_zh=data.get("title_zh", ""),
            explanation=data["explanation"],
            explanation_zh=data.get("explanation_zh", ""),
            category=data["category"],
            test_item=data.get("test_item"),
            cities=list(data["cities"]),
            labs=list(data["labs"]),
            manufacturer=None if manufacturer is None else Manufacturer(manufacturer["name"], manufacturer.get("uscc")),
            evidence=list(data["evidence"]),
            count=int(data["count"]),
            first_seen=datetime.fromisoformat(data["first_seen"]),
            last_seen=datetime.fromisoformat(data["last_seen"]),
            detected_at=datetime.fromisoformat(data["detected_at"]),
            synthetic=bool(data.get("synthetic", False)),
        )
