"""Page on-call staff: post alerts at or above a severity to Alertmanager's v2 API.

Alertmanager then groups, deduplicates, inhibits and routes them (deploy/alertmanager/).
Labels carry what routing needs (kind, severity, detector, category, city, lab, test item);
annotations carry the plain-language summary and a link to the Grafana drill-down. Paging is
best effort: a failed post is logged and counted, and never holds up storing results.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from urllib.parse import urlencode

import aiohttp

from schemas.results import Alert, Severity
from streams import metrics

log = logging.getLogger(__name__)


def drilldown_url(grafana_url: str, alert: Alert) -> str:
    """The category drill-down dashboard, filtered to the alert's segment and period."""
    params = {"var-category": alert.category, "from": int(alert.first_seen.timestamp() * 1000) - 30 * 86_400_000, "to": "now"}
    if alert.test_item:
        params["var-test_item"] = alert.test_item
    if len(alert.cities) == 1:
        params["var-city"] = alert.cities[0]
    return f"{grafana_url.rstrip('/')}/d/riskwatch-category/category-drill-down?{urlencode(params)}"


def to_alertmanager(alert: Alert, grafana_url: str) -> dict:
    link = drilldown_url(grafana_url, alert)
    labels = {
        "alertname": "RiskwatchAlert",
        "kind": "risk",
        "alert_id": alert.alert_id,
        "detector": alert.detector,
        "severity": alert.severity.value,
        "category": alert.category,
        "city": ",".join(alert.cities),
        "lab": ",".join(alert.labs),
    }
    if alert.test_item:
        labels["test_item"] = alert.test_item
    return {
        "labels": labels,
        "annotations": {
            "summary": alert.title,
            "summary_zh": alert.title_zh,
            "description": alert.explanation,
            "description_zh": alert.explanation_zh,
            "dashboard": link,
            "evidence": ",".join(alert.evidence[:20]),
        },
        "startsAt": alert.detected_at.isoformat(),
        "generatorURL": link,
    }


class Pager:
    def __init__(self, alertmanager_url: str, min_severity: str, grafana_url: str, timeout: float = 5.0) -> None:
        self.url = f"{alertmanager_url.rstrip('/')}/api/v2/alerts"
        self.min_rank = Severity(min_severity).rank
        self.grafana_url = grafana_url
        self.timeout = aiohttp.ClientTimeout(total=timeout)

    def worth_paging(self, alerts: Sequence[Alert]) -> list[Alert]:
        return [a for a in alerts if a.severity.rank >= self.min_rank]

    async def page(self, alerts: Sequence[Alert]) -> int:
        """Post the alerts that deserve a page; returns how many were accepted."""
        due = self.worth_paging(alerts)
        if not due:
            return 0
        body = [to_alertmanager(a, self.grafana_url) for a in due]
        try:
            async with aiohttp.ClientSession(timeout=self.timeout) as session, session.post(self.url, json=body) as response:
                if response.status >= 300:
                    raise RuntimeError(f"HTTP {response.status}: {(await response.text())[:200]}")
        except Exception as error:  # noqa: BLE001 - paging must never stop the pipeline
            metrics.PAGING_ERRORS.inc()
            log.warning("could not page %d alerts via %s: %s", len(due), self.url, error)
            return 0
        for alert in due:
            metrics.PAGES_SENT.labels(alert.severity.value).inc()
        return len(due)
