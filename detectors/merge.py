"""Fold repeated firings of one signal into one alert (ThirdEye's merge window, Alertmanager's dedup).

An alert stays open for merging while new firings of its signal arrive within ``window`` of
its last firing (event time). Merging adds the count and evidence, widens first/last seen and
keeps the highest severity and score; the id stays. A new alert's id is a UUIDv5 of detector,
signal and its first evidence, so a replay of the same results derives the same id.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from datetime import datetime, timedelta

from schemas.results import Alert, alert_id_for

MAX_EVIDENCE = 500


class AlertMerger:
    def __init__(self, window: timedelta = timedelta(days=14), windows: dict[str, timedelta] | None = None) -> None:
        self.window = window
        self.windows = windows or {}  # per-detector override
        self.open: dict[tuple[str, str], Alert] = {}

    def merge(self, firing: Alert) -> Alert:
        """The alert to publish for this firing: a new one, or the updated open one."""
        key = (firing.detector, firing.signal)
        current = self.open.get(key)
        window = self.windows.get(firing.detector, self.window)
        if current is not None and firing.first_seen - current.last_seen <= window:
            evidence = list(dict.fromkeys(current.evidence + firing.evidence))[:MAX_EVIDENCE]
            merged = dataclasses.replace(
                firing,
                alert_id=current.alert_id,
                severity=max(current.severity, firing.severity, key=lambda s: s.rank),
                score=max(current.score, firing.score),
                cities=sorted(set(current.cities) | set(firing.cities)),
                labs=sorted(set(current.labs) | set(firing.labs)),
                evidence=evidence,
                count=current.count + firing.count,
                first_seen=min(current.first_seen, firing.first_seen),
                last_seen=max(current.last_seen, firing.last_seen),
                detected_at=current.detected_at,
            )
        else:
            merged = dataclasses.replace(firing, alert_id=alert_id_for(firing.detector, f"{firing.signal}\x1f{firing.evidence[0]}"))
        self.open[key] = merged
        return merged

    def restore(self, alerts: Iterable[Alert]) -> None:
        """Reopen stored alerts (after a restart) so that new firings merge into them."""
        for alert in alerts:
            key = (alert.detector, alert.signal)
            current = self.open.get(key)
            if current is None or alert.last_seen >= current.last_seen:
                self.open[key] = alert

    def expire(self, now: datetime) -> None:
        """Forget alerts that can no longer merge (keeps memory bounded)."""
        longest = max([self.window, *self.windows.values()])
        self.open = {k: a for k, a in self.open.items() if now - a.last_seen <= longest}

    def reset(self) -> None:
        self.open.clear()
