"""``riskwatch backtest FILE``: the alerts that would have fired on a historical file, no Kafka.

Reads lab reports as JSON Lines (one report per line, the contract; rejected lines are
counted with their reasons) or results as CSV (the ``results`` table's columns, e.g. from
``riskwatch sql --format csv "SELECT * FROM results FINAL"``), orders them by publication
time as they would have arrived, and runs the same detector suite as the worker, in one process
or with the categories shared among several.
"""

from __future__ import annotations

import csv
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson

from detectors.base import Detector
from detectors.suite import DetectorSuite, default_detectors
from schemas.results import Alert, LabResult
from schemas.validation import ValidationPolicy, validate_report
from streams.backtest_shards import CategoryProcesses, latest_alerts

_POLICY = ValidationPolicy(max_age=timedelta(days=36500), max_future_skew=timedelta(days=1))
_FLOATS = {"value", "lod", "limit", "limit_ratio", "reported_value"}
_INTS = {"source_partition", "source_offset"}
_TIMES = {"sampled_at", "tested_at", "published_at"}
_FIELDS = set(LabResult.__struct_fields__)


@dataclass(slots=True)
class BacktestOutcome:
    results: int = 0
    rejected: Counter = field(default_factory=Counter)  # reason code → lines
    alerts: list[Alert] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def results_per_second(self) -> float:
        return self.results / self.seconds if self.seconds else 0.0


def _from_csv_row(row: dict[str, str]) -> LabResult:
    data: dict = {}
    for name, text in row.items():
        key = "limit" if name == "limit_value" else name
        if key not in _FIELDS:
            continue
        if key in _FLOATS:
            data[key] = float(text) if text not in ("", "\\N", "None") else None
        elif key in _INTS:
            data[key] = int(text) if text else -1
        elif key in _TIMES:
            ts = datetime.fromisoformat(text)
            data[key] = ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)
        elif key == "synthetic":
            data[key] = text.lower() in ("true", "1")
        elif key == "qualitative":
            data[key] = text or None
        else:
            data[key] = text
    return LabResult(**data)


def read_results(path: Path, outcome: BacktestOutcome) -> Iterator[LabResult]:
    if path.suffix.lower() == ".csv":
        with path.open(newline="", encoding="utf-8") as handle:
            for row in csv.DictReader(handle):
                yield _from_csv_row(row)
        return
    now = datetime.now(UTC)
    with path.open("rb") as handle:
        for line in handle:
            if not line.strip():
                continue
            validated = validate_report(line.rstrip(b"\r\n"), now=now, policy=_POLICY)
            for rejection in validated.rejections:
                outcome.rejected[rejection.code] += 1
            yield from validated.results


def backtest(
    path: Path,
    detectors: Callable[[], list[Detector]] = default_detectors,
    chunk: int = 5000,
    progress: Callable[[int, int], None] | None = None,
    processes: int = 1,
) -> BacktestOutcome:
    """Run every detector ``detectors`` makes over a file; alerts are the latest version of each.

    With ``processes`` > 1 the categories are shared among that many processes
    (``streams.backtest_shards``): the same alerts, sooner on more cores."""
    outcome = BacktestOutcome()
    with CategoryProcesses(detectors, processes) if processes > 1 else nullcontext() as shares:
        results = sorted(read_results(path, outcome), key=lambda r: (r.published_at, r.sampled_at))
        outcome.results = len(results)
        chunks = [results[start : start + chunk] for start in range(0, len(results), chunk)]
        started = time.perf_counter()
        if shares is not None:
            latest = shares.latest_alerts(chunks, progress)
        else:
            latest = latest_alerts(chunks, DetectorSuite(detectors()), progress)
    outcome.seconds = time.perf_counter() - started
    outcome.alerts = sorted(latest.values(), key=lambda a: (a.first_seen, a.alert_id))
    return outcome


def write_jsonl(alerts: list[Alert], path: Path) -> None:
    with path.open("wb") as handle:
        for alert in alerts:
            handle.write(orjson.dumps(alert.to_wire()) + b"\n")
