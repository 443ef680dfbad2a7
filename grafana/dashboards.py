"""Source of the Grafana dashboards in grafana/dashboards/*.json.

Run ``python grafana/dashboards.py`` after editing; a test checks that the JSON files are what
this file produces, and runs every ClickHouse panel's SQL (macros expanded) against chDB.
Panels reach their data sources through the dashboard variables ``ds_clickhouse`` and
``ds_prometheus``, so one dashboard works against any provisioned pair.
"""

from __future__ import annotations

import json
from pathlib import Path

CH = {"type": "grafana-clickhouse-datasource", "uid": "${ds_clickhouse}"}
PROM = {"type": "prometheus", "uid": "${ds_prometheus}"}
FOLDER = Path(__file__).parent / "dashboards"

SEVERITY_COLOURS = {"serious": "red", "potentially_serious": "orange", "not_serious": "blue"}


def ds_variables(prometheus: bool = False) -> list[dict]:
    variables = [{"name": "ds_clickhouse", "label": "ClickHouse", "type": "datasource", "query": "grafana-clickhouse-datasource", "hide": 0}]
    if prometheus:
        variables.append({"name": "ds_prometheus", "label": "Prometheus", "type": "datasource", "query": "prometheus", "hide": 0})
    return variables


def ch_variable(name: str, label: str, sql: str, multi: bool = False) -> dict:
    return {
        "name": name, "label": label, "type": "query", "datasource": CH, "query": sql, "definition": sql, "refresh": 2,
        "multi": multi, "includeAll": multi, "allValue": None, "sort": 1, "hide": 0,
    }  # fmt: skip


def ch_panel(panel_id: int, title: str, kind: str, sql: str, grid: tuple[int, int, int, int], description: str = "", **options) -> dict:
    """kind: timeseries | table | barchart | stat | piechart."""
    x, y, w, h = grid
    table_like = kind in ("table", "barchart", "piechart", "stat")
    panel = {
        "id": panel_id, "title": title, "description": description, "type": kind, "datasource": CH,
        "gridPos": {"x": x, "y": y, "w": w, "h": h},
        "targets": [{
            "refId": "A", "datasource": CH, "editorType": "sql", "queryType": "table" if table_like else "timeseries",
            "format": 1 if table_like else 0, "rawSql": " ".join(sql.split()),
        }],
        "options": options,
        "fieldConfig": {"defaults": {}, "overrides": []},
    }  # fmt: skip
    if kind == "timeseries" and "severity_colours" in options:
        options.pop("severity_colours")
        panel["fieldConfig"]["overrides"] = [
            {"matcher": {"id": "byName", "options": name}, "properties": [{"id": "color", "value": {"mode": "fixed", "fixedColor": colour}}]}
            for name, colour in SEVERITY_COLOURS.items()
        ]
    return panel


def prom_panel(panel_id: int, title: str, exprs: dict[str, str], grid: tuple[int, int, int, int], unit: str = "short", description: str = "") -> dict:
    x, y, w, h = grid
    return {
        "id": panel_id, "title": title, "description": description, "type": "timeseries", "datasource": PROM,
        "gridPos": {"x": x, "y": y, "w": w, "h": h},
        "targets": [{"refId": chr(65 + i), "datasource": PROM, "expr": expr, "legendFormat": legend} for i, (legend, expr) in enumerate(exprs.items())],
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {},
    }  # fmt: skip


def dashboard(uid: str, title: str, panels: list[dict], variables: list[dict], time_from: str = "now-90d") -> dict:
    return {
        "uid": uid, "title": title, "tags": ["riskwatch"], "timezone": "browser", "schemaVersion": 39, "version": 1,
        "time": {"from": time_from, "to": "now"}, "refresh": "1m", "editable": True,
        "templating": {"list": variables}, "panels": panels, "links": [
            {"title": "riskwatch", "type": "dashboards", "tags": ["riskwatch"], "asDropdown": True},
        ],
    }  # fmt: skip


def risk_overview() -> dict:
    panels = [
        ch_panel(1, "Alerts over time by severity", "timeseries", """
            SELECT $__timeInterval(first_seen) AS time,
                   countIf(severity = 'serious') AS serious,
                   countIf(severity = 'potentially_serious') AS potentially_serious,
                   countIf(severity = 'not_serious') AS not_serious
            FROM alerts FINAL WHERE $__timeFilter(first_seen) GROUP BY time ORDER BY time""", (0, 0, 16, 8),
            "Alerts by the sampling time of their first evidence.", severity_colours=True),
        ch_panel(2, "Open alerts by severity", "stat", """
            SELECT countIf(severity = 'serious') AS serious, countIf(severity = 'potentially_serious') AS potentially_serious,
                   countIf(severity = 'not_serious') AS not_serious
            FROM alerts_current WHERE status IN ('open', 'acknowledged') AND $__timeFilter(first_seen)""", (16, 0, 8, 8)),
        ch_panel(3, "Alerts by city", "barchart", """
            SELECT arrayJoin(cities) AS city, count() AS alerts FROM alerts FINAL
            WHERE $__timeFilter(first_seen) GROUP BY city ORDER BY alerts DESC""", (0, 8, 8, 8)),
        ch_panel(4, "Alerts by category", "barchart", """
            SELECT category, count() AS alerts FROM alerts FINAL
            WHERE $__timeFilter(first_seen) GROUP BY category ORDER BY alerts DESC LIMIT 15""", (8, 8, 8, 8)),
        ch_panel(5, "Failure rate by city", "timeseries", """
            SELECT $__timeInterval(day) AS time, city, uniqExactIfMerge(failures) / uniqExactMerge(results) AS failure_rate
            FROM daily_results WHERE $__dateFilter(day) GROUP BY time, city ORDER BY time""", (16, 8, 8, 8),
            "Share of failing results per day, from the daily aggregates."),
        ch_panel(6, "Top hazards", "table", """
            SELECT category, test_item, count() AS failing_results, round(max(score), 2) AS worst_ratio,
                   arrayStringConcat(arraySort(groupUniqArrayArray(cities)), ', ') AS cities
            FROM alerts FINAL WHERE detector = 'limit_exceedance' AND $__timeFilter(first_seen)
            GROUP BY category, test_item ORDER BY failing_results DESC, worst_ratio DESC LIMIT 20""", (0, 16, 12, 10)),
        ch_panel(7, "Open alerts", "table", """
            SELECT first_seen, severity, status, detector, title_zh, title, count, arrayStringConcat(cities, ', ') AS cities,
                   toString(alert_id) AS id
            FROM alerts_current WHERE status IN ('open', 'acknowledged') AND $__timeFilter(first_seen)
            ORDER BY severity DESC, last_seen DESC LIMIT 200""", (12, 16, 12, 10)),
    ]  # fmt: skip
    return dashboard("riskwatch-overview", "Risk overview", panels, ds_variables())


def category_drilldown() -> dict:
    where = "category = '${category}' AND test_item = '${test_item}' AND $__conditionalAll(city IN (${city:singlequote}), $city)"
    variables = ds_variables() + [
        ch_variable("category", "Category", "SELECT DISTINCT category FROM results ORDER BY category"),
        ch_variable("test_item", "Test item", "SELECT DISTINCT test_item FROM results WHERE category = '${category}' ORDER BY test_item"),
        ch_variable("city", "City", "SELECT DISTINCT city FROM results WHERE category = '${category}' ORDER BY city", multi=True),
    ]
    panels = [
        ch_panel(1, "Values against the limit (control chart)", "timeseries", f"""
            SELECT sampled_at AS time, limit_ratio AS value_to_limit,
                   quantileExact(0.5)(limit_ratio) OVER (ORDER BY sampled_at ROWS BETWEEN 30 PRECEDING AND CURRENT ROW) AS rolling_median,
                   1.0 AS limit
            FROM results FINAL WHERE {where} AND limit_ratio IS NOT NULL AND $__timeFilter(sampled_at) ORDER BY time""", (0, 0, 24, 10),
            "Each result as value / limit (1 = the limit), with the rolling median of the last 30 as the centre line."),
        ch_panel(2, "Results and failures per day", "timeseries", f"""
            SELECT $__timeInterval(day) AS time, uniqExactMerge(results) AS results, uniqExactIfMerge(failures) AS failures
            FROM daily_results WHERE {where} AND $__dateFilter(day) GROUP BY time ORDER BY time""", (0, 10, 12, 8)),
        ch_panel(3, "Labs on this item", "table", f"""
            SELECT lab_id AS lab, city, count() AS results, round(avg(limit_ratio), 3) AS mean_ratio,
                   round(quantileExact(0.9)(limit_ratio), 3) AS p90_ratio, countIf(verdict = 'fail') AS failures
            FROM results FINAL WHERE {where} AND $__timeFilter(sampled_at) GROUP BY lab, city ORDER BY mean_ratio DESC""", (12, 10, 12, 8)),
        ch_panel(4, "Alerts on this category", "table", """
            SELECT first_seen, severity, status, detector, title_zh, explanation, count
            FROM alerts_current WHERE category = '${category}' AND $__timeFilter(first_seen) ORDER BY last_seen DESC LIMIT 100""",
            (0, 18, 24, 10)),
    ]  # fmt: skip
    return dashboard("riskwatch-category", "Category drill-down", panels, variables)


def pipeline_health() -> dict:
    rate = "$__rate_interval"
    panels = [
        prom_panel(1, "Throughput", {
            "reports read": f"sum(rate(riskwatch_reports_received_total[{rate}]))",
            "results stored": f"sum(rate(riskwatch_results_stored_total[{rate}]))",
            "duplicates skipped": f"sum(rate(riskwatch_results_duplicate_total[{rate}]))",
        }, (0, 0, 12, 8), "ops"),
        prom_panel(2, "Consumer lag", {"{{topic}}": "sum by (topic) (riskwatch_consumer_lag)"}, (12, 0, 12, 8)),
        prom_panel(3, "Dead letters", {
            "{{stage}}": f"sum by (stage) (rate(riskwatch_dead_letters_total[{rate}]))",
            "share of reports": f"sum(rate(riskwatch_dead_letters_total[{rate}])) / clamp_min(sum(rate(riskwatch_reports_received_total[{rate}])), 1e-9)",
        }, (0, 8, 12, 8)),
        prom_panel(4, "Publication → ClickHouse latency", {
            "p50": f"histogram_quantile(0.5, sum by (le) (rate(riskwatch_processing_latency_seconds_bucket[{rate}])))",
            "p99": f"histogram_quantile(0.99, sum by (le) (rate(riskwatch_processing_latency_seconds_bucket[{rate}])))",
        }, (12, 8, 12, 8), "s"),
        prom_panel(5, "ClickHouse sink", {
            "batch p99 seconds": f"histogram_quantile(0.99, sum by (le) (rate(riskwatch_sink_batch_seconds_bucket[{rate}])))",
            "errors": f"sum(rate(riskwatch_sink_errors_total[{rate}]))",
        }, (0, 16, 12, 8)),
        prom_panel(6, "Alerts raised and paged", {
            "{{detector}} {{severity}}": f"sum by (detector, severity) (rate(riskwatch_alerts_total[{rate}]))",
            "paged {{severity}}": f"sum by (severity) (rate(riskwatch_pages_sent_total[{rate}]))",
        }, (12, 16, 12, 8)),
    ]  # fmt: skip
    return dashboard("riskwatch-pipeline", "Pipeline health", panels, ds_variables(prometheus=True), time_from="now-6h")


def detector_precision() -> dict:
    panels = [
        ch_panel(1, "Precision from officers' feedback", "barchart", """
            SELECT detector, countIf(status = 'resolved') / nullIf(countIf(status IN ('resolved', 'false_alarm')), 0) AS precision
            FROM alerts_current WHERE $__timeFilter(first_seen) GROUP BY detector ORDER BY detector""", (0, 0, 12, 9),
            "Resolved alerts were real, false alarms were not; acknowledged and open alerts are not yet judged."),
        ch_panel(2, "Feedback by detector", "table", """
            SELECT detector, count() AS alerts, countIf(status = 'open') AS open, countIf(status = 'acknowledged') AS acknowledged,
                   countIf(status = 'resolved') AS resolved, countIf(status = 'false_alarm') AS false_alarms
            FROM alerts_current WHERE $__timeFilter(first_seen) GROUP BY detector ORDER BY detector""", (12, 0, 12, 9)),
        ch_panel(3, "False alarms over time", "timeseries", """
            SELECT $__timeInterval(changed_at) AS time, count() AS false_alarms FROM alert_feedback
            WHERE status = 'false_alarm' AND $__timeFilter(changed_at) GROUP BY time ORDER BY time""", (0, 9, 24, 8)),
    ]  # fmt: skip
    return dashboard("riskwatch-precision", "Detector precision", panels, ds_variables())


DASHBOARDS = {
    "risk-overview.json": risk_overview,
    "category-drill-down.json": category_drilldown,
    "pipeline-health.json": pipeline_health,
    "detector-precision.json": detector_precision,
}


def render(build) -> str:
    return json.dumps(build(), ensure_ascii=False, indent=2) + "\n"


if __name__ == "__main__":
    FOLDER.mkdir(exist_ok=True)
    for name, build in DASHBOARDS.items():
        (FOLDER / name).write_text(render(build), encoding="utf-8")
        print(f"wrote {FOLDER / name}")
