"""docker-compose.yml is valid and speaks the settings object's language (no Docker engine needed)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml

from streams.settings import Settings

ROOT = Path(__file__).parent.parent
# Settings a production worker must not leave at their embedded defaults.
PRODUCTION_REQUIRED = {"KAFKA_BOOTSTRAP", "CLICKHOUSE_URL", "CLICKHOUSE_USER", "CLICKHOUSE_PASSWORD", "WEB_HOST"}


@pytest.fixture(scope="module")
def resolved() -> dict:
    run = subprocess.run(
        ["docker-compose", "--env-file", str(ROOT / ".env.example"), "-f", str(ROOT / "docker-compose.yml"), "config"],
        capture_output=True, text=True, cwd=ROOT,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    return yaml.safe_load(run.stdout)


def test_the_stack_has_every_part(resolved):
    assert set(resolved["services"]) == {"kafka", "clickhouse", "schema", "worker", "simulator", "prometheus", "alertmanager", "grafana"}
    assert resolved["services"]["simulator"]["profiles"] == ["simulator"]
    assert "grafana-clickhouse-datasource" in resolved["services"]["grafana"]["environment"]["GF_INSTALL_PLUGINS"]
    kafka = resolved["services"]["kafka"]["environment"]
    assert kafka["KAFKA_PROCESS_ROLES"] == "broker,controller"  # KRaft, no ZooKeeper


def test_workers_scale_no_fixed_names_or_host_ports(resolved):
    worker = resolved["services"]["worker"]
    assert "container_name" not in worker and "ports" not in worker


def test_every_riskwatch_variable_is_a_setting_and_production_sets_the_required_ones(resolved):
    known = {name.upper() for name in Settings.model_fields}
    for name in ("schema", "worker", "simulator"):
        env = resolved["services"][name]["environment"]
        riskwatch = {k.removeprefix("RISKWATCH_") for k in env if k.startswith("RISKWATCH_")}
        assert riskwatch <= known, riskwatch - known
        assert PRODUCTION_REQUIRED <= riskwatch, PRODUCTION_REQUIRED - riskwatch
        Settings(**{k.lower(): v for k, v in ((k.removeprefix("RISKWATCH_"), v) for k, v in env.items()) if k.lower() in Settings.model_fields})


def test_no_secret_is_written_in_the_compose_file_and_missing_ones_stop_it():
    text = (ROOT / "docker-compose.yml").read_text()
    for line in text.splitlines():
        if re.search(r"PASSWORD\s*:", line):
            assert re.search(r":\s*\$\{\w+:\?[^}]+\}", line), f"secret not from the environment: {line.strip()}"
    run = subprocess.run(["docker-compose", "-f", str(ROOT / "docker-compose.yml"), "config"], capture_output=True, text=True,
                         cwd=ROOT, env={"PATH": "/usr/bin:/bin"})  # fmt: skip
    assert run.returncode != 0 and "CLICKHOUSE_WRITER_PASSWORD" in run.stderr


def test_every_mounted_file_exists_and_the_configs_check(resolved):
    for service in resolved["services"].values():
        for volume in service.get("volumes", []):
            source = volume["source"] if isinstance(volume, dict) else volume.split(":")[0]
            if source.startswith("/") or source.startswith("."):
                assert Path(source).exists(), source
    for command in (["promtool", "check", "config", str(ROOT / "deploy/prometheus/prometheus.yml")],
                    ["amtool", "check-config", str(ROOT / "deploy/alertmanager/alertmanager.yml")]):  # fmt: skip
        assert subprocess.run(command, capture_output=True).returncode == 0, command


def test_clickhouse_users_file_is_well_formed_with_a_read_only_reader():
    import xml.etree.ElementTree as ET

    root = ET.parse(ROOT / "deploy/clickhouse/users.d/riskwatch.xml").getroot()
    assert root.find("profiles/riskwatch_reader/readonly").text == "1"
    assert root.find("users/riskwatch_reader/grants/query").text == "GRANT SELECT ON riskwatch.*"
    assert root.find("users/riskwatch_writer/password").get("from_env") == "CLICKHOUSE_WRITER_PASSWORD"


def test_the_schema_command_the_compose_file_runs_creates_the_tables(tmp_path):
    import os
    import sys

    run = subprocess.run([sys.executable, "-m", "streams.cli", "schema"], capture_output=True, text=True,
                         env={**os.environ, "RISKWATCH_DATA_DIR": str(tmp_path)})  # fmt: skip
    assert run.returncode == 0 and "schema ready: 6 statements" in run.stdout, run.stdout + run.stderr
