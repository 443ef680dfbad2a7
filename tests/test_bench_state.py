"""The detector-state benchmark measures what it says: the segments it feeds and the state they leave."""

from streams.bench_state import measure, synthetic_rounds


def test_synthetic_rounds_feed_exactly_the_asked_segments_once_per_round():
    rounds = list(synthetic_rounds(segments=150, per_segment=2))
    assert len(rounds) == 2
    for batch in rounds:
        assert len(batch) == len({(r.category, r.test_item, r.city) for r in batch}) == 150
    assert {r.result_id for r in rounds[0]}.isdisjoint(r.result_id for r in rounds[1])


def test_measure_reports_each_detectors_state_and_the_results_fed():
    figures = measure(segments=300, per_segment=30)
    assert figures.results == 9_000
    assert set(figures.pickled_bytes) >= {"limit_drift", "value_anomaly", "lab_bias", "multivariate"}
    assert figures.pickled_bytes["limit_drift"] > 300 * 24 * 8, "drift keeps its recent values per segment"
    assert figures.rss_after_mb > 0 and figures.seconds > 0
