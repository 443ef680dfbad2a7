from datetime import UTC, datetime

import orjson

from schemas.validation import validate_report
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
