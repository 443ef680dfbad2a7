"""`riskwatch demo`, as a user runs it: real broker, worker process, simulator, summary."""

import os
import re
import subprocess
import sys

import pytest


@pytest.mark.timeout(300)
def test_demo_prints_alerts_and_a_summary_from_clickhouse(tmp_path):
    env = {**os.environ, "RISKWATCH_DATA_DIR": str(tmp_path), "COLUMNS": "200"}
    run = subprocess.run(
        [sys.executable, "-m", "streams.cli", "demo", "--duration", "8", "--rate", "60"],
        env=env, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    out = run.stdout
    assert run.returncode == 0, out + run.stderr
    assert "summary, read back from ClickHouse" in out
    stored = int(re.search(r"stored (\d+) results from (\d+) reports", out).group(1))
    assert stored > 1000
    live = int(re.search(r"(\d+) alerts printed live", out).group(1))
    assert live > 0 and re.search(r"(serious|not serious) +\d+\.\d\d×", out)
    assert "alerts by severity" in out and "riskwatch sql --data-dir" in out
    assert (tmp_path / "demo" / "clickhouse").is_dir()
    bulletin = re.search(r"Risk bulletin for the simulated period \(open it in a browser\): (\S+\.html)", out).group(1)
    assert "产品质量安全风险预警通报" in open(bulletin, encoding="utf-8").read()
