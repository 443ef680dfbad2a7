import dataclasses
import json
from datetime import UTC, datetime

import orjson
from rich.console import Console

from detectors.base import firing
from schemas.results import Severity
from schemas.validation import validate_report
from streams.bench_detect import BenchConfig, BenchReport, DetectorScore, Run, about_risky_makers, pooled, run_suite
from streams.bench_report import print_report, print_seeds, report_json, rows
from streams.simulation import DEFAULT_INCIDENTS, Incident, Simulator, uscc_check_character


def test_simulated_reports_satisfy_the_contract_and_are_reproducible():
    start = datetime(2026, 9, 1, tzinfo=UTC)
    first, second = Simulator(seed=11, start=start), Simulator(seed=11, start=start)
    for _ in range(1500):
        report = first.next_report()
        assert report == second.next_report()
        outcome = validate_report(orjson.dumps(report))
        assert outcome.rejections == [], outcome.rejections
        assert report["synthetic"] is True
        assert report["manufacturer"]["uscc"][-1] == uscc_check_character(report["manufacturer"]["uscc"][:17])


def test_all_seven_cities_report():
    sim = Simulator(seed=2, incidents=())
    assert {sim.next_report()["city"] for _ in range(500)} == {"jinan", "zibo", "taian", "liaocheng", "dezhou", "binzhou", "dongying"}


def test_uscc_check_character_matches_a_published_code():
    # 91350100M000100Y43 is the standard's worked example (GB 32100-2015, annex).
    assert uscc_check_character("91350100M000100Y4") == "3"


def failure_share(sim, count, category, item, cities):
    hits = fails = 0
    for _ in range(count):
        report = sim.next_report()
        if report["category"] == category and report["city"] in cities:
            for it in report["items"]:
                if it["test_item"] == item:
                    hits += 1
                    fails += it["verdict"] == "fail"
    return fails / max(hits, 1)


def test_a_contamination_incident_raises_failures_in_its_segment_only_while_active():
    rice = ("food/grain_products/rice", "cadmium", ("zibo", "binzhou", "dongying"))
    incident = Incident("contamination", 0, 3000, *rice, factor=6.0, probability=0.6)
    during = failure_share(Simulator(seed=5, incidents=(incident,)), 3000, *rice)
    clean = failure_share(Simulator(seed=5, incidents=()), 3000, *rice)
    assert during > 0.2 and clean < 0.05


def test_a_silent_lab_sends_nothing_during_its_incident():
    silent = next(i for i in DEFAULT_INCIDENTS if i.kind == "silent_lab")
    sim = Simulator(seed=3)
    labs = [sim.next_report()["lab"]["id"] for _ in range(silent.start + silent.length)]
    assert silent.lab not in labs[silent.start :]
    assert silent.lab in labs[: silent.start]


def test_about_one_maker_in_twenty_is_risky_and_its_products_fail_several_times_as_often():
    sim = Simulator(seed=7, incidents=())
    risky = {m.uscc for m in sim.manufacturers if m.risky}
    assert 0.01 <= len(risky) / len(sim.manufacturers) <= 0.12
    tested = {True: 0, False: 0}
    failed = {True: 0, False: 0}
    for _ in range(6000):
        report = sim.next_report()
        maker_is_risky = report["manufacturer"]["uscc"] in risky
        for item in report["items"]:
            tested[maker_is_risky] += 1
            failed[maker_is_risky] += item["verdict"] == "fail"
    assert failed[True] / tested[True] >= 3 * failed[False] / tested[False]


def test_the_bench_counts_an_alert_as_about_risky_makers_when_half_its_evidence_is_theirs():
    sim = Simulator(seed=7, incidents=(), start=datetime(2024, 1, 1, tzinfo=UTC))
    results = [r for _ in range(300) for r in validate_report(orjson.dumps(sim.next_report())).results]
    risky = {m.uscc for m in sim.manufacturers if m.risky}
    theirs = [r for r in results if r.manufacturer_uscc in risky][:4]
    others = [r for r in results if r.manufacturer_uscc not in risky][:4]
    stream = Run(results=results, position={r.result_id: i for i, r in enumerate(results)})

    def alert(evidence):
        return firing("manufacturer", "x", severity=Severity.NOT_SERIOUS, score=0.5, title="", title_zh="", explanation="",
                      explanation_zh="", category=evidence[0].category, evidence=evidence, now=evidence[-1].published_at)  # fmt: skip

    assert about_risky_makers(alert(theirs[:2] + others[:2]), stream, risky)
    assert not about_risky_makers(alert(theirs[:1] + others[:3]), stream, risky)
    assert not about_risky_makers(alert(others), stream, risky)
    assert not about_risky_makers(alert(theirs), stream, set())
    assert not about_risky_makers(dataclasses.replace(alert(theirs), detector="lab_bias"), stream, risky), "a lab's alert is about the lab"


def test_the_bench_notes_the_first_firing_of_any_detector_that_cites_an_incidents_results():
    sim = Simulator(seed=7, incidents=(), start=datetime(2024, 1, 1, tzinfo=UTC))
    results = [r for _ in range(400) for r in validate_report(orjson.dumps(sim.next_report())).results]
    failing = [i for i, r in enumerate(results) if r.failing and r.limit_ratio and r.limit_ratio > 1]
    quiet = next(i for i, r in enumerate(results) if not r.failing and r.limit_ratio and r.limit_ratio < 0.3)
    labels = {results[failing[0]].result_id: 0, results[failing[1]].result_id: 0, results[quiet].result_id: 1}
    run = run_suite(results, 500, labels=labels)
    assert run.first_citing[0] == failing[0]  # a failing result is alerted as it arrives
    assert 1 not in run.first_citing  # an ordinary value raises nothing
    assert 0 not in run.first_pattern_citing  # two failing results of different segments make no pattern
    assert run_suite(results, 500).first_citing == {}  # without labels nothing is noted


def _bench_report(detected_delays: list[int], incidents: int, clean_alerts: int, clean: int, incident: int, seconds: float):
    def score(name: str) -> DetectorScore:
        return DetectorScore(name, incidents=incidents, detected=len(detected_delays), alerts=10, true_alerts=9,
                             clean_alerts=clean_alerts, delays_results=list(detected_delays), delays_hours=[1.0] * len(detected_delays))  # fmt: skip

    return BenchReport({"failure_rate": score("failure_rate")}, clean, incident, (clean + incident) / seconds, score("overall"))


def test_pooled_seeds_count_every_incident_alert_and_clean_result_once():
    first = _bench_report([2, 3, 4, 5, 6], incidents=5, clean_alerts=1, clean=10_000, incident=20_000, seconds=3.0)
    second = _bench_report([1, 1, 1, 9], incidents=5, clean_alerts=0, clean=30_000, incident=20_000, seconds=2.5)
    pool = pooled([first, second])
    overall = rows(pool)[-1]
    assert (overall["incidents"], overall["detected"], overall["recall"]) == (10, 9, 0.9)
    assert overall["median_delay_results"] == 3 and overall["detected_within_target_delay"] == 5  # 1, 1, 1, 2, 3 of nine
    assert overall["false_per_10k_clean"] == 0.25 and (pool.clean_results, pool.incident_results) == (40_000, 40_000)
    assert pool.results_per_second == 80_000 / 5.5  # both seeds' results over both seeds' time
    figures = json.loads(report_json(pool, BenchConfig(seed=7), {7: first, 8: second}))
    assert figures["config"]["seed"] == [7, 8] and figures["seeds"]["8"]["detectors"][-1]["detected_within_target_delay"] == 3
    console = Console(record=True, width=200)
    print_seeds({7: first, 8: second}, console)
    print_report(pool, BenchConfig(seed=7), console, seeds=(7, 8))
    text = console.export_text()
    assert "seeds 7, 8 pooled" in text and "2/5" in text and "3/4" in text  # found within 3 results, seed by seed
