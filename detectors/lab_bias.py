"""A lab whose values disagree with its peers on the same category × test item (ISO 13528).

Labs do not test split samples here, so each new value of a lab is compared with its peers'
current level on the same category × item: the median of the other labs' rolling medians of
log(value / limit), in units of the labs' typical within-lab spread. That standardised
difference feeds a two-sided CUSUM per lab (ISO 13528:2022 §10.3 suggests CUSUM charts of
scores to follow a participant over time; ISO 7870-4 gives the chart): a calibration bias
shifts every difference alike and the CUSUM accumulates it within a few dozen results, while
the slack ``k`` absorbs the small, lasting differences that come from labs sampling different
markets. Differences are capped at ``z_cap`` so that one wild value cannot fire it alone.

The alert reports the lab's ISO 13528 z-score as well: its mean difference from the peers
over its recent results against the robust mean and standard deviation of all labs' means
(Algorithm A, C.3.1), |z| ≥ 2 questionable and ≥ 3 unsatisfactory.
"""

from __future__ import annotations

import math
import statistics
from array import array
from datetime import datetime

from detectors.base import Detector, firing, log_level, segment_text
from detectors.univariate import Cusum, RobustBaseline, fstdev, sorted_median
from detectors.window import Window
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


class _MakerDifferences:
    """The last ``window`` differences of one maker's products from the peers, with running sums
    per lab, so that "the other labs' mean" costs O(1) instead of a pass over the window."""

    __slots__ = ("window", "labs", "differences", "total", "by_lab")

    def __init__(self, window: int) -> None:
        self.window = window
        self.labs: list[str] = []  # the last differences' labs and values, oldest first
        self.differences = array("d")
        self.total = 0.0
        self.by_lab: dict[str, list] = {}  # lab → [sum, count]

    def others(self, lab_id: str) -> tuple[float, int]:
        """Sum and number of the differences measured by labs other than ``lab_id``."""
        own_sum, own_count = self.by_lab.get(lab_id, (0.0, 0))
        return self.total - own_sum, len(self.labs) - own_count

    def add(self, lab_id: str, difference: float) -> None:
        if len(self.labs) == self.window:
            old_lab, old = self.labs.pop(0), self.differences.pop(0)
            self.total -= old
            own = self.by_lab[old_lab]
            own[0] -= old
            own[1] -= 1
        self.labs.append(lab_id)
        self.differences.append(difference)
        self.total += difference
        own = self.by_lab.setdefault(lab_id, [0.0, 0])
        own[0] += difference
        own[1] += 1


class _Lab:
    """One lab on one segment: its rolling level, its recent differences from peers, its two CUSUMs."""

    __slots__ = ("level", "differences", "high", "low")

    def __init__(self, window: int, k: float, h: float) -> None:
        self.level = RobustBaseline(window)
        self.differences = Window(window, width=2)  # each result's difference from the peers (log units) and its z
        self.high, self.low = Cusum(k, h), Cusum(k, h)

    def restart(self) -> None:
        """Both charts from zero: after a signal, new evidence is needed for the next one."""
        self.high.reset()
        self.low.reset()


class LabBias(Detector):
    name = "lab_bias"

    def __init__(
        self,
        window: int = 60,
        min_results: int = 15,
        min_labs: int = 4,
        k: float = 0.5,
        h: float = 14.0,
        z_cap: float = 2.5,
        maker_prior: float = 6.0,
        unsatisfactory: float = 3.0,
        questionable: float = 2.0,
    ) -> None:
        self.window, self.min_results, self.min_labs = window, min_results, min_labs
        self.k, self.h, self.z_cap, self.maker_prior = k, h, z_cap, maker_prior
        self.makers: dict[tuple[str, str, str], _MakerDifferences] = {}  # segment + maker → differences from peers
        self.unsatisfactory, self.questionable = unsatisfactory, questionable
        self.values: dict[tuple[str, str], dict[str, _Lab]] = {}  # segment → lab → state

    def _peers(self, labs: dict[str, _Lab], lab_id: str) -> tuple[float, float] | None:
        """The peers' level (median of their medians) and the labs' typical spread, once enough labs have enough results."""
        peers = [lab.level for other, lab in labs.items() if other != lab_id and len(lab.level) >= self.min_results]
        if len(peers) + 1 < self.min_labs:
            return None
        return sorted_median(sorted(p.median for p in peers)), sorted_median(sorted(p.scale for p in peers))

    def _update(self, result: LabResult) -> bool:
        """Learn the result; True when one of its lab's CUSUMs signals."""
        level = log_level(result)
        if level is None:
            return False
        labs = self.values.setdefault((result.category, result.test_item), {})
        lab = labs.get(result.lab_id)
        if lab is None:
            lab = labs[result.lab_id] = _Lab(self.window, self.k, self.h)
        peers = self._peers(labs, result.lab_id)
        lab.level.learn_one(level)
        if peers is None:
            return False
        reference, scale = peers
        difference = level - reference - self._maker_offset(result, level - reference)
        z = max(-self.z_cap, min(self.z_cap, difference / scale))
        lab.differences.append(result, difference, z)
        return lab.high.update(z) | lab.low.update(-z)

    def _maker_offset(self, result: LabResult, difference: float) -> float:
        """How far this maker's products usually sit from the peers' level, as other labs measured them.

        Labs sample their own city's makers most, so a lab's market would show as a bias unless
        its makers are accounted for. The mean of the other labs' differences for this maker on
        this item, shrunk towards 0 by ``maker_prior`` pseudo-results (a few measurements say
        little about a maker); the result then joins them. Only the same item counts: a maker's
        quality need not move every hazard alike.
        """
        maker_id = result.manufacturer_uscc or result.manufacturer_name
        if not maker_id:
            return 0.0
        key = (result.category, result.test_item, maker_id)
        seen = self.makers.get(key)
        if seen is None:
            seen = self.makers[key] = _MakerDifferences(self.window)
        total, count = seen.others(result.lab_id)
        seen.add(result.lab_id, difference)
        return total / (count + self.maker_prior)

    def learn_one(self, result: LabResult) -> None:
        if self._update(result):  # judged silently, as in a rebuild: the alert, if any, exists already
            self.values[(result.category, result.test_item)][result.lab_id].restart()

    def score_one(self, result: LabResult) -> float:
        lab = self.values.get((result.category, result.test_item), {}).get(result.lab_id)
        return min(1.0, max(lab.high.s, lab.low.s) / self.h) if lab else 0.0

    def alerts_for(self, result: LabResult, score: float, now: datetime) -> list[Alert]:
        return []  # judged after learning, in process_one

    def process_one(self, result: LabResult, now: datetime) -> list[Alert]:
        if not self._update(result):
            return []
        key = (result.category, result.test_item)
        lab = self.values[key][result.lab_id]
        chart = lab.high if lab.high.s > self.h else lab.low
        run = max(1, min(chart.run, len(lab.differences)))
        alert = self._firing(key, result.lab_id, lab, run, higher=chart is lab.high, now=now)
        lab.restart()
        return [alert]

    def z_scores(self, category: str, test_item: str, min_results: int | None = None) -> dict[str, float]:
        """ISO 13528 z-score of every lab with enough results (``min_results``, by default the detector's) on this category × item."""
        least = self.min_results if min_results is None else min_results
        means = {
            lab_id: statistics.fmean(lab.differences.column(0))
            for lab_id, lab in self.values.get((category, test_item), {}).items()
            if len(lab.differences) >= least
        }
        if len(means) < self.min_labs:
            return {}
        x_star, s_star = algorithm_a(list(means.values()))
        spreads = [fstdev(lab.differences.column(0)) for lab in self.values[(category, test_item)].values() if len(lab.differences) >= 2]
        within = statistics.median(spreads) / math.sqrt(self.window) if spreads else 0.0
        return {lab_id: (mean - x_star) / max(s_star, within, 1e-9) for lab_id, mean in means.items()}

    def _firing(self, key: tuple[str, str], lab_id: str, lab: _Lab, run: int, *, higher: bool, now: datetime) -> Alert:
        category, test_item = key
        results = lab.differences.evidence(-run)
        factor = math.exp(statistics.fmean(lab.differences.column(0)[-run:]))
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
        peers = sum(1 for other, state in self.values[key].items() if other != lab_id and len(state.level) >= self.min_results)
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
        self.values.clear()
        self.makers.clear()
