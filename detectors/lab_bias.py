"""A lab whose values disagree with its peers on the same category × test item (ISO 13528).

Labs do not test split samples here, and each lab samples its own city's makers most, so a
lab's values differ from its peers' both by its calibration and by its market. Per category ×
item, the last ``segment_window`` results are modelled as log(value / limit) = level + lab +
maker + noise (a two-way additive model, fitted by least squares every ``refit_every``
results, maker effects shrunk by ``maker_prior`` pseudo-results, lab effects
centred on the median lab). Makers sampled by several labs pin down how far each maker sits from
the level, so what is left of a lab's value after its maker's effect is the lab's own
difference. Each new value's difference, in units of the model's robust residual spread, feeds a
two-sided CUSUM per lab (ISO 13528:2022 §10.3 suggests CUSUM charts of scores to follow a
participant over time; ISO 7870-4 gives the chart): a calibration bias shifts every difference
alike and the CUSUM accumulates it within a few dozen results, while the slack ``k`` absorbs
what the model leaves of labs' markets. Differences are capped at ``z_cap`` so that one wild
value cannot fire it alone.

Non-detects count: a lab reading high detects more often, so on an item mostly below the LOD its
non-detects carry much of the evidence, and its detections alone (the upper tail everywhere) hide
most of its difference. Labs' LODs differ (one instrument's is several times another's), and a
lab whose LOD is higher reports only its higher values: compared as they are, it would read high.
So a segment is censored at its labs' highest LOD: every level below it, a non-detect or a
detection under that LOD, stands in at ``non_detects_at`` × that LOD (1/√2, Hornung and Reed's
stand-in), and no lab's LOD shows as its bias.

The alert reports the lab's ISO 13528 z-score as well: its mean difference over its recent
results against the robust mean and standard deviation of all labs' means (Algorithm A, C.3.1),
|z| ≥ 2 questionable and ≥ 3 unsatisfactory.
"""

from __future__ import annotations

import math
import statistics
from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np

from detectors.base import Detector, firing, lod_level, log_level, non_detect_level, segment_text
from detectors.univariate import array_median, cusum_run_step, fstdev
from detectors.window import CodeTable, Window, interned
from schemas.catalogue import city_name
from schemas.results import Alert, LabResult, Severity

_TIED_SHARE = 0.25  # of a segment's levels at the censored stand-in, from which its scale is at least the standard deviation
_BELOW = 1e-6  # a stored level this far under the censoring level is under it (4-byte floats: a detection at the LOD is not)


def algorithm_a(values: list[float], tolerance: float = 1e-6, max_rounds: int = 50) -> tuple[float, float]:
    """Robust mean x* and standard deviation s* of ISO 13528:2022, C.3.1 (Algorithm A)."""
    x = statistics.median(values)
    s = 1.483 * statistics.median(abs(v - x) for v in values)
    for _ in range(max_rounds):
        delta = 1.5 * s
        clipped = [min(max(v, x - delta), x + delta) for v in values]
        new_x = statistics.fmean(clipped)
        new_s = 1.134 * fstdev(clipped) if len(clipped) > 1 else 0.0
        if abs(new_x - x) < tolerance and abs(new_s - s) < tolerance:
            return new_x, new_s
        x, s = new_x, new_s
    return x, s


@dataclass(frozen=True, slots=True)
class LabMakerFit:
    """The fitted two-way model of one category × item.

    Effects and counts are arrays indexed by the segment's lab and maker codes (0 for a code with
    no results in the window): a dict per fit, keyed by name, cost ~60 bytes a maker."""

    level: float  # the median lab's level, log(value / limit)
    labs: array  # lab code → its effect
    makers: array  # maker code → its effect
    scale: float  # robust standard deviation of the residuals
    counts: array  # lab code → its results in the window
    judged: int  # labs with at least min_results of them

    def lab(self, code: int) -> float:
        """A lab's effect; 0 for one the fit has not seen (coded since)."""
        return self.labs[code] if code < len(self.labs) else 0.0

    def maker(self, code: int | None) -> float:
        """A maker's effect; 0 for one the fit has not seen (coded since, or None: never coded)."""
        return self.makers[code] if code is not None and code < len(self.makers) else 0.0

    def renumbered(self, labs: Sequence[int], makers: Sequence[int]) -> LabMakerFit:
        """The same fit under fresh codes: ``labs[new]`` and ``makers[new]`` are each one's old code."""
        lab_effects = array("d", map(self.lab, labs))
        counts = array("I", (self.counts[old] if old < len(self.counts) else 0 for old in labs))
        return LabMakerFit(self.level, lab_effects, array("d", map(self.maker, makers)), self.scale, counts, self.judged)


def _numbered(codes: Sequence[int], known: int) -> tuple[np.ndarray, np.ndarray]:
    """How many times each of ``known`` codes occurs, and each occurrence renumbered among the
    codes that occur (0, 1, … in code order): the fit's arithmetic then does not depend on codes
    that have no results, so renumbering a segment's codes leaves its fits the same to the bit."""
    codes = np.asarray(codes, dtype=np.intp)
    counts = np.bincount(codes, minlength=known)
    return counts, (np.cumsum(counts > 0) - 1)[codes]


def fit_labs_and_makers(
    lab_codes: Sequence[int],
    labs_known: int,
    maker_codes: Sequence[int],
    makers_known: int,
    levels: Sequence[float],
    maker_prior: float,
    min_results: int,
    censored: int = 0,
) -> LabMakerFit:
    """Fit level + lab + maker to the levels by least squares, maker effects shrunk towards 0 by
    ``maker_prior`` pseudo-results; lab effects centred on the median of the labs with
    ``min_results`` results (the typical lab is taken as right).

    Each level's lab and maker are given as codes below ``labs_known`` and ``makers_known`` (so
    that a window of results holds 2 bytes a label). The normal equations are solved exactly: a
    maker's effect is its results' mean after their labs' levels, shrunk,
    b = (Σy − Cᵀa) / (n + prior), and putting that into the labs' equations leaves one system in
    the labs' own levels a, (diag(n) − C·D⁻¹·Cᵀ)·a = Σy − C·D⁻¹·Σy_makers, where C counts each lab's
    results of each maker and D = diag(maker count + prior). It has a row per lab (a handful), and
    is strictly diagonally dominant when the prior is positive, so always solvable. This is the
    point backfitting (alternating means) converges to, reached in one step instead of rounds.

    The scale is the residuals' robust standard deviation (1.4826 × MAD). ``censored`` of the
    levels are the censored stand-in: where they are ``_TIED_SHARE`` of them or more, their ties
    shrink the MAD (to 0 past half), and every detection would read as far out; there the scale
    is at least the residuals' standard deviation, which ties do not collapse.
    """
    y = np.asarray(levels, dtype=float)
    counts, labs = _numbered(lab_codes, labs_known)
    maker_counts, makers = _numbered(maker_codes, makers_known)
    lab_in, maker_in = counts > 0, maker_counts > 0  # the codes with results in the window
    rows, columns = int(labs.max()) + 1, int(makers.max()) + 1
    table = np.bincount(labs * columns + makers, minlength=rows * columns).reshape(rows, columns)  # C
    maker_sums = np.bincount(makers, y, columns)
    shrink = 1.0 / (maker_counts[maker_in] + maker_prior)
    weighted = table * shrink
    own = np.linalg.solve(np.diag(counts[lab_in].astype(float)) - weighted @ table.T, np.bincount(labs, y) - weighted @ maker_sums)
    maker_effects = shrink * (maker_sums - table.T @ own)
    judged = counts[lab_in] >= min_results
    level = statistics.median(own[judged if judged.any() else slice(None)].tolist())  # of a handful of labs: np.median costs 25× more
    residuals = y - own[labs] - maker_effects[makers]
    scale = 1.4826 * array_median(np.abs(residuals - array_median(residuals)))
    if censored >= _TIED_SHARE * y.size:
        scale = max(scale, float(np.std(residuals)))
    by_lab, by_maker = np.zeros(labs_known), np.zeros(makers_known)
    by_lab[lab_in], by_maker[maker_in] = own - level, maker_effects
    return LabMakerFit(
        level,
        array("d", by_lab.tobytes()),
        array("d", by_maker.tobytes()),
        scale,
        array("I", counts.astype(np.uint32).tobytes()),
        int(judged.sum()),
    )


class _Segment:
    """One category × item: its last results' labs, makers and levels (a ring), its labs' LODs, and
    its latest fit."""

    __slots__ = ("lab_names", "maker_names", "labs", "makers", "levels", "lods", "censoring", "oldest", "since_fit", "fit", "by_lab")

    def __init__(self, size: int) -> None:
        self.lab_names, self.maker_names = CodeTable(), CodeTable()
        codes = "H" if 2 * size < 1 << 16 else "I"  # codes stay ≤ 2 × size (``_forget_departed``)
        # codes into the tables above; a segment's labs are a handful, so a byte each until a 257th comes
        self.labs, self.makers = array("B"), array(codes)
        self.levels = array("f")
        self.lods: dict[str, float] | None = None  # lab → the LOD level of its latest result with one
        self.censoring = -math.inf  # the level the segment is censored at: its labs' highest LOD
        self.oldest = 0
        self.since_fit = 0
        self.fit: LabMakerFit | None = None
        self.by_lab: dict[str, _Lab] = {}

    def add(self, lab_id: str, maker_id: str, level: float, size: int) -> None:
        lab, maker = self.lab_names.code(lab_id), self.maker_names.code(maker_id)
        if lab > 255 and self.labs.typecode == "B":
            self.labs = array(self.makers.typecode, self.labs)
        if len(self.levels) < size:
            self.labs.append(lab)
            self.makers.append(maker)
            self.levels.append(level)
        else:
            self.labs[self.oldest], self.makers[self.oldest], self.levels[self.oldest] = lab, maker, level
            self.oldest = (self.oldest + 1) % size
        self.since_fit += 1
        if len(self.maker_names.names) > 2 * size or len(self.lab_names.names) > 2 * size:
            self._forget_departed()

    def _forget_departed(self) -> None:
        """Number afresh only the labs and makers still in the ring or in the latest fit: the tables
        would otherwise keep every maker a segment has ever seen. Codes keep their order, and the
        fit is carried over to the new codes, so fits and differences do not change."""
        fit, kept = self.fit, {}
        fitted = {  # the latest fit's labs and makers (those with results, or an effect, when it was made)
            "labs": {code for code, count in enumerate(fit.counts) if count} if fit else set(),
            "makers": {code for code, effect in enumerate(fit.makers) if effect} if fit else set(),
        }
        for table_name, codes_name in (("lab_names", "labs"), ("maker_names", "makers")):
            table, codes = getattr(self, table_name), getattr(self, codes_name)
            fresh = CodeTable()
            kept[codes_name] = sorted(set(codes) | fitted[codes_name])  # new code → old code
            renumbered = {old: fresh.code(table.names[old]) for old in kept[codes_name]}
            setattr(self, table_name, fresh)
            setattr(self, codes_name, array(codes.typecode, [renumbered[code] for code in codes]))
        if fit is not None:
            self.fit = fit.renumbered(kept["labs"], kept["makers"])

    def note_lod(self, lab_id: str, lod: float) -> None:
        """A lab's LOD level, from its latest result with one; the censoring level follows."""
        if self.lods is None:
            self.lods = {}
        if self.lods.get(lab_id) != lod:
            self.lods[interned(lab_id)] = lod
            self.censoring = max(self.lods.values())

    def stand_in(self, share: float) -> float:
        """The level of whatever lies under the censoring level: ``share`` × the segment's highest LOD."""
        return self.censoring + math.log(share)

    def censored(self, level: float, share: float) -> float:
        """A level as the segment compares it: under the censoring level, the stand-in."""
        return self.stand_in(share) if level < self.censoring - _BELOW else level

    def refit(self, maker_prior: float, min_results: int, share: float | None) -> None:
        """Fit the model afresh; with ``share`` (None: non-detects left out), levels under the censoring level at its stand-in."""
        self.since_fit = 0
        levels, censored = np.asarray(self.levels, dtype=float), 0
        if share is not None and self.lods:
            under = levels < self.censoring - _BELOW
            levels, censored = np.where(under, self.stand_in(share), levels), int(under.sum())
        self.fit = fit_labs_and_makers(
            self.labs, len(self.lab_names.names), self.makers, len(self.maker_names.names), levels, maker_prior, min_results, censored
        )


class _Lab(Window):
    """One lab on one segment: the trail of results a signal would cite (this object, a ``Window``,
    extended: one object a lab, not two), and the S and run of its two CUSUMs as numbers (two
    ``Cusum`` objects a lab took ~100 bytes more).

    A signal cites the results of its chart's run, and no run reaches back past the last time both
    charts were at rest. So the trail (each result's record and difference) holds only the results
    since then, at most ``window``. On a clean stream both charts are back at rest within a few
    results, and the trail stays short. (The ISO 13528 z-score comes from the segment's fit, not from here.)"""

    __slots__ = ("high", "low", "high_run", "low_run")

    def __init__(self, window: int) -> None:
        super().__init__(window)
        self.restart()

    def add(self, result: LabResult, difference: float, z: float, k: float) -> None:
        """One result: its standardised difference on both charts, higher than the peers and lower."""
        self.high, self.high_run = cusum_run_step(self.high, self.high_run, z, k)
        self.low, self.low_run = cusum_run_step(self.low, self.low_run, -z, k)
        self.follow_run(self.high_run > 0 or self.low_run > 0, result, difference)  # either chart's run

    def restart(self) -> None:
        """Both charts from zero: after a signal, new evidence is needed for the next one."""
        self.high = self.low = 0.0
        self.high_run = self.low_run = 0
        self.clear()


class LabBias(Detector):
    name = "lab_bias"

    def __init__(
        self,
        window: int = 60,
        segment_window: int = 400,
        refit_every: int = 25,
        min_results: int = 15,
        min_labs: int = 4,
        k: float = 0.5,
        h: float = 12.5,
        z_cap: float = 2.5,
        maker_prior: float = 6.0,
        min_scale: float = 0.1,
        unsatisfactory: float = 3.0,
        questionable: float = 2.0,
        non_detects_at: float | None = 1 / math.sqrt(2),
    ) -> None:
        self.window, self.segment_window, self.refit_every = window, segment_window, refit_every
        self.min_results, self.min_labs = min_results, min_labs
        self.k, self.h, self.z_cap, self.maker_prior, self.min_scale = k, h, z_cap, maker_prior, min_scale
        self.unsatisfactory, self.questionable = unsatisfactory, questionable
        self.non_detects_at = non_detects_at  # × the segment's highest LOD: the level of what is under it (None: non-detects left out)
        self.segments: dict[tuple[str, str], _Segment] = {}  # category × item → its results, fit and labs

    def _update(self, result: LabResult) -> bool:
        """Learn the result; True when one of its lab's CUSUMs signals."""
        level = log_level(result)
        with_non_detects = self.non_detects_at is not None
        if level is None and with_non_detects:
            level = non_detect_level(result, self.non_detects_at)
        if level is None:
            return False
        key = (result.category, result.test_item)
        segment = self.segments.get(key)
        if segment is None:
            segment = self.segments[interned(key)] = _Segment(self.segment_window)
        lab = segment.by_lab.get(result.lab_id)
        if lab is None:
            lab = segment.by_lab[interned(result.lab_id)] = _Lab(self.window)
        maker_id = result.manufacturer_uscc or result.manufacturer_name or ""  # unnamed makers share one effect
        if with_non_detects and (lod := lod_level(result)) is not None:
            segment.note_lod(result.lab_id, lod)
        signal = False
        fit = segment.fit
        if fit is not None and fit.judged >= self.min_labs:
            compared = segment.censored(level, self.non_detects_at) if with_non_detects else level
            difference = compared - fit.level - fit.maker(segment.maker_names.codes.get(maker_id))
            z = max(-self.z_cap, min(self.z_cap, difference / max(fit.scale, self.min_scale)))
            lab.add(result, difference, z, self.k)
            signal = lab.high > self.h or lab.low > self.h
        segment.add(result.lab_id, maker_id, level, self.segment_window)
        if segment.since_fit >= self.refit_every and len(segment.levels) >= self.min_labs * self.min_results:
            segment.refit(self.maker_prior, self.min_results, self.non_detects_at)
        return signal

    def learn_one(self, result: LabResult) -> None:
        if self._update(result):  # judged silently, as in a rebuild: the alert, if any, exists already
            self.segments[(result.category, result.test_item)].by_lab[result.lab_id].restart()

    def score_one(self, result: LabResult) -> float:
        segment = self.segments.get((result.category, result.test_item))
        lab = segment.by_lab.get(result.lab_id) if segment else None
        return min(1.0, max(lab.high, lab.low) / self.h) if lab else 0.0

    def alerts_for(self, result: LabResult, score: float, now: datetime) -> list[Alert]:
        return []  # judged after learning, in process_one

    def process_one(self, result: LabResult, now: datetime) -> list[Alert]:
        if not self._update(result):
            return []
        key = (result.category, result.test_item)
        lab = self.segments[key].by_lab[result.lab_id]
        higher = lab.high > self.h
        run = max(1, min(lab.high_run if higher else lab.low_run, len(lab)))
        alert = self._firing(key, result.lab_id, lab, run, higher=higher, now=now)
        lab.restart()
        return [alert]

    def z_scores(self, category: str, test_item: str, min_results: int | None = None) -> dict[str, float]:
        """ISO 13528 z-score of every lab with enough results (``min_results``, by default the
        detector's) in the latest fit of this category × item: the lab's effect (its results' mean
        difference from the median lab's level after their makers' effects: least squares makes the
        two one) against the robust mean and standard deviation of all labs' effects (Algorithm A),
        the latter at least the standard error of a lab's mean, so that labs agreeing closely do not
        turn noise into z-scores."""
        least = self.min_results if min_results is None else min_results
        segment = self.segments.get((category, test_item))
        fit = segment.fit if segment else None
        if fit is None:
            return {}
        effects = {segment.lab_names.names[code]: fit.labs[code] for code, count in enumerate(fit.counts) if count >= least}
        if len(effects) < self.min_labs:
            return {}
        x_star, s_star = algorithm_a(list(effects.values()))
        counts = [count for count in fit.counts if count >= least]
        within = fit.scale / math.sqrt(statistics.median(counts))
        return {lab_id: (effect - x_star) / max(s_star, within, 1e-9) for lab_id, effect in effects.items()}

    def _firing(self, key: tuple[str, str], lab_id: str, lab: _Lab, run: int, *, higher: bool, now: datetime) -> Alert:
        category, test_item = key
        results = lab.evidence(-run)
        factor = math.exp(statistics.fmean(lab.column(0)[-run:]))
        iso_z = self.z_scores(category, test_item, min_results=min(self.min_results, 5)).get(lab_id)  # a fast signal may come early
        iso_en = (
            f"; ISO 13528 z-score {iso_z:+.1f} (|z| ≥ {self.questionable:g} questionable, ≥ {self.unsatisfactory:g} unsatisfactory)"
            if iso_z is not None
            else ""
        )
        iso_zh = (
            f";ISO 13528 z比分数{iso_z:+.1f}(|z|≥{self.questionable:g}为可疑,≥{self.unsatisfactory:g}为不满意)" if iso_z is not None else ""
        )
        direction_en, direction_zh = ("higher", "偏高") if higher else ("lower", "偏低")
        city = results[-1].city
        where_en, where_zh = segment_text(category, test_item, None), segment_text(category, test_item, None, "zh")
        segment = self.segments[key]
        fit, own = segment.fit, segment.lab_names.codes.get(lab_id)
        peers = sum(1 for code, count in enumerate(fit.counts) if code != own and count >= self.min_results) if fit else 0
        return firing(
            self.name,
            f"{category}|{test_item}|{lab_id}",
            severity=Severity.POTENTIALLY_SERIOUS,
            score=min(1.0, abs(iso_z) / (2 * self.unsatisfactory)) if iso_z is not None else 0.5,
            title=f"Lab {lab_id} reads {direction_en} than its peers: {where_en}",
            title_zh=f"检验机构{lab_id}({city_name(city, 'zh')}){where_zh}检测值系统性{direction_zh}",
            explanation=(
                f"Over its last {len(results)} results lab {lab_id} ({city_name(city)}) measured {where_en} about {factor:.2f}× "
                f"the level of its {peers} peers; the CUSUM of its standardised differences from them passed {self.h:g}{iso_en}. "
                "Check calibration, or whether this lab samples a different market."
            ),
            explanation_zh=(
                f"检验机构{lab_id}近{len(results)}项结果约为其他{peers}家机构水平的{factor:.2f}倍,"
                f"与同行差异的累积和(CUSUM)超过{self.h:g}{iso_zh}。请核查仪器校准或抽样市场差异。"
            ),
            category=category,
            test_item=test_item,
            evidence=results,
            labs=[lab_id],
            now=now,
        )

    def reset(self) -> None:
        self.segments.clear()
