"""Univariate building blocks on plain numbers: usable on any (timestamp, value) stream.

- ``RobustBaseline``: rolling median / MAD of the last values; robust z and a score in [0, 1].
- ``Cusum``: one-sided tabular CUSUM on standardised values (ISO 7870-4).
- ``Ewma``: EWMA chart with exact time-varying limits (ISO 7870-6).
- ``trend_test``: Mann-Kendall (Kendall's tau against time) with a Theil-Sen slope.

Each keeps just the state it needs, so that thousands of segments fit in memory.
"""

from __future__ import annotations

import bisect
import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from scipy import stats

_MAD_TO_SIGMA = 1.4826  # MAD of a normal distribution × this = its standard deviation


def z_to_score(z: float) -> float:
    """Map a z-score to [0, 1]: the probability mass of a normal closer to the centre than |z|."""
    return math.erf(abs(z) / math.sqrt(2.0))


def fstdev(values: Sequence[float]) -> float:
    """Sample standard deviation in floating point (statistics.stdev is exact, with fractions, and slow)."""
    n = len(values)
    if n < 2:
        return 0.0
    mean = math.fsum(values) / n
    return math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))


def median_absolute_deviation(ordered: Sequence[float], centre: float) -> float:
    """Median of |v − centre| over values already sorted, in O(log n).

    The deviations below the centre (read backwards) and above it (read forwards) are two
    sorted runs; the median of their union is found by bisection on how many come from each.
    """
    n = len(ordered)
    split = bisect.bisect_left(ordered, centre)
    below, above = split, n - split

    def nth(k: int) -> float:  # k-th smallest deviation, 0-based
        low, high = max(0, k + 1 - above), min(k + 1, below)
        while low < high:  # take i from below and k + 1 − i from above
            i = (low + high) // 2
            if centre - ordered[split - 1 - i] < ordered[split + k - i] - centre:
                low = i + 1
            else:
                high = i
        i = low
        from_below = centre - ordered[split - i] if i > 0 else -math.inf
        from_above = ordered[split + k - i] - centre if k - i >= 0 else -math.inf
        return max(from_below, from_above)

    mid = n // 2
    return nth(mid) if n % 2 else (nth(mid - 1) + nth(mid)) / 2


class RobustBaseline:
    """Median and MAD of the last ``window`` values, kept sorted for O(window) updates."""

    __slots__ = ("window", "min_scale", "_recent", "_sorted")

    def __init__(self, window: int = 60, min_scale: float = 0.05) -> None:
        self.window = window
        self.min_scale = min_scale  # floor on the scale: identical values must not make every change infinite
        self._recent: deque[float] = deque()
        self._sorted: list[float] = []

    def __len__(self) -> int:
        return len(self._recent)

    def learn_one(self, x: float) -> None:
        self._recent.append(x)
        bisect.insort(self._sorted, x)
        if len(self._recent) > self.window:
            old = self._recent.popleft()
            del self._sorted[bisect.bisect_left(self._sorted, old)]

    @property
    def median(self) -> float:
        values, n = self._sorted, len(self._sorted)
        if n == 0:
            return math.nan
        mid = n // 2
        return values[mid] if n % 2 else (values[mid - 1] + values[mid]) / 2

    @property
    def scale(self) -> float:
        """Robust standard deviation: 1.4826 × MAD, floored at min_scale."""
        if not self._sorted:
            return math.nan
        return max(_MAD_TO_SIGMA * median_absolute_deviation(self._sorted, self.median), self.min_scale)

    def z(self, x: float) -> float:
        return (x - self.median) / self.scale

    def score_one(self, x: float) -> float:
        return z_to_score(self.z(x)) if self._sorted else 0.0


@dataclass(slots=True)
class Cusum:
    """Upper one-sided CUSUM: S = max(0, S + z − k); signals when S > h (in standard deviations)."""

    k: float = 0.5
    h: float = 5.0
    s: float = 0.0
    run: int = 0  # consecutive updates with S > 0

    def update(self, z: float) -> bool:
        self.s = max(0.0, self.s + z - self.k)
        self.run = self.run + 1 if self.s > 0 else 0
        return self.s > self.h

    def reset(self) -> None:
        self.s, self.run = 0.0, 0


@dataclass(slots=True)
class Ewma:
    """EWMA of standardised values with the exact limit L·sqrt(λ/(2−λ)·(1−(1−λ)^{2t}))."""

    lam: float = 0.2
    width: float = 3.0
    value: float = 0.0
    t: int = 0

    def update(self, z: float) -> bool:
        self.t += 1
        self.value = self.lam * z + (1 - self.lam) * self.value
        return self.value > self.limit

    @property
    def limit(self) -> float:
        return self.width * math.sqrt(self.lam / (2 - self.lam) * (1 - (1 - self.lam) ** (2 * self.t)))

    def reset(self) -> None:
        self.value, self.t = 0.0, 0


@dataclass(frozen=True, slots=True)
class Trend:
    tau: float  # Kendall's tau of value against order: +1 steadily rising
    p_value: float  # one-sided, for a rising trend
    slope: float  # Theil-Sen slope per step
    level: float  # Theil-Sen line at the last point


def trend_test(values: list[float]) -> Trend:
    """Mann-Kendall test for a rising trend with the Theil-Sen slope (values in arrival order)."""
    n = len(values)
    order = list(range(n))
    tau, p_two_sided = stats.kendalltau(order, values)
    if math.isnan(tau):  # all values equal
        return Trend(0.0, 1.0, 0.0, values[-1] if values else math.nan)
    slope, intercept, _, _ = stats.theilslopes(values, order)
    p_rising = p_two_sided / 2 if tau > 0 else 1 - p_two_sided / 2
    return Trend(float(tau), float(p_rising), float(slope), float(intercept + slope * (n - 1)))


@dataclass(slots=True)
class RateEstimate:
    """A failure rate with exponential forgetting and a prior, so that a new segment starts sensible.

    The prior (``prior_rate`` worth ``prior_weight`` observations) never fades; observations
    fade with a memory of about ``memory`` of them.
    """

    prior_rate: float = 0.005
    prior_weight: float = 400.0
    memory: float = 5000.0
    fails: float = 0.0
    total: float = 0.0

    def learn(self, failed: bool) -> None:
        decay = 1 - 1 / self.memory
        self.fails = self.fails * decay + failed
        self.total = self.total * decay + 1

    @property
    def rate(self) -> float:
        return (self.fails + self.prior_rate * self.prior_weight) / (self.total + self.prior_weight)
