"""Publish simulated lab reports to the reports topic at a steady rate.

Optionally mixes in malformed messages and republished reports, the way real labs
occasionally do, so that the dead-letter topic and deduplication have something to show.
"""

from __future__ import annotations

import asyncio
import copy
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer

from streams.simulation import Simulator

# Whole reports that break the contract, and single items that do (report otherwise fine).
_BAD_REPORTS: tuple[Callable[[dict[str, Any]], bytes], ...] = (
    lambda r: b'{"schema": "riskwatch.lab_report.v1", "report_id": ',  # truncated JSON
    lambda r: orjson.dumps({k: v for k, v in r.items() if k != "sample_id"}),  # missing field
    lambda r: orjson.dumps({**r, "city": "qingdao"}),  # not an alliance city
    lambda r: orjson.dumps({**r, "sampled_at": "2026-13-45T99:00:00"}),  # not a date
    lambda r: b"\xff\xfe not utf-8 \x00",
)
_BAD_ITEMS: tuple[Callable[[dict[str, Any]], dict[str, Any]], ...] = (
    lambda i: {**i, "unit": "bananas/kg", "value": 1.0},  # unknown unit
    lambda i: {**i, "value": -3.5, "unit": i.get("unit", "mg/kg")},  # negative
    lambda i: {**i, "value": "0.12", "unit": i.get("unit", "mg/kg")},  # number as text
    lambda i: {k: v for k, v in i.items() if k != "verdict"},  # no verdict
)


@dataclass(slots=True)
class PublishStats:
    sent: int = 0  # messages
    reports: int = 0  # well-formed reports (including republished ones)
    bad_reports: int = 0
    bad_items: int = 0
    republished: int = 0
    items: int = 0  # items in well-formed reports, bad ones included
    started: float = field(default_factory=time.monotonic)

    @property
    def rate(self) -> float:
        return self.sent / max(time.monotonic() - self.started, 1e-9)


@dataclass(slots=True)
class MessageMaker:
    """Turns simulated reports into messages, some malformed, some republished."""

    simulator: Simulator
    bad_fraction: float = 0.0
    duplicate_fraction: float = 0.0
    seed: int = 0
    rng: random.Random = field(init=False)
    recent: list[dict[str, Any]] = field(init=False, default_factory=list)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed + 1)

    def next(self, stats: PublishStats) -> tuple[bytes, bytes]:
        rng = self.rng
        if self.recent and rng.random() < self.duplicate_fraction:
            report = rng.choice(self.recent)
            stats.republished += 1
            stats.reports += 1
            stats.items += len(report["items"])
            return report["category"].encode(), orjson.dumps(report)
        report = self.simulator.next_report()
        if rng.random() < self.bad_fraction:
            if rng.random() < 0.5:
                stats.bad_reports += 1
                return report["category"].encode(), rng.choice(_BAD_REPORTS)(report)
            report = copy.deepcopy(report)
            index = rng.randrange(len(report["items"]))
            report["items"][index] = rng.choice(_BAD_ITEMS)(report["items"][index])
            stats.bad_items += 1
        self.recent = (self.recent + [report])[-200:]
        stats.reports += 1
        stats.items += len(report["items"])
        return report["category"].encode(), orjson.dumps(report)


async def publish(
    bootstrap: str,
    topic: str,
    maker: MessageMaker,
    *,
    rate: float,
    count: int | None = None,
    duration: float | None = None,
    stop: asyncio.Event | None = None,
    on_progress: Callable[[PublishStats], None] | None = None,
    security: dict | None = None,
) -> PublishStats:
    """Send until count, duration or stop, paced to rate messages per second."""
    stats = PublishStats()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, acks="all", **(security or {}))
    await producer.start()
    try:
        deadline = None if duration is None else time.monotonic() + duration
        tick = 0.05
        pending = []
        while (count is None or stats.sent < count) and (deadline is None or time.monotonic() < deadline):
            if stop is not None and stop.is_set():
                break
            due = int((time.monotonic() - stats.started) * rate) + 1 - stats.sent
            if count is not None:
                due = min(due, count - stats.sent)
            for _ in range(max(due, 0)):
                key, value = maker.next(stats)
                pending.append(await producer.send(topic, value=value, key=key))
                stats.sent += 1
            if pending:
                await asyncio.gather(*pending)
                pending.clear()
            if on_progress is not None:
                on_progress(stats)
            await asyncio.sleep(tick)
        await producer.flush()
    finally:
        await producer.stop()
    return stats
