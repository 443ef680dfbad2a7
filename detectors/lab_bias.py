"""A lab whose values disagree with its peers on the same category × test item (ISO 13528).

Labs do not test split samples here, and each samples its own city's market, so comparing raw
levels would blame a lab for its region's makers. Each value is therefore compared with the
same manufacturer's values measured by *other* labs: the residual log(value / limit) minus
the maker's mean level at the other labs. A lab's recent mean residual is its "participant
result" (ISO 13528's x_i); a calibration bias shifts every residual alike. The assigned value
and the standard deviation for proficiency assessment come from Algorithm A (ISO 13528
C.3.1) over all labs' means, so that the lab under suspicion cannot drag them. σ_pt never
falls below the lab's own sampling error, because labs sample different shops and makers.
z = (x_lab − x*) / σ_pt; |z| ≥ 2 is questionable and |z| ≥ 3 unsatisfactory. It fires on
|z| ≥ ``alert_z`` (3.5: each lab is assessed continually on many segments, so ISO's 3 would
page people weekly by chance) with a bias of at least ``min_factor``, persisting over
``persistence`` successive evaluations.
"""

from __future__ import annotations

import math
import statistics
from collections import deque
from datetime import datetime

from detectors.base import Detector, firing, log_level, segment_text
from detectors.univariate import fstdev
from schemas.catalogue import city_name
from schemas.results import Alert, LabResult, Severity


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


class LabBias(Detector):
    name = "lab_bias"

    def __init__(
        self,
        window: int = 40,
        min_results: int = 15,
        min_labs: int = 4,
        evaluate_every: int = 10,
        unsatisfactory: float = 3.0,
        questionable: float = 2.0,
        alert_z: float = 3.5,
        persistence: int = 3,
        min_factor: float = 1.4,
    ) -> None:
        self.window, self.min_results, self.min_labs, self.evaluate_every = window, min_results, min_labs, evaluate_every
        self.unsatisfactory, self.questionable, self.persistence = unsatisfactory, questionable, persistence
        # Stricter than ISO's 3 for alerting: every lab is assessed continually on dozens of segments.
        self.alert_z = alert_z
        self.min_effect = math.log(min_factor)  # a smaller bias is within what labs may differ by
        self.values: dict[tuple[str, str], dict[str, deque]] = {}  # segment → lab → (residual, result)
        self.makers: dict[tuple[str, str, str], deque] = {}  # segment + maker → (lab, level)
        self.pending: dict[tuple[str, str], int] = {}
        self.strikes: dict[tuple[str, str, str], int] = {}
        self.last_z: dict[tuple[str, str, str], float] = {}

    def learn_one(self, result: LabResult) -> None:
        level = log_level(result)
        maker_id = result.manufacturer_uscc or result.manufacturer_name
        if level is None or not maker_id:
            return
        key = (result.category, result.test_item)
        maker = self.makers.get((*key, maker_id))
        if maker is None:
            maker = self.makers[(*key, maker_id)] = deque(maxlen=self.window)
        others = [lv for lab_id, lv in maker if lab_id != result.lab_id]
        maker.append((result.lab_id, level))
        if len(others) < 2:
            return  # nothing to compare with yet
        labs = self.values.setdefault(key, {})
        lab = labs.get(result.lab_id)
        if lab is None:
            lab = labs[result.lab_id] = deque(maxlen=self.window)
        lab.append((level - statistics.fmean(others), result))
        self.pending[key] = self.pending.get(key, 0) + 1

    def score_one(self, result: LabResult) -> float:
        z = self.last_z.get((result.category, result.test_item, result.lab_id), 0.0)
        return min(1.0, abs(z) / (2 * self.unsatisfactory))

    def alerts_for(self, result: LabResult, score: float, now: datetime) -> list[Alert]:
        return []

    def process_one(self, result: LabResult, now: datetime) -> list[Alert]:
        self.learn_one(result)
        key = (result.category, result.test_item)
        return (
            self._evaluate(key, now) if self.pending.get(key, 0) >= self.evaluate_every else []
        )  # judged per segment in flush, once enough new results have come in

    def z_scores(self, category: str, test_item: str) -> dict[str, float]:
        """ISO 13528 z-score of every lab with enough results on this category × item."""
        return {lab: z for lab, (z, _) in self._scores(category, test_item).items()}

    def _scores(self, category: str, test_item: str) -> dict[str, tuple[float, float]]:
        """lab → (z-score, deviation of its mean from the assigned value)."""
        labs = {lab: [lv for lv, _ in values] for lab, values in self.values.get((category, test_item), {}).items()}
        labs = {lab: levels for lab, levels in labs.items() if len(levels) >= self.min_results}
        if len(labs) < self.min_labs:
            return {}
        means = {lab: statistics.fmean(levels) for lab, levels in labs.items()}
        x_star, s_star = algorithm_a(list(means.values()))
        within = statistics.median(fstdev(levels) for levels in labs.values())
        return {lab: ((means[lab] - x_star) / max(s_star, within / math.sqrt(len(labs[lab])), 1e-9), means[lab] - x_star) for lab in labs}

    def flush(self, now: datetime) -> list[Alert]:
        """Evaluate every segment with enough new results (the live path does this per result)."""
        alerts: list[Alert] = []
        for key, count in list(self.pending.items()):
            if count >= self.evaluate_every:
                alerts.extend(self._evaluate(key, now))
        return alerts

    def _evaluate(self, key: tuple[str, str], now: datetime) -> list[Alert]:
        self.pending[key] = 0
        alerts: list[Alert] = []
        for lab, (z, deviation) in self._scores(*key).items():
            strike_key = (*key, lab)
            self.last_z[strike_key] = z
            unsatisfactory = abs(z) >= self.alert_z and abs(deviation) >= self.min_effect
            self.strikes[strike_key] = self.strikes.get(strike_key, 0) + 1 if unsatisfactory else 0
            if self.strikes[strike_key] >= self.persistence:
                alerts.append(self._firing(key, lab, z, now))
        return alerts

    def _firing(self, key: tuple[str, str], lab: str, z: float, now: datetime) -> Alert:
        category, test_item = key
        values = self.values[key][lab]
        results = [r for _, r in values]
        peers = {other: statistics.fmean(lv for lv, _ in v) for other, v in self.values[key].items() if len(v) >= self.min_results}
        own = peers.pop(lab)
        peer_median = statistics.median(peers.values())
        factor = math.exp(own - peer_median)
        direction_en = "higher" if z > 0 else "lower"
        direction_zh = "偏高" if z > 0 else "偏低"
        city = results[-1].city
        where_en, where_zh = segment_text(category, test_item, None), segment_text(category, test_item, None, "zh")
        return firing(
            self.name,
            f"{category}|{test_item}|{lab}",
            severity=Severity.POTENTIALLY_SERIOUS,
            score=min(1.0, abs(z) / (2 * self.unsatisfactory)),
            title=f"Lab {lab} reads {direction_en} than its peers: {where_en}",
            title_zh=f"检验机构{lab}({city_name(city, 'zh')}){where_zh}检测值系统性{direction_zh}",
            explanation=(
                f"Over its last {len(results)} results lab {lab} ({city_name(city)}) measured {where_en} about {factor:.2f}× "
                f"the level of its {len(peers)} peers; ISO 13528 z-score {z:+.1f} (|z| ≥ {self.questionable:g} questionable, "
                f"≥ {self.unsatisfactory:g} unsatisfactory; alert at {self.alert_z:g}) in {self.persistence} successive evaluations. "
                "Check calibration, or whether this lab samples a different market."
            ),
            explanation_zh=(
                f"检验机构{lab}近{len(results)}项结果约为其他{len(peers)}家机构水平的{factor:.2f}倍,"
                f"ISO 13528 z比分数{z:+.1f}(|z|≥{self.questionable:g}为可疑,≥{self.unsatisfactory:g}为不满意),"
                f"连续{self.persistence}次评价不满意。请核查仪器校准或抽样市场差异。"
            ),
            category=category,
            test_item=test_item,
            evidence=results,
            labs=[lab],
            now=now,
        )

    def reset(self) -> None:
        self.values.clear()
        self.makers.clear()
        self.pending.clear()
        self.strikes.clear()
        self.last_z.clear()
