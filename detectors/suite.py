"""All detectors behind one call, with repeated firings merged into alerts.

The same suite runs in the stream worker, in ``riskwatch backtest`` and in the benchmark:
``process`` for live results (alerts out), ``warm`` to rebuild state from history (no alerts),
``restore`` to reopen stored alerts so that new firings merge into them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from concurrent.futures import Executor
from datetime import datetime, timedelta

from detectors.base import Detector
from detectors.cross_city import CrossCityCluster
from detectors.drift import LimitDrift
from detectors.failure_rate import FailureRateTrend
from detectors.lab_bias import LabBias
from detectors.limit_exceedance import LimitExceedance, SeverityPolicy
from detectors.manufacturer import ManufacturerRecurrence
from detectors.merge import AlertMerger
from detectors.multivariate import MultivariateAnomaly
from detectors.silent_lab import SilentLab
from detectors.value_anomaly import ValueAnomaly
from schemas.results import Alert, LabResult

MERGE_WINDOWS = {
    "limit_exceedance": timedelta(0),  # every failing result is its own finding
    "value_anomaly": timedelta(days=7),
    "limit_drift": timedelta(days=14),
    "failure_rate": timedelta(days=14),
    "cross_city": timedelta(days=30),
    "manufacturer": timedelta(days=90),
    "lab_bias": timedelta(days=30),
    "silent_lab": timedelta(days=1),
    "multivariate": timedelta(days=30),  # a pair raised together again (a sample's own alert never repeats)
}


def default_detectors(severity: SeverityPolicy | None = None, fits: Executor | None = None) -> list[Detector]:
    """Every detector; ``fits`` runs the multivariate detector's model fits (e.g. a process pool)."""
    severity = severity or SeverityPolicy()
    return [
        LimitExceedance(severity),
        ValueAnomaly(),
        MultivariateAnomaly(fits=fits),
        LimitDrift(),
        FailureRateTrend(),
        CrossCityCluster(severe_ratio=severity.potentially_serious_ratio),
        ManufacturerRecurrence(),
        LabBias(),
        SilentLab(),
    ]


class DetectorSuite:
    def __init__(self, detectors: Sequence[Detector] | None = None, merger: AlertMerger | None = None) -> None:
        self.detectors = list(detectors) if detectors is not None else default_detectors()
        self.merger = merger or AlertMerger(windows=MERGE_WINDOWS)

    @property
    def names(self) -> list[str]:
        return [d.name for d in self.detectors]

    def process(self, results: Iterable[LabResult], now: datetime, horizon: datetime | None = None) -> list[Alert]:
        """Alerts raised or updated by these results (one version per alert id: the latest)."""
        latest: dict[str, Alert] = {}
        for alert in self.versions(results, now, horizon):
            latest[alert.alert_id] = alert
        return list(latest.values())

    def versions(self, results: Iterable[LabResult], now: datetime, horizon: datetime | None = None) -> list[Alert]:
        """Every version of the alerts these results raise or update, one per firing, in firing order.

        ``process`` publishes only the latest of each; a benchmark needs the first, whose evidence
        is what the alert was raised on. ``horizon``: the event time by which alerts too old to
        merge are forgotten, by default the latest sampling time among the results (a share of a
        batch gives the whole batch's, to forget as the whole would).
        """
        results = list(results)
        firings: list[Alert] = []
        for detector in self.detectors:
            firings.extend(detector.process_many(results, now))
        versions = [self.merger.merge(firing) for firing in firings]
        if horizon is None and results:
            horizon = max(r.sampled_at for r in results)
        if horizon is not None:  # alerts past every merge window can no longer merge: keep memory bounded
            self.merger.expire(horizon)
        return versions

    def warm(self, results: Iterable[LabResult], now: datetime) -> None:
        """Learn from history without alerting (state rebuild after a restart or rebalance)."""
        results = list(results)
        for detector in self.detectors:
            for result in results:
                detector.learn_one(result)
            detector.flush(now)  # judged, and deliberately not alerted: those alerts exist already

    def restore(self, alerts: Iterable[Alert]) -> None:
        self.merger.restore(alerts)

    def reset(self) -> None:
        for detector in self.detectors:
            detector.reset()
        self.merger.reset()
