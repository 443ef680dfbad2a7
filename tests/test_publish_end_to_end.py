"""`riskwatch publish` against a real broker and worker: bad rows reported, republishing idempotent,
and the drop folder publishing each file once."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from streams.clickhouse import connect
from streams.lims import LimsMapping
from streams.publisher import make_producer, watch_once
from streams.settings import Settings
from streams.worker_process import WorkerProcess
from tests.test_end_to_end import topics, worker_env

pytestmark = pytest.mark.timeout(300)
EXAMPLES = Path(__file__).parent.parent / "docs" / "examples"


def test_publishing_a_file_twice_and_dropping_it_in_a_folder_stores_each_result_once(broker, tmp_path):
    env = worker_env(broker, tmp_path / "data", "publish")
    named = topics("publish")
    cli_env = {**os.environ, **env, "COLUMNS": "250"}
    publish = [sys.executable, "-m", "streams.cli", "publish", "--mapping", str(EXAMPLES / "zbqi-mapping.toml"), str(EXAMPLES / "zbqi-export.csv")]
    folder = tmp_path / "dropbox"
    folder.mkdir()

    async def scenario():
        worker = WorkerProcess(env, tmp_path / "worker.log")
        worker.start()
        try:
            await worker.wait_ready()
            runs = [subprocess.run(publish, env=cli_env, capture_output=True, text=True, timeout=120) for _ in range(2)]
            producer = make_producer(broker.bootstrap, 1_048_576)
            mapping = LimsMapping.load(EXAMPLES / "zbqi-mapping.toml")
            shutil.copy(EXAMPLES / "zbqi-export.csv", folder / "monday.csv")
            first = watch_once(folder, mapping, producer, named.reports_topic)
            shutil.copy(EXAMPLES / "zbqi-export.csv", folder / "monday-again.csv")
            second = watch_once(folder, mapping, producer, named.reports_topic)
            producer.close()
            metrics = await worker.wait_drained(4 * 3)  # three publications of four reports
            return runs, first, second, metrics
        finally:
            assert worker.stop() == 0

    runs, first, second, metrics = asyncio.run(scenario())
    for run in runs:
        assert run.returncode == 0, run.stdout + run.stderr
        assert "11 rows → sent 4 reports (8 test items); 3 lines rejected" in run.stdout
        assert "unknown unit '斤/kg'" in run.stdout and "date '2026-13-03' is not a date" in run.stdout
    assert [s.reports_sent for s in first] == [4] and first[0].ok
    assert second[0].already_published_as == "monday.csv" and second[0].reports_sent == 0
    assert sorted(p.name for p in (folder / "done").iterdir()) == ["monday-again.csv", "monday-again.csv.report.json", "monday.csv", "monday.csv.report.json"]
    assert metrics["riskwatch_results_stored_total"] == 8 and metrics["riskwatch_results_duplicate_total"] == 16

    client = connect(Settings(data_dir=tmp_path / "data"))
    try:
        stored = client.query("SELECT count(), uniqExact(result_id) FROM results").result_rows[0]
        failing = client.query("SELECT count() FROM alerts FINAL WHERE detector = 'limit_exceedance'").result_rows[0][0]
    finally:
        client.close()
    assert stored == (8, 8)
    assert failing == 2  # cadmium in rice and formaldehyde in the T-shirt
