"""The worker-memory bench runs a real worker on a real broker and store server, and reads its RSS."""

from __future__ import annotations

import re

import pytest
from click.testing import CliRunner

from streams.cli import main

pytestmark = pytest.mark.timeout(300)


def test_a_worker_stores_every_result_of_the_segments_and_its_memory_is_read():
    outcome = CliRunner().invoke(main, ["bench", "worker-memory", "--segments", "700", "--per-segment", "4"], catch_exceptions=False)
    assert outcome.exit_code == 0, outcome.output
    line = " ".join(outcome.output.split())
    found = re.search(r"worker at 700 segments × 4 results .*?: ([\d,]+) results .*?RSS (\d+) MB when ready, peak (\d+) MB, (\d+) MB at the end", line)
    assert found, line
    results, ready, peak, end = (int(group.replace(",", "")) for group in found.groups())
    assert results == 700 * 4, "every result published was stored before the figures were read"
    assert ready >= 50 and peak >= max(ready, end) and end > 0, (ready, peak, end)
    assert "dead letters 0" in line
