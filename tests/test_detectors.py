"""Every detector on constructed streams: it fires on the signal it exists for, and not on noise."""

from __future__ import annotations

import dataclasses
import itertools
import math
import multiprocessing
import random
import statistics
import subprocess
import sys
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime, timedelta

import msgspec
import numpy as np
import orjson
import pytest
from scipy import special, stats
from sklearn.ensemble import IsolationForest

from detectors import lab_bias
from detectors.base import non_detect_level
from detectors.co_elevation import CoElevation, PairState
from detectors.cross_city import CrossCityCluster
from detectors.drift import LimitDrift
from detectors.failure_rate import FailureRateTrend
from detectors.isolation import CompiledForest, _float32_at_most, grow_trees
from detectors.lab_bias import LabBias, algorithm_a, fit_labs_and_makers
from detectors.manufacturer import ManufacturerRecurrence
from detectors.merge import AlertMerger
from detectors.multivariate import _NOT_DETECTED, MultivariateAnomaly, _usual_text, robust_scale
from detectors.silent_lab import SilentLab
from detectors.suite import DetectorSuite
from detectors.univariate import (
    Cusum,
    Ewma,
    FailureScan,
    RateEstimate,
    RecentFailureScans,
    RobustBaseline,
    kendall_s,
    least_poisson_tail,
    normal_sf,
    poisson_tail,
    trend_test,
    z_to_score,
)
from detectors.value_anomaly import ValueAnomaly
from schemas.results import LabResult, Severity, result_id_for
from schemas.validation import ValidationPolicy, validate_report
from streams.simulation import Simulator

T0 = datetime(2026, 6, 1, tzinfo=UTC)
CITIES = ["jinan", "zibo", "taian", "liaocheng", "dezhou", "binzhou", "dongying"]


def result(n: int, value: float | None = 0.05, *, limit: float = 0.2, hours: float | None = None, **fields) -> LabResult:
    """A rice-cadmium result; n orders it in time (one every 3 hours unless hours is given)."""
    at = T0 + timedelta(hours=3 * n if hours is None else hours)
    lab = fields.pop("lab_id", "ZBQI")
    sample = fields.pop("sample_id", f"S{n}")
    item = fields.pop("test_item", "cadmium")
    ratio = None if value is None else value / limit
    base = dict(
        result_id=result_id_for(lab, sample, item), report_id=f"R{n}", sample_id=sample, lab_id=lab, lab_name=lab,
        city="zibo", programme="city_supervision", category="food/grain_products/rice", product_name="大米",
        manufacturer_name="某粮油有限公司", manufacturer_uscc="91370300MA3C7G2X5B", sampling_site="", site_kind="",
        sampled_at=at, tested_at=at + timedelta(hours=5), published_at=at + timedelta(hours=20), test_item=item,
        value=value, unit="mg/kg", qualitative=None, lod=0.002, limit=limit, limit_type="max", limit_ratio=ratio,
        standard="GB 2762-2022", verdict="fail" if ratio is not None and ratio > 1 else "pass", reported_value=value,
        reported_unit="mg/kg",
    )  # fmt: skip
    base.update(fields)
    return LabResult(**base)


def noisy(rng: random.Random, level: float, sigma: float = 0.2) -> float:
    return level * math.exp(rng.gauss(0, sigma))


def run(detector, results) -> list:
    alerts = []
    for r in results:
        alerts.extend(detector.process_one(r, r.published_at))
    alerts.extend(detector.flush(results[-1].published_at))
    return alerts


# --- univariate building blocks ---------------------------------------------------------------


def test_robust_baseline_ignores_an_outlier_and_forgets_old_values():
    baseline = RobustBaseline(window=5, min_scale=0.01)
    for x in [1.0, 1.1, 0.9, 1.0, 50.0]:
        baseline.learn_one(x)
    assert baseline.median == 1.0 and baseline.scale == pytest.approx(1.4826 * 0.1)
    for x in [5.0] * 5:
        baseline.learn_one(x)
    assert baseline.median == 5.0 and baseline.scale == 0.01  # floored: identical values
    assert baseline.score_one(5.0) == 0.0 < baseline.score_one(5.02) < baseline.score_one(6.0) <= 1.0


def test_robust_baseline_quantile_is_the_nearest_rank_below_of_its_window():
    rng = random.Random(5)
    baseline, values = RobustBaseline(window=200), []
    assert math.isnan(baseline.quantile(0.99))
    for _ in range(450):
        x = float(np.float32(rng.expovariate(1.0)))  # stored in single precision: a value it holds exactly
        baseline.learn_one(x)
        values = (values + [x])[-200:]
        ordered = sorted(values)
        for q in (0.0, 0.5, 0.99, 1.0):
            assert baseline.quantile(q) == ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def test_a_robust_baseline_keeps_its_values_sorted_and_their_order_in_one_bytes_of_five_a_value():
    rng = random.Random(2)
    baseline, values = RobustBaseline(window=60), []
    sizes = set()
    for _ in range(500):
        x = float(np.float32(rng.choice([rng.gauss(0, 1), 0.5])))  # ties too: the value leaving and the one arriving may be equal
        baseline.learn_one(x)
        values = (values + [x])[-60:]
        assert list(baseline._values) == sorted(values)
        assert [baseline._values[at] for at in baseline._ages] == values, "the arrival order, one byte a value"
        assert baseline.median == statistics.median(values)
        sizes.add(sys.getsizeof(baseline._packed) - sys.getsizeof(b""))
    assert sizes == {5 * n for n in range(1, 61)}, "exactly 5 bytes a value, however often it turns over"


def test_a_robust_baseline_of_256_values_keeps_its_order_and_a_larger_one_is_refused():
    rng = random.Random(6)
    baseline, values = RobustBaseline(window=256), []
    for _ in range(1500):
        x = float(np.float32(rng.choice([rng.gauss(0, 1), -1.0, 2.0])))
        baseline.learn_one(x)
        values = (values + [x])[-256:]
    assert list(baseline._values) == sorted(values) and [baseline._values[at] for at in baseline._ages] == values
    assert baseline.median == statistics.median(values)
    with pytest.raises(ValueError, match="1 to 256 values"):
        RobustBaseline(window=257)


def test_z_to_score_is_a_probability_scale():
    assert z_to_score(0) == 0 and z_to_score(1.96) == pytest.approx(0.95, abs=1e-3) and z_to_score(-10) == pytest.approx(1.0)


def test_cusum_and_ewma_signal_a_one_sigma_shift_but_not_noise():
    rng = random.Random(1)
    cusum, ewma = Cusum(k=0.5, h=5), Ewma(lam=0.2, width=3)
    assert not any(cusum.update(rng.gauss(0, 1)) for _ in range(100))
    assert not any(ewma.update(rng.gauss(0, 1)) for _ in range(100))
    cusum.reset()
    ewma.reset()
    signalled = next(i for i in range(100) if cusum.update(rng.gauss(1.5, 1)))
    assert signalled < 15
    assert any(ewma.update(rng.gauss(1.5, 1)) for _ in range(30))


def test_segment_keys_share_one_copy_of_each_name_whatever_the_results_held():
    """Decoded results hold names of their own; kept in keys as they come, every segment would keep its copies."""
    decoded = [msgspec.json.decode(msgspec.json.encode(result(n, city=city)), type=LabResult) for n, city in enumerate(["zibo", "jinan"])]
    assert decoded[0].category is not decoded[1].category
    drift, anomaly, bias = LimitDrift(), ValueAnomaly(), LabBias()
    for r, detector in itertools.product(decoded, (drift, anomaly, bias)):
        detector.learn_one(r)
    keys = [*drift.segments, *drift.alliance, *anomaly.segments, *bias.segments]
    assert len(keys) == 6 and len({id(key[0]) for key in keys}) == len({id(key[1]) for key in keys}) == 1


def test_trend_test_finds_a_rising_series_and_not_a_flat_one():
    rng = random.Random(2)
    rising = trend_test([0.05 * i + rng.gauss(0, 0.1) for i in range(20)])
    flat = trend_test([rng.gauss(0, 0.1) for _ in range(20)])
    assert rising.p_value < 0.001 and rising.slope == pytest.approx(0.05, abs=0.02) and rising.tau > 0.6
    assert flat.p_value > 0.01
    assert trend_test([1.0] * 10).p_value == 1.0
    assert (kendall_s([1, 2, 3, 3]), kendall_s([3, 2, 1]), kendall_s([2, 2])) == (5, -3, 0)


def test_trend_test_gives_scipys_kendall_tau_exactly_and_its_p_value_with_and_without_ties():
    rng = random.Random(4)
    for trial in range(400):
        n = rng.randint(3, 40)
        values = [rng.gauss(0, 1) + rng.choice([0.0, 0.05, 0.2]) * i for i in range(n)]
        if trial % 3 == 0:
            values = [round(v, 1) for v in values]  # ties: scipy's asymptotic variance with tie corrections
        tau, p_two_sided = stats.kendalltau(np.arange(n, dtype=float), values)
        trend = trend_test(values)
        assert trend.tau == tau
        expected = p_two_sided / 2 if tau > 0 else 1 - p_two_sided / 2
        if n <= 33 and trial % 3:  # the exact distribution: to the bit
            assert trend.p_value == expected
        else:  # the normal approximation: math.erfc for scipy's own (cephes) erfc, an ulp or two apart
            assert trend.p_value == pytest.approx(expected, rel=1e-12)
        assert trend_test(values, kendall_s(values)) == trend, "the caller's S stands for the one computed"


def test_the_lab_and_maker_model_recovers_both_when_labs_sample_their_own_makers_most():
    rng = random.Random(21)
    lab_effect = {"JNQI": 0.0, "ZBQI": 0.0, "TAQI": 0.0, "LCQI": 0.0, "DZQI": math.log(1.8), "BZQI": 0.0}
    maker_effect = {f"M{lab}": rng.gauss(0, 0.3) for lab in lab_effect}
    labs, makers, levels = [], [], []
    for _ in range(3000):
        lab = rng.choice(sorted(lab_effect))
        maker = f"M{lab}" if rng.random() < 0.7 else rng.choice(sorted(maker_effect))  # mostly the lab's own city's maker
        labs.append(lab)
        makers.append(maker)
        levels.append(-2.0 + lab_effect[lab] + maker_effect[maker] + rng.gauss(0, 0.5))
    lab_names, lab_codes = np.unique(labs + ["LAB-NOT-IN-THE-WINDOW"], return_inverse=True)  # a name without results gets no effect
    maker_names, maker_codes = np.unique(makers, return_inverse=True)
    coded = (lab_codes[:-1], len(lab_names), maker_codes, len(maker_names), levels)
    fit = fit_labs_and_makers(*coded, maker_prior=6.0, min_results=15)
    lab_code = {name: code for code, name in enumerate(lab_names.tolist())}
    assert len(fit.labs) == len(fit.counts) == 7 and len(fit.makers) == 6
    assert fit.counts[lab_code["LAB-NOT-IN-THE-WINDOW"]] == 0 and fit.labs[lab_code["LAB-NOT-IN-THE-WINDOW"]] == 0.0 and fit.judged == 6
    assert fit.labs[lab_code["DZQI"]] == pytest.approx(math.log(1.8), abs=0.08)
    assert all(abs(fit.labs[lab_code[lab]]) < 0.08 for lab in lab_effect if lab != "DZQI")
    shift = fit.level + 2.0  # the level and the makers share one constant; differences between makers are identified
    assert all(fit.makers[code] + shift == pytest.approx(maker_effect[m], abs=0.08) for code, m in enumerate(maker_names.tolist()))
    assert fit.scale == pytest.approx(0.5, abs=0.05) and fit.counts[lab_code["DZQI"]] == labs.count("DZQI")
    assert fit.maker(None) == fit.maker(len(maker_names)) == 0.0  # a maker never coded, or coded after the fit


def test_the_lab_and_maker_fit_is_where_alternating_means_converge():
    """The exact solve against the definition: backfitting, each maker's shrunk mean after its
    labs and each lab's mean after its makers, repeated until nothing moves."""
    rng = random.Random(8)
    labs = [rng.randrange(5) for _ in range(300)]
    makers = [lab if rng.random() < 0.7 else rng.randrange(9) for lab in labs]  # makers 5-8 sampled by every lab, rarely
    levels = [rng.gauss(0.3 * lab - 0.2 * maker, 0.5) for lab, maker in zip(labs, makers, strict=True)]
    lab, maker, y, prior = np.array(labs), np.array(makers), np.array(levels), 6.0
    lab_level, maker_effect = np.zeros(5), np.zeros(9)
    for _ in range(3000):
        maker_effect = np.bincount(maker, y - lab_level[lab], 9) / (np.bincount(maker, minlength=9) + prior)
        lab_level = np.bincount(lab, y - maker_effect[maker], 5) / np.bincount(lab, minlength=5)
    fit = fit_labs_and_makers(labs, 5, makers, 9, levels, maker_prior=prior, min_results=15)
    assert fit.level == pytest.approx(float(np.median(lab_level)), abs=1e-9)
    assert list(fit.labs) == pytest.approx((lab_level - fit.level).tolist(), abs=1e-9)
    assert list(fit.makers) == pytest.approx(maker_effect.tolist(), abs=1e-9)
    differences = y - fit.level - np.asarray(fit.makers)[maker]  # each result after its maker, from the median lab's level
    assert list(fit.labs) == pytest.approx((np.bincount(lab, differences, 5) / np.bincount(lab)).tolist(), abs=1e-9), (
        "a lab's effect is its results' mean difference (what its ISO 13528 z-score is taken from)"
    )


def test_poisson_tail_and_normal_sf_give_scipys_values_without_importing_it():
    """The detectors' two tails, against scipy.special over the range the scans meet (means from
    1e-12, counts up to a scan's 30 runs) and far beyond, deep tails included."""
    rng = random.Random(8)
    for _ in range(20000):
        count, mean = rng.randint(0, 40), math.exp(rng.uniform(math.log(1e-12), math.log(5000)))
        expected = float(special.pdtrc(count - 1, mean)) if count else 1.0
        assert poisson_tail(count, mean) == pytest.approx(expected, rel=1e-12, abs=1e-300)
        x = rng.uniform(-10, 38)
        assert normal_sf(x) == pytest.approx(float(special.ndtr(-x)), rel=1e-12, abs=1e-300)
    assert poisson_tail(2, 0.0) == 0.0 and poisson_tail(0, 3.0) == 1.0
    assert poisson_tail(3, 2000.0) == 1.0 and poisson_tail(30, 1e-6) < 1e-200
    code = "import sys, detectors.suite; print(sorted(m for m in ('scipy', 'sklearn', 'pandas') if m in sys.modules))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == "[]", "the detectors load no scipy, scikit-learn or pandas in the worker's process (fits run apart)"


def test_least_poisson_tail_is_the_least_of_all_the_tails_summed():
    """Bounding the tails first changes nothing: the same run (the first of equals) and the same tail,
    on runs shaped as a scan's (counts falling by one, means falling) and on random ones."""
    rng = random.Random(12)
    for trial in range(3000):
        n = rng.randint(1, 30)
        means = sorted((math.exp(rng.uniform(math.log(1e-9), math.log(300))) for _ in range(n)), reverse=True)
        counts = [n - j for j in range(n)] if trial % 2 else [rng.randint(0, 31) for _ in range(n)]
        tails = [poisson_tail(c, m) for c, m in zip(counts, means, strict=True)]
        least = min(range(n), key=tails.__getitem__)
        assert least_poisson_tail(counts, means) == (least, tails[least])
    assert least_poisson_tail([3, 2, 3], [0.5, 0.01, 0.5]) == (1, poisson_tail(2, 0.01))
    assert least_poisson_tail([2, 2], [0.1, 0.1]) == (0, poisson_tail(2, 0.1)), "the first of equals"


def test_failure_scan_finds_a_recent_burst_and_not_a_slow_trickle():
    burst, trickle = FailureScan(timedelta(days=30)), FailureScan(timedelta(days=30))
    for n in range(3000):
        at = T0 + timedelta(minutes=n)
        burst.add(at, 0.001, n in (2990, 2993, 2999), n)
        trickle.add(at, 0.001, n in (10, 1500, 2999), n)
    found = burst.cluster(min_failures=3)
    assert found.failures == 3 and found.results == 10 and found.expected == pytest.approx(0.01)
    assert found.p_value < 1e-5 and burst.payloads(found.start) == [2990, 2993, 2999]
    assert trickle.cluster(min_failures=3).p_value > 0.1
    assert trickle.cluster(min_failures=4) is None
    # the p-value is the Poisson tail times the runs tried: only eligible starts count
    two = burst.cluster(min_failures=2, eligible=[False, True, True])
    assert two.start == 1 and two.p_value == pytest.approx(1 - math.exp(-0.007) * (1 + 0.007), rel=1e-6)
    best = burst.cluster(min_failures=2)
    assert best.start == 0 and best.p_value == pytest.approx(2 * (1 - math.exp(-0.01) * (1 + 0.01 + 0.01**2 / 2)), rel=1e-6)


def test_failure_scan_forgets_failures_older_than_its_window():
    scan = FailureScan(timedelta(days=1))
    scan.add(T0, 0.01, True, "old")
    scan.add(T0 + timedelta(days=2), 0.01, True, "new")
    assert scan.payloads() == ["new"] and scan.seen == 2


def test_recent_failure_scans_keep_a_stream_only_while_it_has_a_recent_failure():
    scans = RecentFailureScans(timedelta(days=1))
    assert scans.add(("lead",), T0, 0.01, False) is None and len(scans) == 0  # passes alone make no scan
    first = scans.add(("lead",), T0, 0.01, True, "first")
    assert first is not None and scans.add(("lead",), T0 + timedelta(hours=1), 0.01, False) is first
    second = scans.add(("lead",), T0 + timedelta(hours=2), 0.01, True, "second").cluster(min_failures=2)
    assert second is not None and (second.failures, second.results) == (2, 3)  # the pass between them counted
    assert second.expected == pytest.approx(0.03)
    assert scans.add(("lead",), T0 + timedelta(days=2), 0.01, False) is None and len(scans) == 0  # aged out: dropped
    scans.add(("silent",), T0, 0.01, True)
    scans.last_p[("silent",)] = 1e-9
    assert scans.alerting(("silent",), 1e-5)
    for n in range(200):  # other streams fail days later; the silent one never sends again, yet is swept
        scans.add((f"busy{n % 3}",), T0 + timedelta(days=3, minutes=n), 0.01, True)
    assert ("silent",) not in scans.scans and not scans.alerting(("silent",), 1e-5) and len(scans) == 3


def test_algorithm_a_is_robust_to_one_outlying_lab():
    x, s = algorithm_a([10.1, 9.9, 10.0, 10.2, 9.8, 10.05, 30.0])
    assert x == pytest.approx(10.0, abs=0.2) and s < 1.0


# --- detectors --------------------------------------------------------------------------------


def test_value_anomaly_fires_on_a_jump_not_on_noise_and_not_on_a_lone_failure():
    rng = random.Random(3)
    history = [result(n, noisy(rng, 0.03)) for n in range(40)]
    detector = ValueAnomaly()
    assert run(detector, history) == []
    lone_failure = ValueAnomaly()
    run(lone_failure, history)
    assert lone_failure.process_one(result(41, 0.4), T0) == []  # over the limit out of the blue: limit exceedance's alert
    (alert,) = detector.process_one(result(41, 0.15), T0)
    assert alert.detector == "value_anomaly" and alert.severity is Severity.POTENTIALLY_SERIOUS
    assert "the usual level of the last 40 results" in alert.explanation and "75 % of the limit" in alert.explanation
    assert "Not yet over the limit" in alert.explanation and "尚未超过限量" in alert.explanation_zh
    assert detector.process_one(result(42, 0.035), T0) == []


def test_value_anomaly_a_failure_on_top_of_a_raised_run_fires_as_a_jumped_level():
    rng = random.Random(4)
    history = [result(n, noisy(rng, 0.03, 0.3)) for n in range(40)]
    raised = [result(41, 0.03 * math.exp(3.3 * 0.3)), result(42, 0.03 * math.exp(3.3 * 0.3))]
    detector = ValueAnomaly(h=6.0)  # two raised values stay under h: only the failure can fire it
    run(detector, history)
    assert run(detector, raised) == []
    (state,) = detector.segments.values()
    assert len(state.recent) == state.run == 2  # records of the run only
    (alert,) = detector.process_one(result(43, 0.4), T0)
    assert "the level has jumped" in alert.explanation and "Over the limit" in alert.explanation and "已超过限量" in alert.explanation_zh
    assert alert.evidence == [r.result_id for r in raised] + [result(43, 0.4).result_id]


def test_value_anomaly_keeps_records_only_of_its_cusum_run():
    rng = random.Random(6)
    detector = ValueAnomaly()
    counts = []
    for n in range(400):
        detector.process_one(result(n, noisy(rng, 0.03, 0.3)), T0)
        (state,) = detector.segments.values()
        if len(state) >= detector.min_history:  # judged from here
            kept = len(state.recent) if state.recent is not None else 0
            assert kept == min(state.run, detector.adapt_after)  # every result a signal could cite, no more
            assert (state.recent is None) == (state.run == 0), "at rest no window is kept, not even an empty one"
            counts.append(kept)
    assert len(counts) > 300 and sum(counts) < len(counts), "at rest a segment keeps no records"


def test_value_anomaly_two_unusual_values_in_a_row_fire_where_one_does_not():
    rng = random.Random(4)
    detector = ValueAnomaly(min_scale=0.05)
    run(detector, [result(n, noisy(rng, 0.03, 0.3)) for n in range(40)])
    moderate = 0.03 * math.exp(3.3 * 0.3 * 1.0)
    assert detector.process_one(result(41, moderate), T0) == []
    assert len(detector.process_one(result(42, moderate * 1.05), T0)) == 1


def test_value_anomaly_a_jumped_level_fires_within_three_values_and_a_lone_outlier_does_not():
    rng = random.Random(12)
    history = [result(n, noisy(rng, 0.03, 0.3)) for n in range(60)]
    jumped = 0.03 * math.exp(3.2 * 0.3)  # about 3 robust σ above the usual level, well under the limit
    lone = ValueAnomaly()
    run(lone, history)
    assert run(lone, [result(61, jumped)] + [result(62 + n, noisy(rng, 0.03, 0.3)) for n in range(10)]) == []
    detector = ValueAnomaly()
    run(detector, history)
    alerts = []
    for n in range(3):
        alerts = detector.process_one(result(61 + n, jumped * rng.uniform(0.95, 1.05)), T0)
        if alerts:
            break
    assert alerts and n <= 2 and "the level has jumped" in alerts[0].explanation
    assert len(alerts[0].evidence) == n + 1  # the run that added up, not just the last value


@pytest.mark.parametrize("make", [ValueAnomaly, LimitDrift])
def test_a_fused_process_one_scores_and_alerts_as_the_protocol_steps_do(make):
    """Value anomaly and drift score, judge and learn a result in one pass; a notebook calls the three steps."""
    rng = random.Random(9)
    stream = [result(n, noisy(rng, 0.03, 0.3)) for n in range(80)]
    stream += [result(80 + n, noisy(rng, 0.03 * math.exp(0.12 * n), 0.1)) for n in range(30)]  # a jump that keeps rising
    fused, stepped = make(), make()
    for r in stream:
        score = stepped.score_one(r)
        expected = stepped.alerts_for(r, score, T0)
        stepped.learn_one(r)
        alerts = fused.process_one(r, T0)
        assert [(a.alert_id, a.explanation, a.evidence, a.score) for a in alerts] == [
            (a.alert_id, a.explanation, a.evidence, a.score) for a in expected
        ]
        if alerts:
            return  # after an alert, process_one restarts the charts: the steps alone do not
    pytest.fail("the stream raised no alert")


def test_drift_fires_on_values_creeping_to_the_limit_and_not_on_a_stable_segment():
    rng = random.Random(5)
    stable = [result(n, noisy(rng, 0.03)) for n in range(60)]
    ramp = [result(60 + n, noisy(rng, 0.03 * math.exp(0.1 * n), 0.1)) for n in range(25)]
    detector = LimitDrift()
    assert run(detector, stable) == []
    alerts = run(detector, ramp)
    assert alerts and alerts[0].detector == "limit_drift"
    assert "Mann-Kendall" in alerts[0].explanation and "reaches the limit in about" in alerts[0].explanation
    assert run(LimitDrift(), [result(n, noisy(rng, 0.03)) for n in range(300)]) == []


def test_drift_cites_the_results_of_its_cusum_run_and_keeps_no_records_at_rest():
    """The trend test reads the last 33 levels, but a firing cites the results since the CUSUM last
    stood at zero: only those keep their 26-byte records, so a segment at rest holds none."""
    rng = random.Random(5)
    stream = [result(n, noisy(rng, 0.03)) for n in range(60)]
    stream += [result(60 + n, noisy(rng, 0.03 * math.exp(0.1 * n), 0.1)) for n in range(25)]
    detector, charts = LimitDrift(), []
    for n, r in enumerate(stream):
        alerts = detector.process_one(r, T0)
        (segment,) = detector.segments.values()
        charts.append(segment.cusum)
        assert len(segment.levels) == min(n + 1, detector.recent)
        if alerts:
            break
        assert (segment.run is None) == (segment.cusum == 0)
    assert 0 in charts and max(charts) > 0  # the charts both rested and ran
    last_rest = max(n for n, cusum in enumerate(charts[:-1]) if cusum == 0)
    cited = [r.result_id for r in stream[last_rest + 1 : len(charts)]][-detector.recent - 1 :]
    assert alerts and alerts[0].evidence == cited and len(cited) < detector.recent
    assert f"Over the last {detector.recent + 1} results" in alerts[0].explanation
    assert f"Cited: the {len(cited)} results since the CUSUM last stood at zero." in alerts[0].explanation


def test_drift_finds_a_noisy_creep_whose_trend_shows_only_over_thirty_odd_values():
    """Values at 10 % of the limit with a spread of 0.9 (celery's chlorpyrifos) creeping to 1.2× the limit
    in 32 results: the trend test over the last 33 values finds it in at least 18 of 20 such streams,
    over the last 25 (drift's window before the twenty-first session) in fewer."""

    def streams_that_fire(detector_for):
        fired = 0
        for seed in range(20):
            rng = random.Random(seed)
            detector = detector_for()
            assert run(detector, [result(n, noisy(rng, 0.02, 0.9)) for n in range(100)]) == []
            fired += bool(run(detector, [result(100 + n, noisy(rng, 0.02 * 12 ** (n / 31), 0.9)) for n in range(32)]))
        return fired

    found = streams_that_fire(LimitDrift)
    assert found >= 18
    assert streams_that_fire(lambda: LimitDrift(recent=24)) < found


def test_drift_in_a_city_that_seldom_tests_the_item_is_judged_against_the_other_cities():
    rng = random.Random(8)
    others = [result(n, noisy(rng, 0.03), city=CITIES[1 + n % 6], sample_id=f"O{n}") for n in range(400)]
    ramp = [result(400 + n, noisy(rng, 0.03 * math.exp(0.1 * n), 0.1), city="jinan", sample_id=f"J{n}") for n in range(25)]
    assert run(LimitDrift(), ramp) == []  # alone, jinan's 25 results never build a reference of their own
    detector = LimitDrift()
    assert run(detector, others) == []
    alerts = run(detector, ramp)
    assert alerts and alerts[0].cities == ["jinan"] and "Mann-Kendall" in alerts[0].explanation


def test_failure_rate_fires_when_failures_bunch_up_in_one_city():
    usual = [result(n, 0.5 if n % 250 == 125 else 0.05) for n in range(1500)]  # the usual 0.4 %, spread out
    detector = FailureRateTrend()
    quiet = run(detector, usual)
    assert quiet == []
    burst = [result(1500 + n, 0.5 if n % 3 == 0 else 0.05) for n in range(30)]
    alerts = run(detector, burst)
    assert {a.signal for a in alerts} >= {"food/grain_products/rice|zibo"}
    assert "failed" in alerts[0].explanation and "usual rate" in alerts[0].explanation


def test_failure_rate_weighs_each_item_by_its_own_usual_rate():
    rng = random.Random(9)
    usual = []
    for n in range(3000):  # lead fails one time in ten, cadmium hardly ever
        usual.append(result(2 * n, 0.5 if rng.random() < 0.1 else 0.05, test_item="lead", city=CITIES[n % 7], sample_id=f"U{n}"))
        usual.append(result(2 * n + 1, 0.05, city=CITIES[n % 7], sample_id=f"U{n}"))
    detector = FailureRateTrend()
    for r in usual[:4000]:  # history, as a worker warms up from ClickHouse
        detector.learn_one(r)
    assert run(detector, usual[4000:]) == []
    lead = [result(6000 + n, 0.5, test_item="lead", sample_id=f"L{n}") for n in range(3)]
    assert run(detector, lead) == []  # three lead failures in a row are not that unusual at 10 %
    cadmium = [result(6010 + n, 0.5, sample_id=f"C{n}") for n in range(3)]
    alerts = run(detector, cadmium)
    assert alerts and alerts[-1].test_item == "cadmium" and "items: cadmium" in alerts[-1].explanation


def test_failure_rate_fires_at_the_second_failure_in_a_row_of_an_item_that_seldom_fails():
    history = [result(n, 0.05, city=CITIES[n % 7], sample_id=f"H{n}") for n in range(2000)]  # cadmium: no failure in 2,000
    detector = FailureRateTrend()
    assert run(detector, history) == []
    apart = [result(2000, 0.5, sample_id="A0")] + [result(2001 + n, 0.05, sample_id=f"A{n + 1}") for n in range(60)]
    assert run(detector, apart + [result(2061, 0.5, sample_id="A61")]) == []  # two failures 60 results apart: chance
    later = 2062 + 24 * 40  # after the scans' 30-day window, so the pair above is forgotten
    first = run(detector, [result(later, 0.5, sample_id="B0")])
    assert first == []  # one failure is limit exceedance's finding, not a rate
    second = run(detector, [result(later + 1, 0.5, sample_id="B1")])
    assert second and second[0].signal == "food/grain_products/rice|zibo"
    assert second[0].explanation.startswith("2 of the last 2 results failed (100.0 %; items: cadmium)") and len(second[0].evidence) == 2


def test_failure_rate_catches_one_item_rising_among_many_at_its_third_failure():
    items = ["cadmium", "lead", "arsenic", "mercury", "chromium", "nickel"]

    def samples(first: int, count: int, failing: str | None = None) -> list[LabResult]:
        return [
            result(first + n, 0.5 if item == failing else 0.05, test_item=item, sample_id=f"S{first + n}", hours=3 * (first + n))
            for n in range(count) for item in items
        ]  # fmt: skip

    detector = FailureRateTrend(alpha=1e-5)  # strict enough that the whole category × city's scan is not
    assert run(detector, samples(0, 300)) == []
    alerts = run(detector, samples(300, 3, failing="cadmium"))
    assert alerts and alerts[-1].signal == "food/grain_products/rice|zibo" and alerts[-1].test_item == "cadmium"
    # among the 13 results of six items since the first failure, the same three would not be enough
    assert detector.last_p[("food/grain_products/rice", "zibo")] > detector.alpha
    assert alerts[-1].explanation.startswith("3 of the last 3 cadmium (as Cd) results failed") and len(alerts[-1].evidence) == 3
    assert detector.items  # the scan lives while the failures are recent ...
    run(detector, samples(400, 2) + [result(1000, test_item=item, sample_id="LATE", hours=24 * 90) for item in items])
    assert not detector.items  # ... and leaves with them, so passing results of quiet items cost nothing


def test_cross_city_cluster_needs_several_cities_at_once():
    detector = CrossCityCluster()
    background = [result(n, 0.05, city=CITIES[n % 7], sample_id=f"B{n}") for n in range(200)]
    assert run(detector, background) == []
    assert not detector.segments and not detector.severe, "no scan while the segment has no recent failure"
    one_city = [result(200 + n, 0.5, sample_id=f"Z{n}") for n in range(4)]
    assert run(detector, one_city) == []  # improbable, but one city's rise is failure rate's alert
    assert detector.last_p[("food/grain_products/rice", "cadmium")] == 1.0
    second_city = run(detector, [result(210, 0.5, city="jinan", sample_id="C0")])
    assert [a.detector for a in second_city] == ["cross_city"]  # the second city's first failure fires
    assert second_city[0].cities == ["jinan", "zibo"] and second_city[0].severity == Severity.POTENTIALLY_SERIOUS
    assert second_city[0].title.startswith("Same hazard in 2 cities")
    assert "chance of this many or more" in second_city[0].explanation
    spread = [result(211 + n, 0.5, city=city, sample_id=f"C{n + 1}") for n, city in enumerate(["binzhou", "dongying", "taian"])]
    alerts = run(detector, spread)
    assert len(alerts[-1].cities) == 5 and alerts[-1].severity == Severity.SERIOUS
    assert len(detector.segments) == len(detector.severe) == 1
    run(detector, [result(400, 0.05, city="jinan", sample_id="LATE", hours=24 * 60)])
    assert not detector.segments and not detector.severe, "the scans leave with their failures"


def test_cross_city_cluster_keeps_two_cities_chance_failures_quiet():
    """Two failures in two cities a week apart (60 passing results between) are what an item's usual rate gives."""
    detector = CrossCityCluster()
    stream = [result(n, 0.5 if n in (100, 160) else 0.05, city=CITIES[n % 7], sample_id=f"B{n}") for n in range(400)]
    assert run(detector, stream) == []
    assert detector.last_p[("food/grain_products/rice", "cadmium")] > detector.alpha


def test_cross_city_cluster_fires_on_two_cities_far_over_the_limit_where_two_failures_alone_do_not():
    """Two failures in a row in two cities: at 2.5× the limit they are improbable, at 1.1× not yet."""
    background = [result(n, 0.05, city=CITIES[n % 7], sample_id=f"B{n}") for n in range(200)]

    def hazard(value: float) -> list:
        return [result(200 + n, v, city=city, sample_id=f"H{n}")
                for n, (v, city) in enumerate([(0.05, "taian"), (value, "zibo"), (value, "jinan"), (0.05, "dezhou")])]  # fmt: skip

    severe = CrossCityCluster()
    assert run(severe, background) == []
    (alert,) = run(severe, hazard(0.5))
    assert alert.cities == ["jinan", "zibo"] and "at 1.3× the limit or more" in alert.explanation and "达到限量1.3倍及以上" in alert.explanation_zh
    assert severe.last_p[("food/grain_products/rice", "cadmium")] < severe.alpha
    for detector, value in [(CrossCityCluster(), 0.22), (CrossCityCluster(severe_ratio=None), 0.5)]:
        assert run(detector, background + hazard(value)) == []
        assert detector.last_p[("food/grain_products/rice", "cadmium")] > detector.alpha, "two failures of any size are not yet improbable"


def test_manufacturer_recurrence_fires_on_a_repeat_offender_not_on_two_makers():
    detector = ManufacturerRecurrence()
    background = [result(n, 0.05, manufacturer_uscc=f"MAKER{n % 20}", sample_id=f"B{n}") for n in range(400)]
    assert run(detector, background) == []
    two_makers = [
        result(400, 0.5, manufacturer_uscc="MAKER1", sample_id="X1"),
        result(401, 0.5, manufacturer_uscc="MAKER2", sample_id="X2"),
    ]
    assert run(detector, two_makers) == []
    cities = ["zibo", "jinan", "taian", "zibo"]
    repeat = [result(402 + n, 0.5, manufacturer_uscc="MAKER3", city=city, sample_id=f"Y{n}") for n, city in enumerate(cities)]
    alerts = run(detector, repeat)
    assert alerts and alerts[-1].manufacturer.uscc == "MAKER3"
    assert alerts[-1].severity is Severity.SERIOUS and "batches" in alerts[-1].explanation


def test_manufacturer_recurrence_believes_a_run_two_labs_found_at_a_looser_p_value():
    """Fail, pass, fail (p ≈ 5e-5, between alpha and across_labs_alpha): one lab's two failures
    could be that lab's error, two labs' are the maker's."""

    def fail_pass_fail(detector: ManufacturerRecurrence, labs: tuple[str, str]) -> list:
        background = [result(n, 0.05, manufacturer_uscc=f"MAKER{n % 20}", sample_id=f"B{n}") for n in range(400)]
        assert run(detector, background) == []
        return run(detector, [
            result(400, 0.5, manufacturer_uscc="MAKER3", lab_id=labs[0], sample_id="Y0"),
            result(401, 0.05, manufacturer_uscc="MAKER3", lab_id="TAQI", sample_id="Y1"),
            result(402, 0.5, manufacturer_uscc="MAKER3", lab_id=labs[1], sample_id="Y2"),
        ])  # fmt: skip

    one_lab = ManufacturerRecurrence()
    assert fail_pass_fail(one_lab, ("ZBQI", "ZBQI")) == []
    assert one_lab.alpha < one_lab.makers.last_p[("food/grain_products/rice", "MAKER3")] < one_lab.across_labs_alpha
    alerts = fail_pass_fail(ManufacturerRecurrence(), ("ZBQI", "JNQI"))
    assert alerts and {lab for a in alerts for lab in a.labs} >= {"ZBQI", "JNQI"}
    assert fail_pass_fail(ManufacturerRecurrence(across_labs_alpha=3e-5), ("ZBQI", "JNQI")) == []


def test_manufacturer_recurrence_catches_a_maker_failing_one_item_among_many_at_its_third_batch():
    items = ["cadmium", "lead", "arsenic", "mercury", "chromium", "nickel"]

    def samples(first: int, count: int, maker: str | None = None, failing: str | None = None) -> list[LabResult]:
        return [
            result(first + n, 0.5 if item == failing else 0.05, test_item=item, sample_id=f"S{first + n}",
                   manufacturer_uscc=maker or f"MAKER{n % 20}", city=CITIES[n % 7])
            for n in range(count) for item in items
        ]  # fmt: skip

    detector = ManufacturerRecurrence(alpha=1e-5)  # strict enough that the scan of all the maker's results is not
    assert run(detector, samples(0, 400)) == []
    alerts = run(detector, samples(400, 3, maker="MAKER3", failing="cadmium"))
    assert alerts and alerts[-1].signal == "food/grain_products/rice|MAKER3" and alerts[-1].test_item == "cadmium"
    assert "3 failing results of its last 3 tested for cadmium (as Cd); items" in alerts[-1].explanation
    # among everything the maker had tested since its first failure (13 results), three failures would not be enough
    assert detector.makers.last_p[("food/grain_products/rice", "MAKER3")] > detector.alpha
    assert len(detector.items) == 1


def test_a_maker_under_alert_teaches_usual_rates_again_once_its_failures_age_out():
    """An offender's results do not teach the items' usual rates while it is under alert; once its
    failures have left the window it is an ordinary maker again, and nothing of it is kept."""
    detector = ManufacturerRecurrence(window=timedelta(days=30))
    maker = ("food/grain_products/rice", "MAKER3")
    background = [result(n, 0.05, manufacturer_uscc=f"MAKER{n % 20 + 10}", sample_id=f"B{n}") for n in range(400)]
    assert run(detector, background) == []
    assert run(detector, [result(400 + n, 0.5, manufacturer_uscc="MAKER3", sample_id=f"F{n}") for n in range(3)])
    assert detector.makers.alerting(maker, detector.alpha)
    usual = detector.usual.rates[("food/grain_products/rice", "cadmium")]
    seen = usual.total
    run(detector, [result(410, 0.05, manufacturer_uscc="MAKER3", sample_id="P0")])
    assert usual.total == seen, "a maker under alert must not teach the usual rate"
    run(detector, [result(411, 0.05, manufacturer_uscc="MAKER3", sample_id="P1", hours=3 * 410 + 24 * 31)])
    assert usual.total > seen and not detector.makers.alerting(maker, detector.alpha)
    assert maker not in detector.makers.scans and maker not in detector.makers.last_p


@pytest.mark.parametrize(
    ("make", "stream_a", "stream_b"),
    [
        (CrossCityCluster, {"test_item": "lead"}, {"test_item": "cadmium"}),
        (FailureRateTrend, {"city": "jinan"}, {"city": "zibo"}),
        (lambda: ManufacturerRecurrence(window=timedelta(days=30)), {"manufacturer_uscc": "MAKER1"}, {"manufacturer_uscc": "MAKER2"}),
    ],
)
def test_a_failure_sampled_before_the_window_is_taken_without_error_and_judged_in_no_run(make, stream_a, stream_b):
    """A late report (sampled longer ago than the window, by the newest time seen) fails on a stream
    whose scan the periodic sweep of aged-out scans may drop in the same step: the detector must go
    on (it raised KeyError, which stopped the worker's agent for good)."""
    detector = make()
    for n in range(300):
        run(detector, [result(2 * n, 0.5, sample_id=f"A{n}", hours=24 * 60 + n / 100, **stream_a)])
        run(detector, [result(2 * n + 1, 0.5, sample_id=f"B{n}", hours=n / 100, **stream_b)])
    for scans in (value for value in vars(detector).values() if isinstance(value, RecentFailureScans)):
        assert set(scans.last_p) <= set(scans.scans), "a judged p-value outlives its stream's scan"


def test_lab_bias_names_the_lab_reading_high():
    rng = random.Random(7)
    labs = ["JNQI", "ZBQI", "TAQI", "LCQI", "DZQI", "BZQI"]
    stream = []
    for n in range(300):
        lab = labs[n % len(labs)]
        level = 0.05 * (2.0 if lab == "DZQI" else 1.0)
        stream.append(result(n, noisy(rng, level, 0.3), lab_id=lab, sample_id=f"{lab}{n}"))
    detector = LabBias()
    alerts = run(detector, stream)
    assert {a.labs[0] for a in alerts} == {"DZQI"}
    assert "ISO 13528 z-score +" in alerts[0].explanation
    z = detector.z_scores("food/grain_products/rice", "cadmium")
    assert z["DZQI"] >= 3 and all(abs(v) < 3 for lab, v in z.items() if lab != "DZQI")


def test_lab_bias_allows_for_a_lab_whose_city_makes_worse_products():
    labs = ["JNQI", "ZBQI", "TAQI", "LCQI", "DZQI", "BZQI"]
    quality = {f"M{lab}": 1.3 if lab == "DZQI" else 1.0 for lab in labs}  # Dezhou's own maker is sloppy; its lab is fine
    adjusted, naive = [], []
    for seed in range(1, 6):
        rng = random.Random(seed)
        stream = []
        for n in range(1800):
            lab = labs[n % len(labs)]
            maker = f"M{lab}" if rng.random() < 0.7 else rng.choice(sorted(quality))
            stream.append(result(n, noisy(rng, 0.05 * quality[maker], 0.3), lab_id=lab, sample_id=f"S{n}", manufacturer_uscc=maker))
        adjusted.append(len(run(LabBias(), stream)))
        naive.append({a.labs[0] for a in run(LabBias(maker_prior=1e12), stream)})  # the same chart, makers not accounted for
    assert naive == [{"DZQI"}] * 5
    assert sum(1 for n in adjusted if n) <= 1


def test_lab_bias_forgets_makers_that_left_its_window_without_changing_its_fit():
    rng = random.Random(11)
    labs = ["JNQI", "ZBQI", "TAQI", "LCQI", "DZQI", "BZQI"]
    stream = [  # every sample from a maker never seen before, as with many small makers over months
        result(n, noisy(rng, 0.05 * (1.8 if labs[n % 6] == "DZQI" else 1.0), 0.3), lab_id=labs[n % 6], sample_id=f"S{n}",
               manufacturer_uscc=f"M{n}")
        for n in range(1500)
    ]  # fmt: skip

    class Remembering(lab_bias._Segment):  # the tables grow with every maker, as they used to
        __slots__ = ()

        def _forget_departed(self) -> None:
            pass

    def by_name(segment):  # the fit's effects and counts under the names its codes stand for
        fit, labs, makers = segment.fit, segment.lab_names.names, segment.maker_names.names
        return fit and (
            fit.level, fit.scale, fit.judged,
            {labs[code]: (fit.labs[code], fit.counts[code]) for code in range(len(fit.labs)) if fit.counts[code]},
            {makers[code]: fit.makers[code] for code in range(len(fit.makers)) if fit.makers[code]},
        )  # fmt: skip

    forgetting, remembering = LabBias(segment_window=200), LabBias(segment_window=200)
    remembering_segment = remembering.segments[("food/grain_products/rice", "cadmium")] = Remembering(200)
    alerts, unbounded = [], []
    for r in stream:  # after every result, including those right after a renumbering, between two fits
        alerts += forgetting.process_one(r, r.published_at)
        unbounded += remembering.process_one(r, r.published_at)
        segment = forgetting.segments[("food/grain_products/rice", "cadmium")]
        assert by_name(segment) == by_name(remembering_segment)  # the same levels and effects, to the bit
    assert len(segment.maker_names.names) <= 2 * 200 < len(remembering_segment.maker_names.names) == 1500
    assert len(segment.fit.makers) <= 2 * 200 < len(remembering_segment.fit.makers)
    assert [a.alert_id for a in alerts] == [a.alert_id for a in unbounded] and {a.labs[0] for a in alerts} == {"DZQI"}


def test_lab_bias_keeps_a_segments_labs_a_byte_each_until_a_257th_lab_comes():
    stream = [result(n, 0.05, lab_id=f"LAB{n % 300:03d}", sample_id=f"S{n}") for n in range(600)]
    detector = LabBias(segment_window=400)
    run(detector, stream[:256])
    segment = detector.segments[("food/grain_products/rice", "cadmium")]
    assert segment.labs.typecode == "B" and list(segment.labs) == list(range(256))
    run(detector, stream[256:])
    assert segment.labs.typecode == "H", "widened for the 257th lab's code"
    names, codes = segment.lab_names.names, list(segment.labs)
    assert [names[code] for code in codes[segment.oldest :] + codes[: segment.oldest]] == [r.lab_id for r in stream[-400:]]


def test_lab_bias_is_quiet_when_labs_agree():
    rng = random.Random(8)
    labs = ["JNQI", "ZBQI", "TAQI", "LCQI", "DZQI", "BZQI"]
    stream = [result(n, noisy(rng, 0.05, 0.3), lab_id=labs[n % 6], sample_id=f"S{n}") for n in range(600)]
    assert run(LabBias(), stream) == []


def near_the_lod(seed: int, results: int, median: float, bias: float = 1.0, dezhou_lod: float = 0.002) -> list[LabResult]:
    """Six labs' results on an item whose values sit around its LOD (0.002), reported as not detected
    below it; Dezhou's lab reads ``bias`` × the others, with its own LOD."""
    rng = random.Random(seed)
    labs = ["JNQI", "ZBQI", "TAQI", "LCQI", "DZQI", "BZQI"]
    stream = []
    for n in range(results):
        lab = labs[n % 6]
        value, lod = round(noisy(rng, median * (bias if lab == "DZQI" else 1.0), 0.6), 4), dezhou_lod if lab == "DZQI" else 0.002
        if value < lod:
            stream.append(result(n, None, lab_id=lab, sample_id=f"S{n}", qualitative="not_detected", lod=lod))
        else:
            stream.append(result(n, value, lab_id=lab, sample_id=f"S{n}", lod=lod))
    return stream


def test_a_non_detect_stands_in_below_its_lod():
    assert non_detect_level(result(1, None, qualitative="not_detected"), 0.5) == pytest.approx(math.log(0.001 / 0.2))
    assert non_detect_level(result(1, 0.05), 0.5) is None  # a value has its own level
    assert non_detect_level(result(1, None, qualitative="not_detected", lod=None), 0.5) is None  # below what, unknown
    assert non_detect_level(result(1, None, qualitative="not_detected", limit_type="min"), 0.5) is None


def test_lab_bias_counts_non_detects_as_evidence():
    """On an item mostly not detected (about 60 % of results), a lab reading 1.8× high detects more
    often; counted at LOD/√2, its non-detects show it, where its detections alone mostly do not."""
    streams = [near_the_lod(seed, 600, 0.0015, bias=1.8) for seed in range(1, 7)]
    assert [sum(r.value is None for r in stream) > 300 for stream in streams] == [True] * 6
    assert [{a.labs[0] for a in run(LabBias(), stream)} for stream in streams] == [{"DZQI"}] * 6
    assert sum(1 for stream in streams if run(LabBias(non_detects_at=None), stream)) <= 2


def test_lab_bias_is_quiet_when_most_results_are_non_detects():
    """Ties at the non-detects' stand-in collapse the MAD of the residuals; the scale then rests on
    their standard deviation, or every detection would read as far out (25–45 alerts a stream)."""
    alerts = [run(LabBias(), near_the_lod(seed, 1200, median)) for seed in range(101, 105) for median in (0.001, 0.0015, 0.002)]
    assert sum(map(len, alerts)) <= 2


def test_lab_bias_does_not_read_a_higher_lod_as_a_bias():
    """A lab whose LOD is 5× its peers' reports only its higher values; compared as they are, it
    read as high in every stream, with non-detects counted or not. Censored at the segment's
    highest LOD, it is the same as its peers."""
    streams = [near_the_lod(seed, 1200, median, dezhou_lod=0.01) for seed in range(1, 4) for median in (0.002, 0.003, 0.006)]
    assert sum(1 for stream in streams if {a.labs[0] for a in run(LabBias(non_detects_at=None), stream)} == {"DZQI"}) >= 4
    assert sum(map(len, (run(LabBias(), stream) for stream in streams))) <= 1


def test_lab_bias_keeps_records_only_of_the_results_a_signal_could_cite():
    rng = random.Random(8)
    labs = ["JNQI", "ZBQI", "TAQI", "LCQI", "DZQI", "BZQI"]
    agreeing = [result(n, noisy(rng, 0.05, 0.3), lab_id=labs[n % 6], sample_id=f"S{n}") for n in range(900)]
    detector = LabBias()
    run(detector, agreeing)
    charted = list(detector.segments[("food/grain_products/rice", "cadmium")].by_lab.values())
    assert len(charted) == 6 and len(detector.z_scores("food/grain_products/rice", "cadmium")) == 6  # from the segment's fit
    assert all(len(lab) >= max(lab.high_run, lab.low_run) for lab in charted)  # every run's results
    assert sum(len(lab) for lab in charted) < 2 * 60, "at rest the charts keep few records"

    biased = [
        result(1000 + n, noisy(rng, 0.05 * (2.0 if labs[n % 6] == "DZQI" else 1.0), 0.3), lab_id=labs[n % 6], sample_id=f"B{n}")
        for n in range(300)
    ]  # fmt: skip
    alerts = []
    for r in biased:
        alerts += detector.process_one(r, r.published_at)
        assert all(len(lab) >= min(60, max(lab.high_run, lab.low_run)) for lab in charted), "a run's results are all kept"
    assert alerts and {a.labs[0] for a in alerts} == {"DZQI"}
    dezhou = [r.result_id for r in biased if r.lab_id == "DZQI"]
    for alert in alerts:  # the run behind each signal, whole: the lab's latest results up to the one that fired
        cited = len(alert.evidence)
        assert f"Over its last {cited} results" in alert.explanation
        end = dezhou.index(alert.evidence[-1]) + 1
        assert list(alert.evidence) == dezhou[end - cited : end]


def test_silent_lab_fires_once_when_a_lab_stops_far_beyond_its_cadence():
    stream = []
    for n in range(60):
        for k, lab in enumerate(["JNQI", "ZBQI", "TAQI"]):
            stream.append(result(n, 0.05, hours=n + k / 10, lab_id=lab, sample_id=f"{lab}{n}", report_id=f"{lab}-{n}"))
    detector = SilentLab()
    assert run(detector, stream) == []
    later = []
    for n in range(60, 80):  # TAQI goes quiet for 20 hours
        for k, lab in enumerate(["JNQI", "ZBQI"]):
            later.append(result(n, 0.05, hours=n + k / 10, lab_id=lab, sample_id=f"{lab}{n}", report_id=f"{lab}-{n}"))
    alerts = run(detector, later)
    assert [a.signal for a in alerts] == ["TAQI"]
    assert "has published nothing for" in alerts[0].explanation
    assert alerts[0].last_seen > alerts[0].first_seen


def test_silent_lab_judging_only_what_a_result_changed_alerts_as_judging_every_lab_each_time():
    """process_one judges every lab when the clock moves and only the result's own lab otherwise."""
    rng = random.Random(12)
    labs = ["JNQI", "ZBQI", "TAQI", "LCQI", "DZQI"]
    stream, hours = [], 0.0
    for n in range(1500):
        hours += rng.expovariate(4.0)
        lab = rng.choice(labs[:2] if 600 < n < 800 else labs[:4] if 1000 < n < 1200 else labs)  # two silences
        late = rng.random() < 0.1  # a report published behind the clock: the clock stays, its lab changes
        at = hours - (rng.uniform(0.5, 3.0) if late else 0.0)
        for item in range(rng.randint(1, 4)):  # the results of one report share its publication time
            stream.append(
                result(n, 0.05, hours=at, test_item=["lead", "cadmium", "inorganic_arsenic", "total_mercury"][item],
                       lab_id=lab, sample_id=f"S{n}", report_id=f"R{n}")
            )  # fmt: skip
    judged_each_time, everyone = SilentLab(), SilentLab()
    fast, full = [], []
    for r in stream:
        fast += [(a.signal, a.last_seen, a.explanation) for a in judged_each_time.process_one(r, T0)]
        everyone.learn_one(r)
        full += [(a.signal, a.last_seen, a.explanation) for a in everyone.flush(T0)]
    assert len(fast) >= 2 and fast == full


def test_an_items_usual_level_at_the_non_detect_stand_in_reads_as_not_detected():
    assert _usual_text(_NOT_DETECTED) == _usual_text(float(np.float32(_NOT_DETECTED))) == ("not detected", "未检出")
    assert _usual_text(math.log(0.2)) == ("20 %", "20%") and _usual_text(math.log(0.006)) == ("1 %", "1%")


def test_an_item_mostly_not_detected_takes_its_scale_from_its_detections():
    """Where most samples hold the non-detect stand-in the MAD is 0: a detection must not read as tens of σ up."""
    rng = np.random.default_rng(5)
    ordinary = rng.normal(math.log(0.1), 0.6, 400)
    median = float(np.median(ordinary))
    assert robust_scale(ordinary, median) == pytest.approx(1.4826 * float(np.median(np.abs(ordinary - median))))
    detections = np.full(160, math.log(0.03))  # 40 % of the samples detected, at 3 % of the limit
    levels = np.concatenate([np.full(240, _NOT_DETECTED), detections])
    scale = robust_scale(levels, _NOT_DETECTED)
    z = (math.log(0.03) - _NOT_DETECTED) / scale
    assert z == pytest.approx(statistics.NormalDist().inv_cdf(0.8))  # the median detection sits at the 80th percentile
    rarer = np.concatenate([np.full(380, _NOT_DETECTED), detections[:20]])  # 5 % detected: a detection is rarer news
    assert (math.log(0.03) - _NOT_DETECTED) / robust_scale(rarer, _NOT_DETECTED) > 1.9 > z
    few = np.concatenate([np.full(395, _NOT_DETECTED), detections[:5]])  # too few detections to say: the floor
    assert robust_scale(few, _NOT_DETECTED) == 0.1


def test_multivariate_flags_an_odd_combination_below_the_limits():
    rng = random.Random(9)
    items = ["lead", "cadmium", "inorganic_arsenic"]

    def sample(n, levels):
        return [result(n, noisy(rng, lv, 0.25), test_item=item, sample_id=f"S{n}") for item, lv in zip(items, levels, strict=True)]

    detector = MultivariateAnomaly(min_reference=100, refit_every=50)
    normal = [r for n in range(250) for r in sample(n, (0.02, 0.02, 0.02))]
    assert len(run(detector, normal)) <= 1
    odd = sample(300, (0.12, 0.11, 0.02))  # two items at ~60 % of the limit together
    alerts = run(detector, odd)
    assert len(alerts) == 1 and alerts[0].detector == "multivariate"
    assert "Isolation" in alerts[0].explanation or "isolated" in alerts[0].explanation
    assert sorted(alerts[0].evidence) == sorted(r.result_id for r in odd)
    assert type(alerts[0].score) is float, "a plain float: orjson cannot send numpy's"


def _shared_cause_stream(rng: random.Random, raised: tuple[str, ...], samples: int = 480, onset: int = 300) -> tuple[list, set[str]]:
    """Lead, cadmium and arsenic at 20 % of the limit with a wide spread; from ``onset`` a quarter of the
    samples have the ``raised`` items × 3 (z ≈ 2: no sample is odd alone). Returns the stream and the raised results' ids."""
    items, stream, labelled = ["lead", "cadmium", "inorganic_arsenic"], [], set()
    for n in range(samples):
        lifted = n >= onset and rng.random() < 0.25
        for item in items:
            factor = 3.0 if lifted and item in raised else 1.0
            stream.append(result(n, noisy(rng, 0.04 * factor, 0.5), test_item=item, sample_id=f"S{n}"))
            if factor > 1:
                labelled.add(stream[-1].result_id)
    return stream, labelled


def _process_in_batches(detector, stream, size: int = 150) -> list:
    return [a for start in range(0, len(stream), size) for a in detector.process_many(stream[start : start + size], T0)]


def test_multivariate_pair_scan_fires_on_two_items_raised_together_in_a_share_of_samples():
    stream, labelled = _shared_cause_stream(random.Random(21), ("lead", "cadmium"))
    alerts = _process_in_batches(MultivariateAnomaly(min_reference=100, refit_every=50), stream)
    pairs = [a for a in alerts if a.signal.endswith("|lead+cadmium")]
    assert pairs, [a.title for a in alerts]
    assert not [a for a in alerts if "+" in a.signal and a.signal != pairs[0].signal]
    first = pairs[0]
    assert "raised together" in first.explanation and "同时偏高" in first.explanation_zh
    assert set(first.evidence) <= labelled | {r.result_id for r in stream if r.test_item in ("lead", "cadmium")}
    assert len(set(first.evidence) & labelled) >= 0.75 * len(first.evidence)
    onset_position = 300 * 3
    fired_after = max(n for n, r in enumerate(stream) if r.result_id in first.evidence) - onset_position
    assert 0 < fired_after < 60 * 3, "within sixty samples of the onset (about fifteen raised)"
    # the pair scan's expectations are numpy's: an alert must carry plain floats, or orjson cannot send it (a worker stopped on it)
    assert type(first.score) is float and orjson.loads(orjson.dumps(first.to_wire()))["score"] == first.score


def test_multivariate_pair_scan_is_quiet_when_one_item_rises_alone_or_nothing_does():
    for raised in (("lead",), ()):
        stream, _ = _shared_cause_stream(random.Random(22), raised)
        alerts = _process_in_batches(MultivariateAnomaly(min_reference=100, refit_every=50), stream)
        assert not [a.title for a in alerts if "+" in a.signal], raised


def test_co_elevation_learns_usual_shares_per_batch_as_one_update_per_sample_would():
    rng = np.random.default_rng(5)
    scan = CoElevation(min_z=0.5, sum_z=1.5, min_level=-5.0, memory=50.0, alpha=0.0)  # alpha 0: no pair ever stops learning
    state, codes = PairState(), ["a", "b", "c"]
    samples = []
    for batch in range(4):
        levels = rng.normal(-2, 1, size=(40, 3))
        levels[rng.random((40, 3)) < 0.2] = np.nan  # some samples lack an item
        z = levels + 2
        times = [T0 + timedelta(hours=batch * 40 + s) for s in range(40)]
        scan.judge(state, codes, levels, z, times, [[result(s, test_item=c) for c in codes] for s in range(40)])
        samples.append((levels, z))
    for a, b in [(0, 1), (0, 2), (1, 2)]:
        one_by_one = RateEstimate(scan.prior_share, scan.prior_weight, 50.0)
        for levels, z in samples:
            for row, zs in zip(levels, z, strict=True):
                if not (np.isnan(row[a]) or np.isnan(row[b])):
                    one_by_one.learn(bool(zs[a] >= 0.5 and zs[b] >= 0.5 and zs[a] + zs[b] >= 1.5))
        assert scan.usual_share(state)[a, b] == pytest.approx(one_by_one.rate, rel=1e-12)


def test_failure_scan_counts_many_passes_at_once_as_one_by_one():
    one_by_one, at_once = FailureScan(timedelta(days=30)), FailureScan(timedelta(days=30))
    for scan in (one_by_one, at_once):
        scan.add(T0, 0.01, True)
    for n in range(1, 40):
        one_by_one.add(T0 + timedelta(hours=n), 0.01, False)
    at_once.add_passes(T0 + timedelta(hours=39), 0.01 * 39, 39)
    for scan in (one_by_one, at_once):
        scan.add(T0 + timedelta(hours=40), 0.01, True)
        scan.add(T0 + timedelta(hours=41), 0.01, True)
    for least in (2, 3):
        first, second = one_by_one.cluster(least), at_once.cluster(least)
        assert (second.start, second.failures, second.results) == (first.start, first.failures, first.results)
        assert second.p_value == pytest.approx(first.p_value, rel=1e-12)
    assert one_by_one.cluster(3).results == 42


def test_compiled_forest_sends_every_row_down_scikit_learns_paths_and_scores_as_it_does():
    rng = np.random.default_rng(3)
    for rows, columns in [(400, 5), (120, 1), (300, 9)]:
        reference = rng.normal(size=(rows, columns))
        model = IsolationForest(n_estimators=50, random_state=4).fit(reference)
        # the reference itself (rows on the thresholds' either side) and rows far outside it
        probes = np.vstack([reference, 3 * rng.normal(size=(40, columns))])
        forest = CompiledForest.of(model)
        trees = zip(model.estimators_, model.estimators_features_, strict=True)
        expected = [tree.apply(probes[:, used].astype(np.float32)) for tree, used in trees]
        assert np.array_equal(forest.leaves(probes) - forest.roots, np.column_stack(expected))  # the same leaf in every tree
        # leaf depths are kept in float32: scores agree to its precision
        assert np.allclose(forest.isolation(probes), -model.score_samples(probes), rtol=0, atol=1e-7)


def test_trees_grown_without_the_ensembles_overhead_are_isolation_forests_own_node_for_node():
    rng = np.random.default_rng(9)
    # under and over the 256-row subsample, one column and several, repeated values (ties at splits)
    for rows, columns in [(400, 7), (256, 3), (40, 1), (700, 5), (300, 4)]:
        reference = rng.normal(size=(rows, columns))
        if columns == 4:
            reference = np.round(reference, 1)
        for seed in (0, 17, 2_000_000_000):
            expected = CompiledForest.of(IsolationForest(n_estimators=12, random_state=seed).fit(reference))
            grown = grow_trees(reference, 12, seed)
            for part in ("feature", "split", "right", "roots"):
                assert np.array_equal(getattr(grown, part), getattr(expected, part)), (rows, columns, seed, part)
    assert grow_trees(reference, 12, 1).split.tobytes() != grow_trees(reference, 12, 2).split.tobytes()  # the seed matters


def test_thresholds_kept_in_float32_send_every_float32_value_the_same_way():
    rng = np.random.default_rng(6)
    thresholds = np.concatenate([rng.normal(size=10_000), rng.normal(size=100).astype(np.float32).astype(float)])  # some exactly float32
    kept = _float32_at_most(thresholds)
    assert kept.dtype == np.float32 and (kept.astype(float) <= thresholds).all()
    above = np.nextafter(kept, np.float32(np.inf))  # the float32 values either side of each threshold
    assert (above.astype(float) > thresholds).all(), "the largest float32 not above: the next one is above"
    for x in (kept, above):
        assert np.array_equal(x <= kept, x.astype(float) <= thresholds)


def test_forests_drop_their_oldest_trees_and_join_newer_ones_as_scikit_learn_would_score_them():
    rng = np.random.default_rng(5)
    older, newer = rng.normal(size=(400, 4)), rng.normal(0.5, 1.0, size=(150, 4))  # subsamples of 256 and 150 points
    probes = np.vstack([older[:50], newer[:50], 4 * rng.normal(size=(20, 4))])

    def log_score(model):  # log2 of the isolation: minus the trees' mean normalised depth
        return np.log2(-model.score_samples(probes))

    first = IsolationForest(n_estimators=10, random_state=1, warm_start=True).fit(older)
    oldest_ten = log_score(first)
    first.set_params(n_estimators=30).fit(older)  # 20 more trees after those ten
    kept = CompiledForest.of(first).newest(20)
    assert kept.trees == 20 and CompiledForest.of(first).newest(30).trees == 30
    newest_twenty = (30 * log_score(first) - 10 * oldest_ten) / 20
    assert np.allclose(np.log2(kept.isolation(probes)), newest_twenty, rtol=0, atol=1e-6)
    second = IsolationForest(n_estimators=10, random_state=2).fit(newer)
    joined = kept.joined(CompiledForest.of(second))
    assert joined.trees == 30
    # each tree's depth is normalised by its own subsample size: the joined forest's log-score is the trees' weighted mean
    assert np.allclose(np.log2(joined.isolation(probes)), (20 * newest_twenty + 10 * log_score(second)) / 30, rtol=0, atol=1e-6)


def test_multivariate_refits_replace_a_generation_of_trees_and_keep_the_forest_size():
    rng = random.Random(8)
    items = ["lead", "cadmium", "inorganic_arsenic"]
    detector = MultivariateAnomaly(min_reference=100, refit_every=50, trees=20, trees_per_refit=5)
    forests = []
    for start in range(0, 400, 50):
        batch = [result(n, noisy(rng, 0.02, 0.25), test_item=i, sample_id=f"S{n}") for n in range(start, start + 50) for i in items]
        detector.process_many(batch, T0)
        model = detector.categories[batch[0].category].model
        if model is not None:
            forests.append(model.fitted.forest)
    assert len(forests) >= 5 and all(forest.trees == 20 for forest in forests)
    later, earlier = forests[-1], forests[-2]
    shared = earlier.newest(15)  # the refit kept the newest 15 trees of the model before it, then grew 5
    assert np.array_equal(later.newest(20).split[: shared.split.size], shared.split)
    assert not np.array_equal(later.newest(5).split, earlier.newest(5).split)
    assert detector.categories[batch[0].category].fits == len(forests)


def test_multivariate_fits_in_another_process_raise_the_same_alerts():
    rng = random.Random(12)
    items = ["lead", "cadmium", "inorganic_arsenic"]
    stream = []
    for n in range(400):
        levels = (0.12, 0.11, 0.02) if n % 131 == 130 else (0.02, 0.02, 0.02)
        stream += [result(n, noisy(rng, lv, 0.25), test_item=i, sample_id=f"S{n}") for i, lv in zip(items, levels, strict=True)]
    batches = [stream[i : i + 90] for i in range(0, len(stream), 90)]

    def alerts(detector):
        return [a.alert_id for batch in batches for a in detector.process_many(batch, T0)]

    in_place = alerts(MultivariateAnomaly(min_reference=100, refit_every=50))
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        pooled = alerts(MultivariateAnomaly(min_reference=100, refit_every=50, fits=pool))
    assert len(in_place) >= 2 and pooled == in_place
    pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
    pool.shutdown()  # a pool that can take no work, as after its process was killed
    assert alerts(MultivariateAnomaly(min_reference=100, refit_every=50, fits=pool)) == in_place, "fits fall back to in place"


# --- merging and the suite --------------------------------------------------------------------


def test_merger_folds_firings_of_one_signal_inside_the_window():
    rng = random.Random(10)
    detector = ValueAnomaly()
    run(detector, [result(n, noisy(rng, 0.03)) for n in range(40)])
    first = detector.process_one(result(41, 0.15), T0)[0]
    second = dataclasses.replace(
        first, evidence=["other"], first_seen=first.first_seen + timedelta(days=2), last_seen=first.last_seen + timedelta(days=2)
    )
    late = dataclasses.replace(
        first, evidence=["late"], first_seen=first.first_seen + timedelta(days=30), last_seen=first.last_seen + timedelta(days=30)
    )
    merger = AlertMerger(window=timedelta(days=7))
    a = merger.merge(first)
    b = merger.merge(second)
    assert a.alert_id == b.alert_id == first.alert_id and b.count == 2 and b.evidence == first.evidence + ["other"]
    c = merger.merge(late)
    assert c.alert_id != a.alert_id and c.count == 1
    restored = AlertMerger(window=timedelta(days=7))
    restored.restore([b])
    assert restored.merge(dataclasses.replace(second, evidence=["third"])).count == 3


def test_the_suite_takes_reports_sampled_long_before_the_newest_without_error():
    """Labs catch up on backlogs: a fifth of the results here were sampled up to 200 days before
    the stream's newest (past every detector's window), among the default incidents' failures."""
    rng = random.Random(5)
    simulator = Simulator(seed=5, start=T0, reports_per_day=300)
    policy = ValidationPolicy(max_age=timedelta(days=36500), max_future_skew=timedelta(days=36500))
    results = []
    for _ in range(3000):
        report = validate_report(orjson.dumps(simulator.next_report()), now=T0 + timedelta(days=3650), policy=policy)
        late = timedelta(days=rng.uniform(0, 200)) if rng.random() < 0.2 else None
        results += [msgspec.structs.replace(r, sampled_at=r.sampled_at - late) if late else r for r in report.results]
    suite = DetectorSuite()
    alerts = [a for start in range(0, len(results), 500) for a in suite.process(results[start : start + 500], results[start].published_at)]
    assert {"cross_city", "manufacturer", "failure_rate"} <= {a.detector for a in alerts}, "the failures reached the scans"


def test_suite_warm_builds_state_silently_then_process_alerts():
    rng = random.Random(11)
    history = [result(n, noisy(rng, 0.03)) for n in range(40)]
    suite = DetectorSuite([ValueAnomaly()])
    suite.warm(history, T0)
    alerts = suite.process([result(41, 0.15)], T0)
    assert [a.detector for a in alerts] == ["value_anomaly"]
    fresh = DetectorSuite([ValueAnomaly()])
    assert fresh.process([result(41, 0.15)], T0) == []  # no history, no judgement


def test_the_array_median_is_numpys_to_the_bit():
    from detectors.univariate import array_median

    rng = np.random.default_rng(11)
    for n in [*range(1, 12), 399, 400]:
        for dtype in (np.float64, np.float32):
            for values in (rng.normal(size=n), np.round(rng.normal(size=n), 1)):  # ties too
                values = values.astype(dtype)
                assert array_median(values) == float(np.median(values)), (n, dtype)
    assert math.isnan(array_median(np.array([])))


def test_the_fast_median_absolute_deviation_matches_the_definition():
    import random
    import statistics

    from detectors.univariate import fstdev, median_absolute_deviation

    rng = random.Random(5)
    for _ in range(3000):  # odd and even counts up to past a drift reference's 80, with ties
        values = sorted(rng.choice([rng.gauss(0, 1), float(rng.randint(0, 3))]) for _ in range(rng.randint(1, 90)))
        centre = statistics.median(values) if rng.random() < 0.7 else rng.uniform(-2, 4)
        assert median_absolute_deviation(values, centre) == statistics.median(abs(v - centre) for v in values)  # the same floats
        assert fstdev(values) == pytest.approx(statistics.stdev(values) if len(values) > 1 else 0.0, abs=1e-9)
