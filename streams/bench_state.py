"""``riskwatch bench state``: what the detector suite holds per segment, and the RSS it comes to.

Issue 8 asks for RSS ≤ 500 MB with 100,000 active segments (category × test item × city). This
feeds the suite synthetic results round-robin over that many segments, ``per_segment`` each (so
that the rolling windows fill as they would), from seven cities, one lab and one maker per city and
category, seven items per sample, and measures in this process: resident memory before and after,
and each detector's state serialised (pickle) per segment, which says where the memory goes.
Results are generated as they are fed, so the figure is the detectors' and not the input's, and
reach the detectors as a worker's do: decoded from bytes, each report's names its own objects (not
the generator's few strings shared by all, which hid what keys and batches keep).
As in the worker, model fits run in the process pool of ``RISKWATCH_FIT_PROCESSES`` when given
one (its processes' resident memory is measured too), and freed heap memory goes back to the
system after a batch when the ``HeapTrimmer`` given says it is due.
"""

from __future__ import annotations

import gc
import os
import pickle
import random
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Executor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec

from detectors.suite import DetectorSuite, default_detectors
from schemas.results import LabResult, result_id_for
from streams.heap import HeapTrimmer
from streams.procfs import child_pids, rss_mb

CITIES = ("jinan", "zibo", "taian", "liaocheng", "dezhou", "binzhou", "dongying")
ITEMS = ("lead", "cadmium", "inorganic_arsenic", "total_mercury", "aflatoxin_b1", "benzoic_acid", "sorbic_acid")
_START = datetime(2026, 1, 1, tzinfo=UTC)
BATCH_RESULTS = 6_000  # about what a worker's batch of 2,000 single-report messages holds
_WIRE = msgspec.msgpack.Encoder(), msgspec.msgpack.Decoder(list[LabResult])


_REPORT_FIELDS = (  # what the results of one report share in a worker: validation builds them from one header
    "report_id", "sample_id", "lab_id", "lab_name", "city", "programme", "category", "product_name",
    "manufacturer_name", "manufacturer_uscc", "sampling_site", "site_kind", "sampled_at", "tested_at", "published_at",
)  # fmt: skip


def as_received(batch: list[LabResult]) -> list[LabResult]:
    """The batch as a worker holds it after validating its reports: the same results, each report's
    names and times its own objects, shared by the report's results (a sample's results are one report)."""
    encoder, decoder = _WIRE
    decoded, first = decoder.decode(encoder.encode(batch)), None
    for n, result in enumerate(decoded):
        if first is None or result.sample_id != first.sample_id:
            first = result
        else:
            decoded[n] = msgspec.structs.replace(result, **{name: getattr(first, name) for name in _REPORT_FIELDS})
    return decoded


@dataclass(slots=True)
class StateFigures:
    segments: int
    results: int
    seconds: float
    rss_before_mb: float
    rss_after_mb: float
    fit_processes_rss_mb: float = 0.0  # the fit pool's processes, together
    pickled_bytes: dict[str, int] = field(default_factory=dict)  # detector → its state, serialised

    @property
    def rss_bytes_per_segment(self) -> float:
        return (self.rss_after_mb - self.rss_before_mb) * 1024 * 1024 / self.segments


def children_rss_mb() -> float:
    """Resident memory of this process's children (the fit pool), together."""
    return sum(rss_mb(pid) for pid in child_pids(os.getpid()) if Path(f"/proc/{pid}").exists())


def synthetic_rounds(
    segments: int, per_segment: int, seed: int = 5, batch_results: int = BATCH_RESULTS
) -> Iterator[tuple[int, list[LabResult]]]:
    """``per_segment`` rounds; each round one result for every segment (a sample per category × city),
    in batches of whole samples, ``batch_results`` results or a sample more, each with its round's number."""
    rng = random.Random(seed)
    categories = max(1, -(-segments // (len(ITEMS) * len(CITIES))))
    for round_ in range(per_segment):
        batch: list[LabResult] = []
        for c in range(categories):
            category = f"bench/category_{c:05d}"
            for k, city in enumerate(CITIES):
                at = _START + timedelta(hours=round_ * 24 + k)
                lab, sample = f"LAB-{city}", f"S{c}-{k}-{round_}"
                first_segment = (c * len(CITIES) + k) * len(ITEMS)
                for item in ITEMS[: max(0, segments - first_segment)]:
                    value = 0.02 * rng.lognormvariate(0, 0.3)
                    batch.append(
                        LabResult(
                            result_id=result_id_for(lab, sample, item),
                            report_id=f"R-{sample}",
                            sample_id=sample,
                            lab_id=lab,
                            lab_name=lab,
                            city=city,
                            programme="city_supervision",
                            category=category,
                            product_name="bench product",
                            manufacturer_name=f"maker {c}-{k}",
                            manufacturer_uscc=f"USCC{c:05d}{k}",
                            sampling_site="",
                            site_kind="",
                            sampled_at=at,
                            tested_at=at,
                            published_at=at,
                            test_item=item,
                            value=value,
                            unit="mg/kg",
                            qualitative=None,
                            lod=None,
                            limit=0.2,
                            limit_type="max",
                            limit_ratio=value / 0.2,
                            standard="GB 2762",
                            verdict="pass",
                            reported_value=value,
                            reported_unit="mg/kg",
                        )  # fmt: skip
                    )
                if len(batch) >= batch_results:
                    yield round_, as_received(batch)
                    batch = []
        if batch:
            yield round_, as_received(batch)


def measure(
    segments: int,
    per_segment: int,
    progress: Callable[[int, int], None] | None = None,
    fits: Executor | None = None,
    heap: HeapTrimmer | None = None,
) -> StateFigures:
    gc.collect()
    before = rss_mb()
    suite = DetectorSuite(default_detectors(fits=fits))
    started, fed = time.perf_counter(), 0
    for round_, batch in synthetic_rounds(segments, per_segment):
        suite.process(batch, batch[-1].published_at)
        fed += len(batch)
        if heap is not None:
            heap.maybe_trim()
        if progress:
            progress(round_ + 1, per_segment)
    del batch  # the last batch: the worker holds none between batches
    seconds = time.perf_counter() - started
    gc.collect()
    if heap is not None:
        heap.maybe_trim()
    figures = StateFigures(segments, fed, seconds, before, rss_mb(), children_rss_mb())
    for detector in suite.detectors:
        figures.pickled_bytes[detector.name] = len(pickle.dumps(detector, protocol=pickle.HIGHEST_PROTOCOL))
    return figures
