"""Two test items of a category raised together, sample after sample: the trace of a shared cause.

The isolation forest judges each sample alone and catches the sample whose items sit far from
usual together. A shared cause that lifts two items moderately in a share of samples (one
contaminated ingredient, one supplier's overdosed preservative) leaves no single sample odd
enough, but many samples in which the same two items are both up. Per pair of a category's
items, a sample is *co-elevated* when both items sit at least ``min_z`` robust standard
deviations above their usual level and ``sum_z`` together (the shift along the direction a shared
cause moves them), one of them at ``min_level`` (log of the fraction of its limit) or more. The
usual share of co-elevated samples is learned per pair from the category's own stream
(exponential forgetting over about ``memory`` samples, with a prior; a pair is scanned once it has
been seen in ``min_trials`` samples, so that a young category's first model, fitted on few samples, does
not make ordinary samples look co-elevated), and a prospective scan
(``FailureScan``, as for failure rates) fires on a run of co-elevated samples that this share makes
improbable. A pair under alert does not teach its usual share, so an ongoing cause is not learned
as normal.

State is a few arrays over the category's items (a pair is an upper-triangle cell), updated once
per batch of samples: a batch is judged against the usual shares learned before it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np

from detectors.univariate import FailureCluster, FailureScan
from detectors.window import Evidence
from schemas.results import LabResult


@dataclass(frozen=True, slots=True)
class CoElevated:
    """One co-elevated sample of a pair: the two results and their levels, log(value / limit)."""

    first: Evidence
    second: Evidence
    first_level: float
    second_level: float


@dataclass(frozen=True, slots=True)
class CoElevatedRun:
    """A run of co-elevated samples of one pair that its usual share makes improbable."""

    first: int  # item indices, first < second
    second: int
    cluster: FailureCluster
    samples: list[CoElevated]


@dataclass(slots=True)
class PairState:
    """One category's pairs: usual shares (decayed counts), scans with recent co-elevated samples, last p-values."""

    hits: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))  # decayed co-elevated samples
    trials: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))  # decayed samples holding both items
    last_p: np.ndarray = field(default_factory=lambda: np.ones((0, 0)))
    scans: dict[tuple[int, int], FailureScan] = field(default_factory=dict)

    def grow(self, items: int) -> None:
        """Room for ``items`` items (a category meets new items over time; their pairs start from the prior)."""
        have = self.hits.shape[0]
        if items > have:
            pad = ((0, items - have), (0, items - have))
            self.hits, self.trials = np.pad(self.hits, pad), np.pad(self.trials, pad)
            self.last_p = np.pad(self.last_p, pad, constant_values=1.0)


class CoElevation:
    """Judges batches of a category's samples for pairs of items raised together too often."""

    def __init__(
        self,
        min_z: float = 0.75,
        sum_z: float = 3.0,
        min_level: float = float(np.log(0.3)),
        window: timedelta = timedelta(days=30),
        min_samples: int = 3,
        min_trials: float = 100.0,
        alpha: float = 1e-6,
        prior_share: float = 0.02,
        prior_weight: float = 200.0,
        memory: float = 2000.0,
    ) -> None:
        self.min_z, self.sum_z, self.min_level = min_z, sum_z, min_level
        self.window, self.min_samples, self.min_trials, self.alpha = window, min_samples, min_trials, alpha
        self.prior_share, self.prior_weight, self.decay = prior_share, prior_weight, 1 - 1 / memory

    def usual_share(self, state: PairState) -> np.ndarray:
        return (state.hits + self.prior_share * self.prior_weight) / (state.trials + self.prior_weight)

    def judge(
        self,
        state: PairState,
        codes: Sequence[str],
        levels: np.ndarray,
        z: np.ndarray,
        times: Sequence[datetime],
        samples: Sequence[Sequence[LabResult]],
    ) -> list[CoElevatedRun]:
        """Scan a batch of samples, oldest first: ``levels`` and ``z`` are samples × items (the items
        ``codes``; NaN where a sample lacks one), ``samples`` their results. Returns the runs that fire."""
        items = len(codes)
        state.grow(items)
        present = ~np.isnan(levels)
        with np.errstate(invalid="ignore"):
            up, relevant = z >= self.min_z, levels >= self.min_level  # NaN compares False
            together = z[:, :, None] + z[:, None, :] >= self.sum_z
        upper = np.triu(np.ones((items, items), dtype=bool), 1)
        trials = present[:, :, None] & present[:, None, :] & upper
        hits = up[:, :, None] & up[:, None, :] & together & (relevant[:, :, None] | relevant[:, None, :]) & upper
        seen = trials.cumsum(axis=0)  # trials of each pair up to and including each sample
        share = self.usual_share(state)[:items, :items]
        known = state.trials[:items, :items] >= self.min_trials  # a pair is scanned once its usual share is its own
        pairs = {(int(a), int(b)) for a, b in zip(*np.nonzero(hits.any(axis=0) & known), strict=True)} | state.scans.keys()
        runs = []
        for a, b in sorted(pairs):
            runs += self._scan(state, (a, b), (codes[a], codes[b]), share[a, b], hits[:, a, b], seen[:, a, b], levels, times, samples)
        self._learn(state, trials, hits, seen)
        return runs

    def _scan(self, state, pair, pair_codes, share, hits, seen, levels, times, samples) -> list[CoElevatedRun]:
        """One pair through the batch: the scan takes each co-elevated sample, and the pair's other samples as passes."""
        a, b = pair
        scan = state.scans.get(pair) or FailureScan(self.window)
        runs, counted = [], 0
        for s in np.flatnonzero(hits):
            before = int(seen[s]) - 1  # the pair's trials in this batch before this sample
            scan.add_passes(times[s], share * (before - counted), before - counted)
            scan.add(times[s], share, True, _co_elevated(samples[s], pair_codes, levels[s, a], levels[s, b]))
            counted = before + 1
            cluster = scan.cluster(min_failures=self.min_samples)
            state.last_p[a, b] = cluster.p_value if cluster else 1.0
            if cluster is not None and cluster.p_value < self.alpha:
                runs.append(CoElevatedRun(a, b, cluster, scan.payloads(cluster.start)))
        rest = int(seen[-1]) - counted
        scan.add_passes(max(times), share * rest, rest)
        if scan.failures is None:  # nothing recent: a fresh scan is the same, so keep none
            state.scans.pop(pair, None)
            state.last_p[a, b] = 1.0
        else:
            state.scans[pair] = scan
        return runs

    def _learn(self, state: PairState, trials: np.ndarray, hits: np.ndarray, seen: np.ndarray) -> None:
        """Fold the batch into the usual shares as one forgetting update per trial would (later trials weigh more)."""
        items, total = trials.shape[1], seen[-1]
        weights = np.where(trials, self.decay ** (total[None] - seen), 0.0)
        fade = self.decay**total
        learning = state.last_p[:items, :items] >= self.alpha
        usual_hits, usual_trials = state.hits[:items, :items], state.trials[:items, :items]  # views, written in place
        usual_hits[...] = np.where(learning, usual_hits * fade + (weights * hits).sum(axis=0), usual_hits)
        usual_trials[...] = np.where(learning, usual_trials * fade + weights.sum(axis=0), usual_trials)


def _co_elevated(results: Sequence[LabResult], codes: tuple[str, str], first_level: float, second_level: float) -> CoElevated:
    """The sample's two results, kept as ``Evidence`` (a few names and a time, not the whole result)."""
    first, second = (next(r for r in results if r.test_item == code) for code in codes)
    return CoElevated(_evidence(first), _evidence(second), float(first_level), float(second_level))


def _evidence(result: LabResult) -> Evidence:
    return Evidence(result.result_id, result.sampled_at, result.city, result.lab_id, result.synthetic)
