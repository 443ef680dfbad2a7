"""Every dashboard panel's ClickHouse SQL, macros expanded, runs on chDB and returns rows."""

from __future__ import annotations

import importlib.util
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
import yaml

from detectors.suite import DetectorSuite
from schemas.validation import ValidationPolicy, validate_report
from streams.lifecycle import set_status
from streams.simulation import Simulator
from tests.grafana_macros import ALL, expand

GRAFANA = Path(__file__).parent.parent / "grafana"


def dashboards() -> dict[str, dict]:
    return {p.name: json.loads(p.read_text(encoding="utf-8")) for p in sorted((GRAFANA / "dashboards").glob("*.json"))}


def test_dashboard_files_are_what_the_generator_writes():
    spec = importlib.util.spec_from_file_location("grafana_dashboards", GRAFANA / "dashboards.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for name, build in module.DASHBOARDS.items():
        assert (GRAFANA / "dashboards" / name).read_text(encoding="utf-8") == module.render(build), f"run python grafana/dashboards.py ({name})"


def test_panels_reach_data_sources_through_variables_and_provisioning_names_both():
    for name, board in dashboards().items():
        declared = {v["name"] for v in board["templating"]["list"] if v["type"] == "datasource"}
        for panel in board["panels"]:
            for ref in [panel["datasource"], *(t["datasource"] for t in panel["targets"])]:
                assert ref["uid"].startswith("${ds_") and ref["uid"][2:-1] in declared, (name, panel["title"])
    provisioned = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "riskwatch.yaml").read_text())
    assert {d["type"] for d in provisioned["datasources"]} == {"grafana-clickhouse-datasource", "prometheus"}
    provider = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "riskwatch.yaml").read_text())
    assert provider["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    """A store with 3,000 simulated reports run through the detectors, and some officers' feedback."""
    from streams.clickhouse import Store, connect, ensure_schema
    from streams.settings import Settings

    client = connect(Settings(clickhouse_url=f"chdb://{tmp_path_factory.mktemp('grafana') / 'ch'}"))
    ensure_schema(client)
    store = Store(client)
    start = datetime.now(UTC) - timedelta(days=10)
    sim = Simulator(seed=5, start=start)
    policy = ValidationPolicy(max_age=timedelta(days=3650))
    results = [r for _ in range(3000) for r in validate_report(orjson.dumps(sim.next_report()), policy=policy).results]
    alerts = DetectorSuite().process(results, datetime.now(UTC))
    store.insert_results(results)
    store.insert_alerts(alerts)
    for n, alert in enumerate(alerts[:12]):
        set_status(client, alert.alert_id, ("acknowledged", "resolved", "false_alarm")[n % 3], "test")
    measured = {(r.category, r.test_item) for r in results if r.limit_ratio is not None}
    first_limit = next(a for a in alerts if a.detector == "limit_exceedance" and (a.category, a.test_item) in measured)
    yield client, start - timedelta(days=7), first_limit
    client.close()


def clickhouse_targets():
    for name, board in dashboards().items():
        for panel in board["panels"]:
            for target in panel["targets"]:
                if "rawSql" in target:
                    yield pytest.param(name, panel, target, id=f"{name}:{panel['title']}")


@pytest.mark.parametrize("name, panel, target", list(clickhouse_targets()))
@pytest.mark.parametrize("city_choice", ["all", "one"])
def test_every_clickhouse_panel_returns_rows_with_the_expected_columns(loaded, name, panel, target, city_choice):
    client, start, alert = loaded
    variables = {"category": alert.category, "test_item": alert.test_item, "city": ALL if city_choice == "all" else [alert.cities[0]]}
    sql = expand(target["rawSql"], start, datetime.now(UTC) + timedelta(days=1), 3600, variables)
    result = client.query(sql)
    assert result.result_rows, f"{panel['title']} returned no rows:\n{sql}"
    if target["format"] == 0:  # time series: a time column first, then numbers
        assert result.column_names[0] == "time"
        assert all(isinstance(v, (int, float)) or v is None for row in result.result_rows for v in row[1:] if not isinstance(v, str))
    else:
        assert len(result.column_names) >= 2 or panel["type"] == "stat"


def test_template_variable_queries_return_choices(loaded):
    client, _, alert = loaded
    for board in dashboards().values():
        for variable in board["templating"]["list"]:
            if variable["type"] == "query":
                rows = client.query(expand(variable["query"], datetime.now(UTC), datetime.now(UTC), 60, {"category": alert.category})).result_rows
                assert rows, variable["name"]


def test_the_documented_analyst_queries_run(loaded):
    client, _, _ = loaded
    text = (GRAFANA.parent / "docs" / "analysts.md").read_text(encoding="utf-8")
    queries = [block.split("```", 1)[0] for block in text.split("```sql")[1:]]
    assert len(queries) == 8
    for sql in queries:
        assert client.query(sql).result_rows, sql
