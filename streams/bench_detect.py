"""``riskwatch bench detect``: score every detector on labelled, seeded scenarios.

Two streams from the simulator, both validated exactly as the worker validates them:
a *clean* stream (no incidents) for the false-alarm rate, and an *incident* stream with
incidents of every kind injected into distinct segments at spaced times. The simulator
labels every value an incident changed, which is the ground truth:

- recall: incidents caught by their detector (an alert of that detector whose evidence
  holds a labelled result; for a silent lab, an alert on that lab during the silence);
- precision: alerts of a detector whose evidence holds any labelled result (for limit
  exceedance, every alert is a failing result, hence true);
- false alerts per 10,000 clean results: alerts other than limit exceedance on the clean
  stream, where nothing was injected;
- alerts about risky makers: the simulator draws every maker's products at its own quality
  factor, and about 1 maker in 20 is sloppy enough (``RISKY_QUALITY``) to fail several times as
  often as its trade, everywhere, all the time. An alert whose evidence comes at least half from
  such makers reports that standing risk: it is counted as true for precision and not as false
  on the clean stream, and shown in a column of its own. Not for lab bias or a silent lab: those
  alerts say a lab is wrong, which a sloppy maker does not make true;
- detection delay: labelled results of the incident up to the one that fired (results), and
  event time from the first labelled result, or the start of a silence, to the firing (hours);
- first warning: what a risk officer hears first, whichever detector speaks — the first firing
  of any detector whose evidence holds a labelled result of the incident, and its delay in
  labelled results as above; once with failing results (limit exceedance; the brief counts one
  as an early warning) and once without them (the pattern detectors together). For a silent lab,
  the silent-lab detector's own alert.
"""

from __future__ import annotations

import itertools
import math
import random
import statistics
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import orjson

from detectors.suite import DetectorSuite
from schemas.results import Alert, LabResult
from schemas.validation import ValidationPolicy, validate_report
from streams.simulation import CATEGORY_PROFILES, LABS, Incident, Simulator

_POLICY = ValidationPolicy(max_age=timedelta(days=36500), max_future_skew=timedelta(days=36500))
_START = datetime(2024, 1, 1, tzinfo=UTC)
KINDS = ("value_anomaly", "multivariate", "limit_drift", "failure_rate", "cross_city", "manufacturer", "lab_bias", "silent_lab")


@dataclass(frozen=True, slots=True)
class BenchConfig:
    seed: int = 2026
    per_kind: int = 5
    warmup_reports: int = 6000
    spacing: int = 2500  # reports between incident starts
    clean_reports: int = 30000
    chunk: int = 2000  # reports per detector call (a worker batch)


def _segments(rng: random.Random) -> list[tuple[str, str, float]]:
    """(category, item, typical fraction of limit) of every numeric max-limit item, shuffled."""
    pairs = [(c.code, i.test_item, i.median_fraction) for c in CATEGORY_PROFILES for i in c.items if i.limit and i.limit_type == "max"]
    rng.shuffle(pairs)
    return pairs


def bench_incidents(config: BenchConfig) -> tuple[Incident, ...]:
    """per_kind incidents of every kind, in distinct segments, starts spaced and shuffled."""
    rng = random.Random(config.seed)
    segments = _segments(rng)
    multi_item = [c for c in CATEGORY_PROFILES if sum(1 for i in c.items if i.limit and i.limit_type == "max" and i.median_fraction <= 0.15) >= 2]
    low = [  # items whose values usually sit at ≤ 8 % of the limit with an ordinary spread
        (c.code, i.test_item, i.median_fraction, i.spread)
        for c in CATEGORY_PROFILES for i in c.items if i.limit and i.limit_type == "max" and i.median_fraction <= 0.08 and i.spread <= 0.7
    ]  # fmt: skip
    rng.shuffle(low)
    cities = ["jinan", "zibo", "taian", "liaocheng", "dezhou", "binzhou", "dongying"]
    slots = list(range(len(KINDS) * config.per_kind))
    rng.shuffle(slots)
    incidents: list[Incident] = []
    for n, kind in enumerate(k for k in KINDS for _ in range(config.per_kind)):
        start = config.warmup_reports + slots[n] * config.spacing
        category, item, typical = segments[n % len(segments)]
        city = (rng.choice(cities),)
        if kind == "value_anomaly":  # a jump of 3.5 σ where values usually sit far below the limit: unusual, mostly not failing
            category, item, typical, spread = low[n % len(low)]
            incidents.append(Incident("contamination", start, 3000, category, item, city, math.exp(3.5 * spread), 1.0, detector=kind))
        elif kind == "multivariate":  # two low items of one category raised 6× together in a quarter of samples
            profile = rng.choice(multi_item)
            pair = rng.sample([i for i in profile.items if i.limit and i.limit_type == "max" and i.median_fraction <= 0.15], 2)
            factor = 6.0
            incidents.append(Incident("combination", start, 3000, profile.code, "", (), factor, 0.25,
                                      items=tuple(i.test_item for i in pair), detector=kind))  # fmt: skip
        elif kind == "limit_drift":  # creeping from the usual level to 1.2× the limit
            incidents.append(Incident("drift", start, 6000, category, item, city, 1.2 / typical, detector=kind))
        elif kind == "failure_rate":  # a third of one city's results of the item fail, for a few days
            incidents.append(Incident("contamination", start, 6000, category, item, city, 1.6 / typical, 0.35, detector=kind))
        elif kind == "cross_city":  # failures in four cities at once
            incidents.append(Incident("contamination", start, 3000, category, item, tuple(rng.sample(cities, 4)), 1.6 / typical, 0.5, detector=kind))
        elif kind == "manufacturer":  # one maker fails wherever sampled
            incidents.append(Incident("manufacturer", start, 4000, category, item, (), 2.0 / typical, 0.9,
                                      manufacturer_index=rng.randrange(14), detector=kind))  # fmt: skip
        elif kind == "lab_bias":  # one lab reads 1.8× on one item
            incidents.append(Incident("lab_bias", start, 8000, category, item, (), 1.8, lab=rng.choice(LABS).id, detector=kind))
        else:  # one lab silent for ~900 reports (about 14 hours)
            incidents.append(Incident("silent_lab", start, 900, lab=rng.choice(LABS).id, detector=kind))
    return tuple(incidents)


@dataclass(slots=True)
class Run:
    results: list[LabResult] = field(default_factory=list)
    position: dict[str, int] = field(default_factory=dict)  # result id → stream position
    first_versions: dict[str, Alert] = field(default_factory=dict)  # alert id → first emitted version
    last_versions: dict[str, Alert] = field(default_factory=dict)
    # incident → position of the first firing citing one of its results: of any detector, of any but limit exceedance
    first_citing: dict[int, int] = field(default_factory=dict)
    first_pattern_citing: dict[int, int] = field(default_factory=dict)
    seconds: float = 0.0

    def fired_at(self, alert: Alert) -> int:
        """Stream position of the result that raised this version of an alert: its newest evidence."""
        return max(self.position.get(rid, 0) for rid in alert.evidence)


def _stream(simulator: Simulator, reports: int) -> list[LabResult]:
    results: list[LabResult] = []
    for _ in range(reports):
        results.extend(validate_report(orjson.dumps(simulator.next_report()), now=_START + timedelta(days=3650), policy=_POLICY).results)
    return results


def run_suite(
    results: list[LabResult], chunk_results: int, progress: Callable[[int], None] | None = None, labels: dict[str, int] | None = None
) -> Run:
    """Run the suite over the results in worker-sized batches; with ``labels`` (result id → incident),
    note for every incident when a firing first cited one of its results."""
    import time

    run = Run(results=results, position={r.result_id: i for i, r in enumerate(results)})
    suite = DetectorSuite()
    started = time.perf_counter()
    for start in range(0, len(results), chunk_results):
        batch = results[start : start + chunk_results]
        for alert in suite.versions(batch, batch[-1].published_at):  # the first version holds the evidence it was raised on
            run.first_versions.setdefault(alert.alert_id, alert)
            run.last_versions[alert.alert_id] = alert
            cited = {labels[rid] for rid in alert.evidence if rid in labels} if labels else ()
            if cited:
                fired = run.fired_at(alert)
                firsts = [run.first_citing] + ([run.first_pattern_citing] if alert.detector != "limit_exceedance" else [])
                for first, number in itertools.product(firsts, cited):
                    first[number] = min(fired, first.get(number, fired))
        if progress is not None:
            progress(len(batch))
    run.seconds = time.perf_counter() - started
    return run


@dataclass(slots=True)
class Warnings:
    """Incidents some firing cited, and the delays of the first such firings (labelled results)."""

    warned: int = 0
    delays_results: list[int] = field(default_factory=list)

    def add(self, delay: int) -> None:
        self.warned += 1
        self.delays_results.append(delay)

    def extend(self, other: Warnings) -> None:
        self.warned += other.warned
        self.delays_results += other.delays_results


@dataclass(slots=True)
class DetectorScore:
    detector: str
    incidents: int = 0
    detected: int = 0
    alerts: int = 0
    true_alerts: int = 0  # incidents' and risky makers'
    clean_alerts: int = 0  # false ones: neither an incident's nor a risky maker's
    risky_maker_alerts: int = 0  # in both streams
    delays_results: list[int] = field(default_factory=list)
    delays_hours: list[float] = field(default_factory=list)
    first_warning: Warnings = field(default_factory=Warnings)  # of this detector's kind of incident, from any detector
    first_pattern_warning: Warnings = field(default_factory=Warnings)  # the same without limit exceedance

    @property
    def recall(self) -> float | None:
        return self.detected / self.incidents if self.incidents else None

    def add(self, other: DetectorScore) -> None:
        """Count another score's incidents, alerts and delays in this one (the overall row, or seeds pooled)."""
        self.incidents += other.incidents
        self.detected += other.detected
        self.alerts += other.alerts
        self.true_alerts += other.true_alerts
        self.clean_alerts += other.clean_alerts
        self.risky_maker_alerts += other.risky_maker_alerts
        self.delays_results += other.delays_results
        self.delays_hours += other.delays_hours
        self.first_warning.extend(other.first_warning)
        self.first_pattern_warning.extend(other.first_pattern_warning)

    @property
    def precision(self) -> float | None:
        return self.true_alerts / self.alerts if self.alerts else None


@dataclass(slots=True)
class BenchReport:
    scores: dict[str, DetectorScore]
    clean_results: int
    incident_results: int
    results_per_second: float
    overall: DetectorScore


def _match(alert: Alert, incident: Incident, number: int, labels: dict[str, int], simulator: Simulator) -> bool:
    if incident.kind == "silent_lab":
        start, end = simulator.silences.get(number, (None, None))
        return start is not None and incident.lab in alert.labs and start - timedelta(hours=1) <= alert.last_seen <= end + timedelta(days=1)
    return any(labels.get(rid) == number for rid in alert.evidence)


def about_risky_makers(alert: Alert, run: Run, risky: set[str]) -> bool:
    """Whether at least half of the alert's evidence is results (of the run's stream) of makers the
    simulator made sloppy, and the alert is about values or failures, not about a lab."""
    if alert.detector in ("lab_bias", "silent_lab"):
        return False
    makers = [run.results[run.position[rid]].manufacturer_uscc for rid in alert.evidence if rid in run.position]
    return bool(makers) and 2 * sum(1 for uscc in makers if uscc in risky) >= len(makers)


def evaluate(config: BenchConfig = BenchConfig(), progress: Callable[[str, int, int], None] | None = None) -> BenchReport:
    """Run both streams and score every detector."""
    incidents = bench_incidents(config)
    total_reports = config.warmup_reports + len(incidents) * config.spacing + 8000
    simulator = Simulator(seed=config.seed, start=_START, incidents=incidents)
    if progress:
        progress("simulating the incident stream", 0, total_reports)
    incident_results = _stream(simulator, total_reports)
    clean_sim = Simulator(seed=config.seed + 1, start=_START, incidents=())
    if progress:
        progress("simulating the clean stream", 0, config.clean_reports)
    clean_results = _stream(clean_sim, config.clean_reports)
    items_per_report = len(incident_results) / total_reports
    chunk = max(1, int(config.chunk * items_per_report))
    done = 0

    def tick(n: int) -> None:
        nonlocal done
        done += n
        if progress:
            progress("running the detectors", done, len(incident_results) + len(clean_results))

    labels = simulator.labels
    run = run_suite(incident_results, chunk, tick, labels)
    clean = run_suite(clean_results, chunk, tick)

    scores = {name: DetectorScore(name) for name in ["limit_exceedance", *KINDS]}
    overall = DetectorScore("overall")
    by_detector: dict[str, list[Alert]] = defaultdict(list)
    for alert in run.last_versions.values():
        by_detector[alert.detector].append(alert)
    silences = [(n, i) for n, i in enumerate(incidents) if i.kind == "silent_lab"]

    def is_true(alert: Alert) -> bool:
        if alert.detector == "limit_exceedance":
            return True  # every such alert is a failing result
        return any(rid in labels for rid in alert.evidence) or any(_match(alert, i, n, labels, simulator) for n, i in silences)

    risky = {m.uscc for m in simulator.manufacturers if m.risky}
    clean_risky = {m.uscc for m in clean_sim.manufacturers if m.risky}
    for name, alerts in by_detector.items():
        score = scores.setdefault(name, DetectorScore(name))
        score.alerts = len(alerts)
        for alert in alerts:
            if is_true(alert):
                score.true_alerts += 1
            elif about_risky_makers(alert, run, risky):
                score.true_alerts += 1
                score.risky_maker_alerts += 1
    for alert in clean.last_versions.values():
        if alert.detector == "limit_exceedance":
            continue
        if about_risky_makers(alert, clean, clean_risky):
            scores[alert.detector].risky_maker_alerts += 1
        else:
            scores[alert.detector].clean_alerts += 1
    failing = [r for r in incident_results if r.failing]
    limit = scores["limit_exceedance"]
    limit.incidents = len(failing)
    alerted = {rid for a in by_detector["limit_exceedance"] for rid in a.evidence}
    limit.detected = sum(1 for r in failing if r.result_id in alerted)
    limit.delays_results = [1] * limit.detected
    limit.delays_hours = [0.0] * limit.detected
    labelled_positions: dict[int, list[int]] = defaultdict(list)
    for rid, number in labels.items():
        if rid in run.position:
            labelled_positions[number].append(run.position[rid])
    for number, incident in enumerate(incidents):
        score = scores[incident.detector]
        score.incidents += 1
        for warnings, first in ((score.first_warning, run.first_citing), (score.first_pattern_warning, run.first_pattern_citing)):
            if incident.kind != "silent_lab" and number in first:
                warnings.add(sum(1 for p in labelled_positions[number] if p <= first[number]))
        candidates = [a for a in run.first_versions.values() if a.detector == incident.detector]
        hits = [a for a in candidates if _match(run.last_versions[a.alert_id], incident, number, labels, simulator)]
        if not hits:
            continue
        score.detected += 1
        labelled = labelled_positions[number]
        trigger = min(hits, key=run.fired_at)
        trigger_position = run.fired_at(trigger)
        if incident.kind == "silent_lab":
            score.first_warning.add(0)  # only a silent-lab alert can speak of a silence
            score.first_pattern_warning.add(0)
            score.delays_results.append(0)
            score.delays_hours.append((trigger.last_seen - simulator.silences[number][0]).total_seconds() / 3600)
        else:
            onset = incident_results[min(labelled)] if labelled else incident_results[trigger_position]
            score.delays_results.append(sum(1 for p in labelled if p <= trigger_position))
            score.delays_hours.append(max(0.0, (incident_results[trigger_position].sampled_at - onset.sampled_at).total_seconds() / 3600))
    for name, score in scores.items():
        if name != "limit_exceedance":
            overall.add(score)
    seconds = run.seconds + clean.seconds
    return BenchReport(scores, len(clean_results), len(incident_results), (len(incident_results) + len(clean_results)) / seconds, overall)


def pooled(reports: list[BenchReport]) -> BenchReport:
    """Several seeds' reports as one: every incident, alert and clean result counted once, so that
    recall and false alarms rest on as many times the incidents as there are seeds."""
    scores: dict[str, DetectorScore] = {}
    overall = DetectorScore("overall")
    for report in reports:
        for name, score in report.scores.items():
            scores.setdefault(name, DetectorScore(name)).add(score)
        overall.add(report.overall)
    clean = sum(r.clean_results for r in reports)
    incident = sum(r.incident_results for r in reports)
    seconds = sum((r.clean_results + r.incident_results) / r.results_per_second for r in reports)
    return BenchReport(scores, clean, incident, (clean + incident) / seconds, overall)


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None
