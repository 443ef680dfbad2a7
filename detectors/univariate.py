"""Univariate building blocks on plain numbers: usable on any (timestamp, value) stream.

- ``RobustBaseline``: rolling median / MAD of the last values; robust z and a score in [0, 1].
- ``Cusum``: one-sided tabular CUSUM on standardised values (ISO 7870-4).
- ``Ewma``: EWMA chart with exact time-varying limits (ISO 7870-6).
- ``cusum_step``, ``cusum_run_step``, ``ewma_step``, ``ewma_limit``: the same charts' formulas, for detectors that keep
  a chart's numbers in their segment's state rather than an object per chart.
- ``trend_test``: Mann-Kendall (Kendall's tau against time) with a Theil-Sen slope.
- ``FailureScan``: the most improbable recent run of failures against expected rates.

Each keeps just the state it needs, so that thousands of segments fit in memory.
"""

from __future__ import annotations

import bisect
import functools
import math
from array import array
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np

from detectors.window import interned

_MAD_TO_SIGMA = 1.4826  # MAD of a normal distribution × this = its standard deviation


def z_to_score(z: float) -> float:
    """Map a z-score to [0, 1]: the probability mass of a normal closer to the centre than |z|."""
    return math.erf(abs(z) / math.sqrt(2.0))


def normal_sf(x: float) -> float:
    """P(Z > x) for a standard normal Z, as ``scipy.special.ndtr(-x)`` gives it (to ~1e-13 relative)."""
    return 0.5 * math.erfc(x / math.sqrt(2.0))


_LOG_FACTORIALS = [math.lgamma(n + 1) for n in range(64)]  # log n!: a scan's counts stay under its 30 runs


def _poisson_term(count: int, mean: float) -> float:
    """P(X = count) for X ~ Poisson(mean), count ≥ 1 and mean > 0."""
    return math.exp(count * math.log(mean) - mean - (_LOG_FACTORIALS[count] if count < 64 else math.lgamma(count + 1)))


def poisson_tail(count: int, mean: float) -> float:
    """P(X ≥ count) for X ~ Poisson(mean), as ``scipy.special.pdtrc(count - 1, mean)`` gives it (to ~1e-13
    relative, tested).

    Two functions of ``scipy.special`` were all the detectors took from scipy, whose import costs a
    worker ~26 MB of resident memory (numpy.f2py comes with it) against a 500 MB target. Summed
    upwards from the first term while the terms fall (mean below count + 1), so that tails of 1e-12
    keep their precision; otherwise one less the head."""
    if count <= 0:
        return 1.0
    if mean <= 0.0:
        return 0.0
    if mean < count + 1:
        term = _poisson_term(count, mean)
        total, i = term, count
        while term > total * 1e-17:
            i += 1
            term *= mean / i
            total += term
        return min(1.0, total)
    term = head = math.exp(-mean)
    for i in range(1, count):
        term *= mean / i
        head += term
    return max(0.0, 1.0 - head)


def least_poisson_tail(counts: Sequence[int], means: Sequence[float]) -> tuple[int, float]:
    """The index of the smallest P(X ≥ counts[i]) for X ~ Poisson(means[i]) (the first of equals, as
    ``np.argmin``) and that tail, exactly as ``poisson_tail`` gives it.

    Summing a tail costs microseconds where scipy's did it for a whole array at once, so each tail is
    first bounded: below by its first term, P(X = count), above by that term over 1 − mean / (count + 1),
    the geometric series its falling terms stay under (and by ½ below, 1 above, where the mean is past
    count + 1). Only tails whose lower bound reaches the least upper bound are summed."""
    lowers, uppers = [], []
    for count, mean in zip(counts, means, strict=True):
        if count <= 0 or mean <= 0.0:  # poisson_tail's exact edges (1 and 0): both bounds
            lowers.append(poisson_tail(count, mean))
            uppers.append(lowers[-1])
            continue
        if mean >= count + 1:  # count is at most the median (≥ mean − log 2), so at least half the mass is in the tail
            lowers.append(0.5)
            uppers.append(1.0)
            continue
        first = _poisson_term(count, mean)
        lowers.append(first)
        uppers.append(min(1.0, first / (1.0 - mean / (count + 1))))
    reach = min(uppers) * (1 + 1e-9)  # a margin for rounding: a tail left out is certainly not the least
    best, least = -1, math.inf
    for i, lower in enumerate(lowers):
        if lower <= reach and (tail := poisson_tail(counts[i], means[i])) < least:
            best, least = i, tail
    return best, least


def fstdev(values: Sequence[float]) -> float:
    """Sample standard deviation in floating point (statistics.stdev is exact, with fractions, and slow)."""
    n = len(values)
    if n < 2:
        return 0.0
    mean = math.fsum(values) / n
    return math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))


def array_median(values: np.ndarray) -> float:
    """``np.median`` of a 1-D array without NaNs, to the bit (the middle two averaged in the array's
    dtype, as its mean does), without its ~6 µs of argument handling a call: lab bias's and the
    multivariate detector's fits, and drift's trend test, take several a call."""
    n = values.size
    if n == 0:
        return math.nan
    half = n // 2
    if n % 2:
        return float(np.partition(values, half)[half])
    low, high = np.partition(values, (half - 1, half))[half - 1 : half + 1]
    return float((low + high) / 2)


def sorted_median(ordered: Sequence[float]) -> float:
    """Median of values already sorted (nan for none): statistics.median's generality costs more than that."""
    n = len(ordered)
    if n == 0:
        return math.nan
    mid = n // 2
    return ordered[mid] if n % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def median_absolute_deviation(ordered: Sequence[float], centre: float) -> float:
    """Median of |v − centre| over values already sorted, in O(log n).

    The deviations below the centre (read backwards) and above it (read forwards) are two
    sorted runs; the k smallest of their union are found by bisection on how many come from each.
    For an even count the next smallest deviation is then the nearer of the two runs' next
    values: one bisection a call rather than two (the detectors ask once a result).
    """
    n = len(ordered)
    split = bisect.bisect_left(ordered, centre)
    below, above = split, n - split
    k = (n - 1) // 2  # the (lower) middle deviation, 0-based
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
    middle = max(from_below, from_above)
    if n % 2:
        return middle
    next_below = centre - ordered[split - 1 - i] if i < below else math.inf
    next_above = ordered[split + k + 1 - i] - centre if k + 1 - i < above else math.inf
    return (middle + min(next_below, next_above)) / 2


# Byte translation tables for RobustBaseline's ages: _OPENED[q] moves the positions at or after q one
# up (a value inserted at q), _CLOSED[p] those after p one down (the value at p removed).
_OPENED = [bytes(v + 1 if q <= v < 255 else v for v in range(256)) for q in range(256)]
_CLOSED = [bytes(v - 1 if v > p else v for v in range(256)) for p in range(256)]
_AT = [bytes((q,)) for q in range(256)]


class RobustBaseline:
    """Median and MAD of the last ``window`` values (at most 256), kept sorted for O(window) updates.

    The values live sorted as 4-byte floats (a list of Python floats takes 32 bytes a value; see
    ``detectors.window`` on the precision), and their arrival order as one byte a value: each
    value's position among the sorted ones, oldest first, which ``bytes.translate`` shifts in C
    as values come and go (three bytes a value less than keeping the values twice, 240 bytes for
    drift's 80-value references): there is one baseline per segment and detector. Both live in
    one immutable ``bytes``, the values then the positions, made afresh by one join an update:
    an array and a ``bytes`` beside it cost 90–100 bytes more a baseline, and drift and value
    anomaly keep one a segment (`riskwatch bench state`, 100,000 segments: 506 → 467 MB).
    Median and scale are read off the sorted values when asked (O(log² n)), not cached: the
    detectors ask once a result, and two cached floats cost 64 bytes a baseline."""

    __slots__ = ("window", "min_scale", "_packed")

    def __init__(self, window: int = 60, min_scale: float = 0.05) -> None:
        if not 0 < window <= 256:
            raise ValueError(f"a baseline of {window} values: its arrival order holds positions of one byte (1 to 256 values)")
        self.window = window
        self.min_scale = min_scale  # floor on the scale: identical values must not make every change infinite
        self._packed = b""  # the values sorted, 4 bytes each, then each one's sorted position, oldest first

    def __len__(self) -> int:
        return len(self._packed) // 5

    @property
    def _values(self) -> memoryview:
        """The values, sorted (a view: indexing reads a 4-byte float as a Python float)."""
        packed = self._packed
        return memoryview(packed)[: len(packed) // 5 * 4].cast("f")

    @property
    def _ages(self) -> bytes:
        """Each value's position among the sorted values, oldest first."""
        packed = self._packed
        return packed[len(packed) // 5 * 4 :]

    def learn_one(self, x: float) -> None:
        packed = self._packed
        end = len(packed) // 5 * 4  # where the values end and their positions begin
        values, ages = array("f"), packed[end:]
        values.frombytes(memoryview(packed)[:end])  # a working copy, edited in place
        if len(ages) == self.window:  # the oldest leaves first
            oldest = ages[0]
            del values[oldest]
            ages = ages[1:].translate(_CLOSED[oldest])
        at = bisect.bisect_right(values, x)
        values.insert(at, x)
        self._packed = b"".join((values, ages.translate(_OPENED[at]), _AT[at]))

    @property
    def median(self) -> float:
        return sorted_median(self._values)

    def median_and_scale(self) -> tuple[float, float]:
        """The median, and the robust standard deviation: 1.4826 × MAD, floored at min_scale (nan for no values)."""
        packed = self._packed
        if not packed:
            return math.nan, math.nan
        values = memoryview(packed)[: len(packed) // 5 * 4].cast("f")  # as ``_values``, without a property's call
        median = sorted_median(values)
        return median, max(_MAD_TO_SIGMA * median_absolute_deviation(values, median), self.min_scale)

    @property
    def scale(self) -> float:
        return self.median_and_scale()[1]

    def quantile(self, q: float) -> float:
        """The window's value at rank ``int(q × n)`` in sorted order (no interpolation; nan for none)."""
        n = len(self)
        return self._values[min(n - 1, int(q * n))] if n else math.nan

    def z(self, x: float) -> float:
        median, scale = self.median_and_scale()
        return (x - median) / scale

    def score_one(self, x: float) -> float:
        return z_to_score(self.z(x)) if self._packed else 0.0


def cusum_step(s: float, z: float, k: float) -> float:
    """An upper CUSUM's S after one more standardised value: max(0, S + z − k).

    For detectors that keep S in their segment's state: a ``Cusum`` object per segment costs
    ~64 bytes more than the float."""
    return max(0.0, s + z - k)


def cusum_run_step(s: float, run: int, z: float, k: float) -> tuple[float, int]:
    """``cusum_step`` and the run of consecutive values with S > 0 (the values behind a signal)."""
    s = cusum_step(s, z, k)
    return s, run + 1 if s > 0 else 0


def ewma_step(value: float, z: float, lam: float) -> float:
    """An EWMA after one more standardised value: λz + (1 − λ)·value."""
    return lam * z + (1 - lam) * value


def ewma_limit(lam: float, width: float, t: int) -> float:
    """The EWMA chart's exact limit after ``t`` values: L·sqrt(λ/(2−λ)·(1−(1−λ)^{2t}))."""
    return width * math.sqrt(lam / (2 - lam) * (1 - (1 - lam) ** (2 * t)))


@dataclass(slots=True)
class Cusum:
    """Upper one-sided CUSUM: S = max(0, S + z − k); signals when S > h (in standard deviations)."""

    k: float = 0.5
    h: float = 5.0
    s: float = 0.0
    run: int = 0  # consecutive updates with S > 0

    def update(self, z: float) -> bool:
        self.s, self.run = cusum_run_step(self.s, self.run, z, self.k)
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
        self.value = ewma_step(self.value, z, self.lam)
        return self.value > self.limit

    @property
    def limit(self) -> float:
        return ewma_limit(self.lam, self.width, self.t)

    def reset(self) -> None:
        self.value, self.t = 0.0, 0


@dataclass(frozen=True, slots=True)
class Trend:
    tau: float  # Kendall's tau of value against order: +1 steadily rising
    p_value: float  # one-sided, for a rising trend
    slope: float  # Theil-Sen slope per step
    level: float  # Theil-Sen line at the last point


@functools.lru_cache(maxsize=256)
def _pairs(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The pairs i < j of n values: as a mask over the n × n differences, and as (later, earlier)
    indexes. Cached (read-only), as drift windows come in a few sizes: ``np.triu_indices`` built
    afresh took three quarters of ``kendall_s``'s time."""
    upper = np.triu(np.ones((n, n), dtype=bool), 1)
    earlier, later = np.nonzero(upper)
    for pairs in (upper, later, earlier):
        pairs.flags.writeable = False
    return upper, later, earlier


def kendall_s(values: Sequence[float]) -> int:
    """Mann-Kendall S: rising pairs minus falling pairs. S > 0 is necessary for a rising trend,
    and costs microseconds where the full test costs a third of a millisecond."""
    y = np.asarray(values, dtype=float)
    return int(np.sign(y[None, :] - y[:, None])[_pairs(y.size)[0]].sum())


@functools.lru_cache(maxsize=4096)
def _kendall_exact_p(n: int, concordant: int) -> float:
    """Two-sided exact p-value of Kendall's tau for n untied values, as scipy computes it (Kendall 1970):
    ``kendalltau`` spends ~0.7 ms a call in its argument handling, the count itself microseconds."""
    c = min(concordant, n * (n - 1) // 2 - concordant)
    if n <= 2 or 4 * c == n * (n - 1):
        return 1.0
    if c == 0:
        prob = 2.0 / math.factorial(n)
    elif c == 1:
        prob = 2.0 / math.factorial(n - 1)
    else:  # the number of permutations with at most c inversions, by the recurrence of Mahonian numbers
        counts = np.zeros(c + 1)
        counts[0:2] = 1.0
        for j in range(3, n + 1):
            counts = np.cumsum(counts)
            if j <= c:
                counts[j:] -= counts[: c + 1 - j]
        prob = 2.0 * float(np.sum(counts)) / math.factorial(n)
    return min(1.0, max(0.0, prob))


def trend_test(values: list[float], s: int | None = None) -> Trend:
    """Mann-Kendall test for a rising trend with the Theil-Sen slope (values in arrival order);
    ``s``: their ``kendall_s``, when the caller has it already.

    Kendall's tau-b against time and its two-sided p-value as ``scipy.stats.kendalltau`` computes
    them (a test holds them equal: tau and the exact p-values to the bit, the approximation's to
    1e-12): exact for untied series of up to 33 values (every drift window) or with at most one
    discordant pair, otherwise the normal approximation with scipy's tie-corrected variance.
    Computed here because ``scipy.stats`` costs a process ~46 MB to import and ~0.7 ms a call in
    argument handling."""
    n = len(values)
    y, order = np.asarray(values, dtype=float), np.arange(n, dtype=float)
    pairs = n * (n - 1) // 2
    ordered = np.sort(y)
    if (ordered[1:] != ordered[:-1]).all():  # no ties, as nearly always: np.unique costs ~10 µs more
        tie_sizes = np.empty(0, dtype=np.intp)
    else:
        tie_sizes = np.unique(ordered, return_counts=True)[1]
        tie_sizes = tie_sizes[tie_sizes > 1]
    tied_pairs = int((tie_sizes * (tie_sizes - 1) // 2).sum())
    if n < 2 or tied_pairs == pairs:  # nothing to rank: too few values, or all equal
        return Trend(0.0, 1.0, 0.0, values[-1] if values else math.nan)
    s = kendall_s(y) if s is None else s
    tau = min(1.0, max(-1.0, s / math.sqrt(pairs) / math.sqrt(pairs - tied_pairs)))
    discordant = (pairs - tied_pairs - s) // 2
    if tied_pairs == 0 and (n <= 33 or min(discordant, pairs - discordant) <= 1):
        p_two_sided = _kendall_exact_p(n, pairs - discordant)
    else:
        sizes = tie_sizes.astype(float)
        variance = (n * (n - 1.0) * (2 * n + 5) - float((sizes * (sizes - 1.0) * (2 * sizes + 5)).sum())) / 18
        p_two_sided = 2 * normal_sf(abs(s / math.sqrt(variance)))
    _, later, earlier = _pairs(n)
    slope = array_median((y[later] - y[earlier]) / (later - earlier))  # Theil-Sen, as scipy.stats.theilslopes
    intercept = array_median(y) - slope * array_median(order)
    p_rising = p_two_sided / 2 if tau > 0 else 1 - p_two_sided / 2
    return Trend(float(tau), float(p_rising), slope, intercept + slope * (n - 1))


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


@dataclass(frozen=True, slots=True)
class FailureCluster:
    """The most improbable recent run of failures: from ``start`` (an index into the failures) to now."""

    start: int
    failures: int
    results: int  # results seen since the run's first failure, itself included
    expected: float  # failures the baselines expected over those results
    p_value: float  # Poisson tail of ``failures`` given ``expected``, Bonferroni-adjusted over the runs tried


@dataclass(slots=True)
class FailureScan:
    """Failures of one stream in arrival order, scanned for the most improbable recent run (a prospective scan statistic).

    Every result adds its baseline failure probability to a running total and every failure is
    stamped with the total (and count) before it, so the expected number of failures since any
    failure is one subtraction and passing results cost no memory. A run starting at each recent
    failure is tested against its expectation; the smallest tail, multiplied by the number of runs
    tried, is the cluster's p-value. Unlike a fixed window this catches a burst of two or three
    failures as soon as they happen, and a slow accumulation over the whole ``window`` too.
    """

    window: timedelta
    max_runs: int = 30  # the newest failures that may start a run
    expected: float = 0.0
    seen: int = 0
    latest: datetime | None = None
    # (at, expected before, seen before, payload); None while there are none: most streams have no
    # recent failure, and an empty deque takes some 600 bytes
    failures: deque | None = None

    def add(self, at: datetime, probability: float, failed: bool, payload: object = None) -> None:
        if failed:
            if self.failures is None:
                self.failures = deque()
            self.failures.append((at, self.expected, self.seen, payload))
        self.expected += probability
        self.seen += 1
        self._forget_before(at)

    def add_passes(self, at: datetime, probability: float, results: int) -> None:
        """``results`` that did not fail, ``probability`` their failure probabilities together (one call for many)."""
        if results:
            self.expected += probability
            self.seen += results
            self._forget_before(at)

    def _forget_before(self, at: datetime) -> None:
        """Move the clock to ``at`` if later; failures older than the window, or past ``max_runs``, leave."""
        if self.latest is None or at > self.latest:
            self.latest = at
        if self.failures is not None:
            horizon = self.latest - self.window
            while self.failures and (self.failures[0][0] < horizon or len(self.failures) > self.max_runs):
                self.failures.popleft()
            if not self.failures:
                self.failures = None

    def payloads(self, start: int = 0) -> list:
        return [entry[3] for entry in list(self.failures or ())[start:]]

    def cluster(self, min_failures: int = 2, eligible: Sequence[bool] | None = None) -> FailureCluster | None:
        """The most improbable run of at least ``min_failures`` failures ending now; ``eligible`` masks the starts allowed."""
        entries = list(self.failures or ())
        starts = [j for j in range(len(entries) - min_failures + 1) if eligible is None or eligible[j]]
        if not starts:
            return None
        counts = [len(entries) - j for j in starts]
        means = [max(self.expected - entries[j][1], 1e-12) for j in starts]
        best, tail = least_poisson_tail(counts, means)
        j = starts[best]
        p_value = min(1.0, tail * len(starts))
        return FailureCluster(j, counts[best], self.seen - entries[j][2], means[best], p_value)


class RecentFailureScans:
    """``FailureScan``s of many streams (a category in a city, a maker, an item at one maker or in one
    city), each kept only while it holds a recent failure, with the p-value of its last judged run.

    Most such streams seldom fail, so a scan is made at a stream's first failure and dropped when
    its failures have aged out: passing results of a stream without one cost nothing. A run's
    expectation counts from its first failure, so nothing before it is needed. A stream that falls
    silent is dropped too, by a sweep that runs after more additions than twice the scans kept
    (so it costs O(1) a result, amortised).
    """

    __slots__ = ("scans", "last_p", "window", "latest", "since_sweep")

    def __init__(self, window: timedelta) -> None:
        self.window = window
        self.scans: dict[tuple, FailureScan] = {}
        self.last_p: dict[tuple, float] = {}  # of the streams with a scan
        self.latest: datetime | None = None
        self.since_sweep = 0

    def add(self, key: tuple, at: datetime, probability: float, failed: bool, payload: object = None) -> FailureScan | None:
        """Add a result to its stream's scan; the scan, or None if the stream has no recent failure."""
        if self.latest is None or at > self.latest:
            self.latest = at
        scan = self.scans.get(key)
        if scan is None:
            if not failed:
                return None
            scan = self.scans[key] = FailureScan(self.window)
        scan.add(at, probability, failed, payload)
        if scan.failures is None:
            self._drop(key)
            return None
        self.since_sweep += 1
        if self.since_sweep > 2 * len(self.scans) + 64:
            self._sweep()
        return scan

    def alerting(self, key: tuple, alpha: float) -> bool:
        """Whether the stream's last judged run was below ``alpha``."""
        return self.last_p.get(key, 1.0) < alpha

    def _drop(self, key: tuple) -> None:
        del self.scans[key]
        self.last_p.pop(key, None)

    def _sweep(self) -> None:
        """Drop the scans whose newest failure is older than the window by the latest time seen."""
        self.since_sweep = 0
        horizon = self.latest - self.window
        for key in [key for key, scan in self.scans.items() if scan.failures[-1][0] < horizon]:
            self._drop(key)

    def __len__(self) -> int:
        return len(self.scans)

    def clear(self) -> None:
        self.scans.clear()
        self.last_p.clear()
        self.latest, self.since_sweep = None, 0


def runs_spanning(payloads: Sequence, key: Callable[[object], object], least: int) -> list[bool]:
    """For each failure (oldest first), whether the run from it to the newest holds ``least`` distinct keys.

    The ``eligible`` mask of ``FailureScan.cluster`` for runs that must span, say, three cities.
    """
    spans, seen = [False] * len(payloads), set()
    for j in range(len(payloads) - 1, -1, -1):
        seen.add(key(payloads[j]))
        spans[j] = len(seen) >= least
    return spans


class BaselineRates:
    """The usual failure rate of every key (a category × test item), each a ``RateEstimate`` with one prior."""

    __slots__ = ("prior", "rates")

    def __init__(self, prior_rate: float = 0.005, prior_weight: float = 400.0, memory: float = 5000.0) -> None:
        self.prior = (prior_rate, prior_weight, memory)
        self.rates: dict[tuple, RateEstimate] = {}

    def rate(self, key: tuple) -> float:
        estimate = self.rates.get(key)
        return estimate.rate if estimate is not None else self.prior[0]

    def learn(self, key: tuple, failed: bool) -> None:
        estimate = self.rates.get(key)
        if estimate is None:
            estimate = self.rates[interned(key)] = RateEstimate(*self.prior)
        estimate.learn(failed)

    def clear(self) -> None:
        self.rates.clear()
