"""The detector-state benchmark measures what it says: the segments it feeds and the state they leave."""

from streams.bench_state import measure, synthetic_rounds


def test_synthetic_rounds_feed_exactly_the_asked_segments_once_per_round():
    rounds: dict[int, list] = {}
    for round_, batch in synthetic_rounds(segments=150, per_segment=2):
        rounds.setdefault(round_, []).extend(batch)
    assert sorted(rounds) == [0, 1]
    for results in rounds.values():
        assert len(results) == len({(r.category, r.test_item, r.city) for r in results}) == 150
    assert {r.result_id for r in rounds[0]}.isdisjoint(r.result_id for r in rounds[1])
    samples = {r.sample_id for r in rounds[0]}
    assert len({id(r.category) for r in rounds[0]}) == len(samples) > len({r.category for r in rounds[0]}), "a report's names, its own"


def test_synthetic_rounds_come_in_batches_of_whole_samples():
    batches = list(synthetic_rounds(segments=150, per_segment=2, batch_results=20))
    closing_a_round = [a[0] != b[0] for a, b in zip(batches, batches[1:], strict=False)] + [True]
    assert len(batches) > 4
    assert all(20 <= len(batch) < 20 + 7 or closes for (_, batch), closes in zip(batches, closing_a_round, strict=True))
    samples = [{r.sample_id for r in batch} for _, batch in batches]
    assert all(a.isdisjoint(b) for a, b in zip(samples, samples[1:], strict=False)), "a sample is never split between batches"


def test_measure_reports_each_detectors_state_and_the_results_fed():
    figures = measure(segments=300, per_segment=30)
    assert figures.results == 9_000
    assert set(figures.pickled_bytes) >= {"limit_drift", "value_anomaly", "lab_bias", "multivariate"}
    assert figures.pickled_bytes["limit_drift"] > 300 * 24 * 8, "drift keeps its recent values per segment"
    assert figures.rss_after_mb > 0 and figures.seconds > 0


def test_the_cli_can_count_the_workers_modules_in_the_rss_it_reports():
    """`riskwatch bench state --worker-imports` measures in a process holding the worker's modules
    (Faust, aiokafka, clickhouse-connect, ...), as a worker's RSS does; without it, the detectors' alone."""
    import re
    import subprocess
    import sys

    def rss_before(*flags: str) -> int:
        done = subprocess.run(
            [sys.executable, "-m", "streams.cli", "bench", "state", "--segments", "100", "--per-segment", "2", *flags],
            capture_output=True, text=True, timeout=300, check=True,
        )  # fmt: skip
        return int(re.search(r"RSS ([\d,]+) MB before", " ".join(done.stdout.split())).group(1).replace(",", ""))

    assert rss_before("--worker-imports") >= rss_before() + 10
