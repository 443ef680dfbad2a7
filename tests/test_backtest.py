"""``riskwatch backtest`` as an analyst runs it: a simulated history file in, alerts out to a file
and to (embedded) ClickHouse, from reports (.jsonl) and from results (.csv) alike."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from detectors.suite import default_detectors
from schemas.results import Alert, LabResult
from schemas.validation import validate_report
from streams.backtest import _POLICY, backtest, write_jsonl
from streams.backtest_shards import share_categories
from streams.clickhouse import connect
from streams.settings import Settings

pytestmark = pytest.mark.timeout(300)
ROOT = Path(__file__).resolve().parents[1]
REPORTS = 4000  # enough for the busiest categories to fit their multivariate models


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    run = subprocess.run([sys.executable, "-m", "streams.cli", *args], capture_output=True, text=True, cwd=ROOT, env=os.environ | env)
    assert run.returncode == 0, run.stdout + run.stderr
    return run


def read_alerts(path: Path) -> list[Alert]:
    return [Alert.from_wire(orjson.loads(line)) for line in path.read_bytes().splitlines()]


@pytest.fixture(scope="module")
def history(tmp_path_factory) -> tuple[Path, list[LabResult]]:
    """A simulated history with the default incidents and a few malformed lines, and its valid results."""
    folder = tmp_path_factory.mktemp("history")
    path = folder / "history.jsonl"
    cli("simulate", "--count", str(REPORTS), "--seed", "7", "--bad-fraction", "0.01", "--out", str(path), env={})
    now = datetime.now(UTC) + timedelta(days=1)
    results = [r for line in path.read_bytes().splitlines() for r in validate_report(line, now=now, policy=_POLICY).results]
    return path, results


def test_backtest_writes_every_alert_to_a_file_and_to_clickhouse(history, tmp_path):
    path, results = history
    out = tmp_path / "alerts.jsonl"
    env = {"RISKWATCH_DATA_DIR": str(tmp_path / "data"), "RISKWATCH_FIT_PROCESSES": "1", "RISKWATCH_BACKTEST_PROCESSES": "2"}
    run = cli("backtest", str(path), "--out", str(out), "--clickhouse", env=env)
    assert f"{len(results):,} results" in run.stdout and "rejected: {" in run.stdout, run.stdout
    assert "results/s, 2 processes)" in " ".join(run.stdout.split()), run.stdout  # however the console wrapped it
    alerts = read_alerts(out)
    assert len({a.alert_id for a in alerts}) == len(alerts), "one line per alert, its latest version"
    failing = {r.result_id for r in results if r.failing}
    limit = [a for a in alerts if a.detector == "limit_exceedance"]
    assert {a.evidence[0] for a in limit} == failing and len(limit) == len(failing), "one limit alert per failing result"
    detectors = {a.detector for a in alerts}
    assert {"cross_city", "manufacturer", "silent_lab"} <= detectors, detectors  # the default incidents are found
    assert all(a.explanation and a.evidence for a in alerts)
    client = connect(Settings(data_dir=tmp_path / "data"))
    try:
        stored = client.query("SELECT toString(alert_id), detector FROM alerts FINAL").result_rows
    finally:
        client.close()
    assert sorted(stored) == sorted((a.alert_id, a.detector) for a in alerts)


def test_model_fits_beside_the_detectors_change_no_alert(history, tmp_path):
    """The CLI's fit process pool (spawned, the default) works and gives the same alerts as fitting in
    place, byte for byte (the detector-level equality of scores is in test_detectors)."""
    path, _ = history
    outputs = []
    for processes in ("1", "0"):
        out = tmp_path / f"alerts-{processes}.jsonl"
        cli(
            "backtest",
            str(path),
            "--out",
            str(out),
            env={"RISKWATCH_DATA_DIR": str(tmp_path / "data"), "RISKWATCH_FIT_PROCESSES": processes, "RISKWATCH_BACKTEST_PROCESSES": "1"},
        )
        outputs.append(out.read_bytes())
    assert outputs[0] == outputs[1] and outputs[0].count(b"\n") > 50


def test_a_results_csv_gives_the_same_alerts_as_the_reports_it_came_from(history, tmp_path):
    path, results = history
    table = tmp_path / "results.csv"
    names = list(LabResult.__struct_fields__)
    with table.open("w", newline="", encoding="utf-8") as handle:  # the results table's columns, as `riskwatch sql --format csv` writes
        writer = csv.writer(handle)
        writer.writerow(["limit_value" if n == "limit" else n for n in names])
        for r in results:
            row = [getattr(r, n) for n in names]
            writer.writerow(["" if v is None else v.isoformat() if isinstance(v, datetime) else v for v in row])
    env = {"RISKWATCH_DATA_DIR": str(tmp_path / "data"), "RISKWATCH_FIT_PROCESSES": "0"}
    cli("backtest", str(path), "--out", str(tmp_path / "from-reports.jsonl"), env=env)
    cli("backtest", str(table), "--out", str(tmp_path / "from-csv.jsonl"), env=env)
    from_reports = {(a.alert_id, a.count, tuple(a.evidence)) for a in read_alerts(tmp_path / "from-reports.jsonl")}
    from_csv = {(a.alert_id, a.count, tuple(a.evidence)) for a in read_alerts(tmp_path / "from-csv.jsonl")}
    assert from_csv == from_reports and len(from_csv) > 50


def test_categories_shared_among_processes_give_the_same_alerts_as_one_process(history, tmp_path):
    """Three spawned processes, each with a share of the categories, and silent labs (which watch
    across categories) here: the alerts file is the one a single process writes, byte for byte."""
    path, results = history
    groups = share_categories(results, 3)
    assert sorted(c for g in groups for c in g) == sorted({r.category for r in results}) and all(groups), "a partition, none empty"
    files = []
    for processes in (1, 3):
        seen: list[tuple[int, int]] = []
        outcome = backtest(path, default_detectors, progress=lambda done, total, seen=seen: seen.append((done, total)), processes=processes)
        assert seen and seen[-1] == (len(results), len(results)), "progress reaches every result"
        files.append(tmp_path / f"alerts-{processes}.jsonl")
        write_jsonl(outcome.alerts, files[-1])
    alerts = read_alerts(files[1])
    assert files[0].read_bytes() == files[1].read_bytes()
    assert {"silent_lab", "cross_city", "limit_exceedance"} <= {a.detector for a in alerts}
    assert len({a.category for a in alerts if a.detector != "silent_lab"}) > 3, "alerts from several shares"


def detectors_that_fail_in_a_spawned_process():
    """A detector factory that fails where the shares run (not in the calling process)."""
    import multiprocessing

    if multiprocessing.parent_process() is not None:
        raise ValueError("no detectors here")
    return default_detectors()


def test_a_failing_process_is_reported_with_its_traceback(history):
    path, _ = history
    with pytest.raises(RuntimeError, match=r"backtest-\d failed:[\s\S]*ValueError: no detectors here"):
        backtest(path, detectors_that_fail_in_a_spawned_process, processes=2)


def test_an_empty_file_in_processes_gives_no_alerts(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"")
    outcome = backtest(empty, processes=2)
    assert outcome.results == 0 and outcome.alerts == []


def test_the_categories_are_shared_by_their_results(history):
    _, results = history
    groups = share_categories(results, 2)
    sizes = [sum(1 for r in results if r.category in g) for g in groups]
    largest = max(sum(1 for r in results if r.category == c) for c in {r.category for r in results})
    assert abs(sizes[0] - sizes[1]) <= largest, sizes  # the greedy split is off by at most one category
    assert share_categories(results, 1) == [{r.category for r in results}]
    assert share_categories([], 2) == [set(), set()]
