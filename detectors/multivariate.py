"""Samples whose combination of test items is unlike the category's usual ones (Isolation Forest).

Each sample is a vector of log(value / limit) over the category's test items. A
scikit-learn IsolationForest is fitted on a sliding reference window of recent samples and
refitted every ``refit_every`` new samples, in ``flush`` (once per batch, never per result).
A sample fires when it isolates more easily than ``quantile`` of the reference, at least
``min_unusual_items`` of its items sit ``item_z`` robust standard deviations above their
usual level (a combination, not one odd item), and one of them is past
``min_fraction_of_limit``: odd and relevant to risk. A sample with a failing item is judged
too: limit exceedance alerts on the item, this alert on the combination around it (two hazards
raised together point to a shared cause, such as one contaminated input).

A shared cause that lifts two items only moderately, in a share of samples, leaves no sample odd
enough for the forest but many with the same two items up: the same samples also go through a
scan of co-elevated pairs (``detectors.co_elevation``), which fires on a run of them that the
pair's usual share makes improbable.

A refit grows ``trees_per_refit`` new trees on the current reference and drops as many of the
oldest, so that the forest keeps ``trees`` and a refit costs a fraction of a fresh fit (on 400
samples of 7 items: ~3.6 ms for 25 trees, ~1.5 ms for a refit of 5, judging the window included). Given an ``Executor``
(the worker passes a process pool), a due refit is submitted at the end of one flush and
collected at the start of the category's next one, so fits run beside the rest of the pipeline;
without one they run in place. Either way a refit is first used by the next flush: the alerts
are the same.
"""

from __future__ import annotations

import logging
import math
import statistics
from concurrent.futures import Executor, Future
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np

from detectors.base import Detector, firing, log_level, segment_text
from detectors.co_elevation import CoElevatedRun, CoElevation, PairState
from detectors.isolation import CompiledForest, FittedForest, fit_forest
from detectors.univariate import array_median
from detectors.window import interned
from schemas.catalogue import test_item_name
from schemas.results import Alert, LabResult, Severity

log = logging.getLogger(__name__)

_NOT_DETECTED = math.log(0.005)  # a non-detect sits well below any measured level
_AT_MOST_NOT_DETECTED = _NOT_DETECTED + 1e-6  # a level at or below this is the stand-in (stored in single precision)


def _usual_text(level: float) -> tuple[str, str]:
    """An item's usual level for an explanation (English, Chinese): a median at the non-detect
    stand-in means the item is usually not detected, not that it sits at 0.5 % of its limit."""
    if level <= _AT_MOST_NOT_DETECTED:
        return "not detected", "未检出"
    return f"{100 * math.exp(level):.0f} %", f"{100 * math.exp(level):.0f}%"


@dataclass(frozen=True, slots=True)
class _Model:
    items: list[str]
    medians: list[float]  # per item, standing in for items a sample lacks
    scales: list[float]  # robust standard deviation per item
    fitted: FittedForest

    def rows(self, samples: list[dict[str, float]]) -> np.ndarray:
        """The samples' levels over the model's items, a missing item at its median (what the forest scores)."""
        return self.impute(_levels(samples, self.items))

    def impute(self, levels: np.ndarray) -> np.ndarray:
        return np.where(np.isnan(levels), self.medians, levels)


def _levels(samples: list[dict[str, float]], items: list[str]) -> np.ndarray:
    """Samples × items, NaN where a sample lacks the item."""
    return np.array([[sample.get(item, math.nan) for item in items] for sample in samples]).reshape(len(samples), len(items))


def fit_model(
    reference: np.ndarray, items: list[str], quantile: float, seed: int, trees: int = 25, kept: CompiledForest | None = None
) -> _Model:
    """A model of a category's reference samples (rows of levels over ``items``, NaN where a sample
    lacks the item): ``trees`` new trees after the ``kept`` ones. A plain function, so that a
    process pool can run it."""
    missing = np.isnan(reference)
    medians = [array_median(reference[~missing[:, i], i]) if not missing[:, i].all() else _NOT_DETECTED for i in range(len(items))]
    matrix = np.where(missing, np.asarray(medians), reference)
    scales = [robust_scale(matrix[:, i], medians[i]) for i in range(matrix.shape[1])]
    return _Model(items, medians, scales, fit_forest(matrix, quantile, trees, seed, kept))


def robust_scale(levels: np.ndarray, median: float, min_detections: int = 10) -> float:
    """An item's robust standard deviation over a reference: 1.4826 × MAD, at least 0.1.

    Where most samples hold the non-detect stand-in, the median is the stand-in and the MAD 0, so
    every detection would read as tens of standard deviations up (procymidone in fresh fruit, found
    in about half the samples at 3–6 % of its limit, read as z 16–24) and count as a raised item
    in every sample that has one. There the scale comes from the detections instead: with a share
    d of the samples detected, the median detection sits at the 1 − d/2 quantile of the item's
    levels, so its distance from the stand-in is taken as that quantile's normal score. A rare
    detection is then more unusual than a common one, as it should be. With fewer than
    ``min_detections`` detections the floor stands."""
    scale = 1.4826 * array_median(np.abs(levels - median))
    if scale == 0.0 and median <= _AT_MOST_NOT_DETECTED:
        detected = levels[levels > _AT_MOST_NOT_DETECTED]
        if detected.size >= min_detections:
            share = detected.size / levels.size
            scale = array_median(detected - _NOT_DETECTED) / statistics.NormalDist().inv_cdf(1 - share / 2)
    return max(0.1, scale)


class _Samples:
    """A category's last ``size`` samples as rows of levels, a column per item in order of first
    appearance (NaN: not in that sample): one float array per category, where a dict per sample
    took some 500 bytes. Single precision, like every stored level (``detectors.window``)."""

    __slots__ = ("size", "data", "start", "count")

    def __init__(self, size: int) -> None:
        self.size, self.data, self.start, self.count = size, np.empty((0, 0), dtype=np.float32), 0, 0

    def __len__(self) -> int:
        return self.count

    def append(self, row: list[float]) -> None:
        if len(row) > self.data.shape[1]:  # new items: NaN for the samples before
            self.data = np.hstack([self.data, np.full((self.data.shape[0], len(row) - self.data.shape[1]), np.nan, dtype=np.float32)])
        capacity = self.data.shape[0]
        if self.count == capacity and capacity < self.size:  # grow, doubling up to size
            grown = np.full((min(self.size, max(16, 2 * capacity)), self.data.shape[1]), np.nan, dtype=np.float32)
            grown[: self.count] = self.data[: self.count]
            self.data, capacity = grown, grown.shape[0]
        if self.count < capacity:  # not yet full: start stays 0
            self.data[self.count] = row
            self.count += 1
        else:  # full: the newest replaces the oldest
            self.data[self.start] = row
            self.start = (self.start + 1) % capacity

    def matrix(self) -> np.ndarray:
        """The samples, oldest first (a copy, in double precision for the fit's arithmetic)."""
        return np.roll(self.data[: self.count], -self.start, axis=0).astype(np.float64)


@dataclass(slots=True)
class _Category:
    reference: _Samples
    items: list[str] = field(default_factory=list)
    model: _Model | None = None
    refit: Future | None = None  # a refit under way in the executor
    since_fit: int = 0
    fits: int = 0  # fits so far: each grows its trees from its own seed
    pairs: PairState = field(default_factory=PairState)  # co-elevated pairs, by index into items


class MultivariateAnomaly(Detector):
    name = "multivariate"

    def __init__(
        self,
        reference: int = 400,
        min_reference: int = 100,
        refit_every: int = 200,
        trees: int = 25,
        trees_per_refit: int = 5,
        margin: float = 0.0,
        quantile: float = 0.995,
        min_unusual_items: int = 2,
        item_z: float = 2.75,
        min_fraction_of_limit: float = 0.3,
        seed: int = 0,
        fits: Executor | None = None,
        co_elevation: CoElevation | None = None,
    ) -> None:
        self.reference, self.min_reference, self.refit_every, self.margin = reference, min_reference, refit_every, margin
        self.trees, self.trees_per_refit = trees, min(trees, trees_per_refit)
        self.min_level, self.seed = math.log(min_fraction_of_limit), seed
        self.quantile, self.min_unusual_items, self.item_z = quantile, min_unusual_items, item_z
        self.fits = fits
        self.co_elevation = co_elevation or CoElevation(min_level=self.min_level)
        self.categories: dict[str, _Category] = {}
        self.pending: dict[tuple[str, str], list[LabResult]] = {}  # sample → its results, until flush

    @staticmethod
    def _feature(result: LabResult) -> float | None:
        level = log_level(result)
        if level is not None:
            return level
        return _NOT_DETECTED if result.qualitative == "not_detected" and result.limit else None

    def learn_one(self, result: LabResult) -> None:
        self.pending.setdefault((result.lab_id, result.sample_id), []).append(result)

    def process_one(self, result: LabResult, now: datetime) -> list[Alert]:
        self.learn_one(result)  # samples are scored whole and in bulk, in flush
        return []

    def _refit(self, category: _Category) -> None:
        kept = category.model.fitted.forest.newest(self.trees - self.trees_per_refit) if category.model is not None else None
        grow = self.trees_per_refit if kept is not None else self.trees
        args = (category.reference.matrix(), list(category.items), self.quantile, self.seed + category.fits, grow, kept)
        category.since_fit = 0
        category.fits += 1
        if self.fits is not None:
            try:
                category.refit = self.fits.submit(fit_model, *args)
                return
            except Exception:  # noqa: BLE001 - e.g. a pool whose process was killed: fit here from now on
                log.exception("multivariate: the fit executor failed; fitting in place from now on")
                self.fits = None
        category.model = fit_model(*args)

    def _collect(self, category: _Category) -> None:
        if category.refit is None:
            return
        future, category.refit = category.refit, None
        try:
            category.model = future.result()
        except Exception:  # noqa: BLE001 - the fit was lost with its process: fit again, here
            log.exception("multivariate: a fit in the executor failed; fitting in place from now on")
            self.fits = None
            self._refit(category)

    def settle(self) -> None:
        """Wait for the fits under way and take their models (e.g. before the state is saved or measured)."""
        for category in self.categories.values():
            self._collect(category)

    def __getstate__(self) -> dict:
        """The state without the executor, which belongs to the process (and fits under way are waited for)."""
        self.settle()
        return {**self.__dict__, "fits": None}

    def score_one(self, result: LabResult) -> float:
        category = self.categories.get(result.category)
        feature = self._feature(result)
        if category is None or feature is None:
            return 0.0
        self._collect(category)
        if category.model is None:
            return 0.0
        score = float(category.model.fitted.forest.isolation(category.model.rows([{result.test_item: feature}]))[0])
        return min(1.0, max(0.0, score))

    def alerts_for(self, result: LabResult, score: float, now: datetime) -> list[Alert]:
        return []  # samples are judged whole, in flush

    def flush(self, now: datetime) -> list[Alert]:
        alerts = []
        pending, self.pending = self.pending, {}
        by_category: dict[str, list[tuple[dict[str, float], list[LabResult]]]] = {}
        for results in pending.values():
            sample = {r.test_item: f for r in results if (f := self._feature(r)) is not None}
            if sample:
                by_category.setdefault(results[0].category, []).append((sample, results))
        for code, samples in by_category.items():
            category = self.categories.get(code)
            if category is None:
                category = self.categories[interned(code)] = _Category(_Samples(self.reference))
            self._collect(category)
            if (model := category.model) is not None:  # one scoring call per category and batch
                levels = _levels([sample for sample, _ in samples], model.items)
                scores = model.fitted.forest.isolation(model.impute(levels))
                for (sample, results), score in zip(samples, scores, strict=True):
                    alert = self._judge(category, model, sample, results, float(score), now)
                    if alert is not None:
                        alerts.append(alert)
                alerts += self._judge_pairs(category, model, levels, [results for _, results in samples], now)
            for sample, _ in samples:
                for item in sample:
                    if item not in category.items:
                        category.items.append(interned(item))
                category.reference.append([sample.get(item, math.nan) for item in category.items])
                category.since_fit += 1
            due = category.since_fit >= self.refit_every or (category.model is None and category.refit is None)
            if len(category.reference) >= self.min_reference and due:
                self._refit(category)
        return alerts

    def _judge(
        self, category: _Category, model: _Model, sample: dict[str, float], results: list[LabResult], score: float, now: datetime
    ) -> Alert | None:
        if max(sample.values()) < self.min_level:
            return None
        threshold = model.fitted.reference_isolation
        if score <= threshold + self.margin:
            return None
        medians = dict(zip(model.items, model.medians, strict=True))
        scales = dict(zip(model.items, model.scales, strict=True))
        raised = [i for i in sample if i in medians and (sample[i] - medians[i]) / scales[i] >= self.item_z]
        if len(raised) < self.min_unusual_items:
            return None  # one unusual item alone is the value-anomaly detector's to judge
        unusual = sorted(sample, key=lambda item: sample[item] - medians.get(item, 0.0), reverse=True)[:3]
        usual = {i: _usual_text(medians.get(i, _NOT_DETECTED)) for i in unusual}
        parts_en = ", ".join(f"{test_item_name(i)} {100 * math.exp(sample[i]):.0f} % of limit (usually {usual[i][0]})" for i in unusual)
        parts_zh = "、".join(f"{test_item_name(i, 'zh')}达限量{100 * math.exp(sample[i]):.0f}%(通常{usual[i][1]})" for i in unusual)
        first = results[0]
        severity = Severity.POTENTIALLY_SERIOUS if max(sample.values()) >= math.log(0.8) else Severity.NOT_SERIOUS
        where_en = segment_text(first.category, None, first.city)
        where_zh = segment_text(first.category, None, first.city, "zh")
        return firing(
            self.name,
            f"{first.category}|{first.lab_id}|{first.sample_id}",
            severity=severity,
            score=min(1.0, score),
            title=f"Unusual combination of results: {first.product_name}, {where_en}",
            title_zh=f"{where_zh}{first.product_name}多项指标组合异常",
            explanation=(
                f"Sample {first.sample_id} ({first.product_name}, {first.manufacturer_name or 'unnamed maker'}) is isolated more easily "
                f"than {100 * self.quantile:g} % of the last {len(category.reference)} samples of its category (isolation score {score:.3f}, "
                f"threshold {threshold:.3f}), with {len(raised)} items raised together; most unusual: {parts_en}."
            ),
            explanation_zh=(
                f"样品{first.sample_id}({first.product_name},{first.manufacturer_name or '生产者不详'})的各项指标组合"
                f"异于该类别近{len(category.reference)}批次(孤立森林异常分{score:.3f},以往最高{threshold:.3f});"
                f"最突出:{parts_zh}。"
            ),
            category=first.category,
            evidence=results,
            now=now,
        )

    def _judge_pairs(
        self, category: _Category, model: _Model, levels: np.ndarray, samples: list[list[LabResult]], now: datetime
    ) -> list[Alert]:
        z = (levels - np.asarray(model.medians)) / np.asarray(model.scales)
        times = [results[0].sampled_at for results in samples]
        runs = self.co_elevation.judge(category.pairs, model.items, levels, z, times, samples)
        return [self._pair_firing(run, samples[0][0].category, model, now) for run in runs]

    def _pair_firing(self, run: CoElevatedRun, code: str, model: _Model, now: datetime) -> Alert:
        cluster, (first, second) = run.cluster, (model.items[run.first], model.items[run.second])
        names, names_zh = (test_item_name(first), test_item_name(second)), (test_item_name(first, "zh"), test_item_name(second, "zh"))
        typical = [
            100 * math.exp(statistics.median(s.first_level for s in run.samples)),
            100 * math.exp(statistics.median(s.second_level for s in run.samples)),
        ]
        usual = [_usual_text(model.medians[run.first]), _usual_text(model.medians[run.second])]
        share = 100 * cluster.expected / cluster.results
        highest = max(max(s.first_level, s.second_level) for s in run.samples)
        where_en, where_zh = segment_text(code, None, None), segment_text(code, None, None, "zh")
        return firing(
            self.name,
            f"{code}|{first}+{second}",
            severity=Severity.POTENTIALLY_SERIOUS if highest >= math.log(0.8) else Severity.NOT_SERIOUS,
            score=1 - cluster.p_value,
            title=f"Two items raised together repeatedly: {names[0]} and {names[1]}, {where_en}",
            title_zh=f"{where_zh}{names_zh[0]}与{names_zh[1]}多次同时偏高",
            explanation=(
                f"{cluster.failures} of the last {cluster.results} samples had {names[0]} and {names[1]} raised together "
                f"(typically {typical[0]:.0f} % and {typical[1]:.0f} % of their limits, usually {usual[0][0]} and {usual[1][0]}), "
                f"where {share:.1f} % of samples usually are, about {cluster.expected:.2g} expected (chance of this many or more: "
                f"{cluster.p_value:.1g}). Two hazards rising together point to a shared cause, such as one ingredient or supplier."
            ),
            explanation_zh=(
                f"近{cluster.results}批样品中{cluster.failures}批{names_zh[0]}与{names_zh[1]}同时偏高(中位分别达限量{typical[0]:.0f}%和"
                f"{typical[1]:.0f}%,通常{usual[0][1]}和{usual[1][1]}),通常仅{share:.1f}%的样品如此,约应{cluster.expected:.2g}批"
                f"(偶然出现的概率{cluster.p_value:.1g})。两项同时升高提示共同来源,如同一原料或供应商。"
            ),
            category=code,
            evidence=[e for s in run.samples for e in (s.first, s.second)],
            now=now,
        )

    def reset(self) -> None:
        for category in self.categories.values():
            if category.refit is not None:
                category.refit.cancel()
        self.categories.clear()
        self.pending.clear()
