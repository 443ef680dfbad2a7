"""Pure detection logic: no Kafka, no ClickHouse, no network.

Every detector follows the protocol in ``detectors.base``, so the same object runs in a
stream worker, a backtest and a notebook.
"""

from detectors.base import Detector
from detectors.limit_exceedance import LimitExceedance, SeverityPolicy

__all__ = ["Detector", "LimitExceedance", "SeverityPolicy"]
