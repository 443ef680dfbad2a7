"""The alert lifecycle in ClickHouse: open → acknowledged → resolved, or false alarm.

Every change is a row in ``alert_feedback`` (who, when, why), so the history stays; the
current status is the latest row (view ``alerts_current``). Officers' verdicts give each
detector's precision: resolved alerts were real, false alarms were not.
"""

from __future__ import annotations

from dataclasses import dataclass

from clickhouse_connect.driver.client import Client

STATUSES = ("open", "acknowledged", "resolved", "false_alarm")
_SEVERITY_ORDER = "multiIf(severity = 'serious', 3, severity = 'potentially_serious', 2, 1)"


class AlertNotFound(LookupError):
    pass


def resolve_id(client: Client, prefix: str) -> str:
    """The full alert id for an id or a unique prefix of one (as printed by ``alerts list``)."""
    rows = client.query(
        "SELECT DISTINCT toString(alert_id) FROM alerts WHERE startsWith(toString(alert_id), {prefix:String}) LIMIT 2",
        parameters={"prefix": prefix.strip().lower()},
    ).result_rows
    if not rows:
        raise AlertNotFound(f"no alert with id {prefix!r}")
    if len(rows) > 1:
        raise AlertNotFound(f"{prefix!r} matches more than one alert; give more of the id")
    return rows[0][0]


def set_status(client: Client, alert_id: str, status: str, by: str, note: str = "") -> str:
    if status not in STATUSES:
        raise ValueError(f"status must be one of {', '.join(STATUSES)}")
    full = resolve_id(client, alert_id)
    client.insert("alert_feedback", [[full, status, by, note]], column_names=["alert_id", "status", "changed_by", "note"])
    return full


def list_alerts(client: Client, *, status: str | None = None, severity: str | None = None, detector: str | None = None, limit: int = 50):
    conditions, parameters = [], {"limit": limit}
    for name, value in (("status", status), ("severity", severity), ("detector", detector)):
        if value:
            conditions.append(f"toString({name}) = {{{name}:String}}")
            parameters[name] = value
    where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
    return client.query(
        "SELECT toString(alert_id) AS id, status, severity, detector, title_zh, title, count, cities, last_seen "
        f"FROM alerts_current {where} ORDER BY {_SEVERITY_ORDER} DESC, last_seen DESC LIMIT {{limit:UInt32}}",  # noqa: S608 - conditions are fixed text
        parameters=parameters,
    )


def show_alert(client: Client, alert_id: str) -> tuple[dict, list[tuple]]:
    """The alert with its status, and its status history."""
    full = resolve_id(client, alert_id)
    result = client.query("SELECT * FROM alerts_current WHERE alert_id = {id:UUID}", parameters={"id": full})
    alert = dict(zip(result.column_names, result.result_rows[0], strict=True))
    history = client.query(
        "SELECT changed_at, toString(status), changed_by, note FROM alert_feedback WHERE alert_id = {id:UUID} ORDER BY changed_at",
        parameters={"id": full},
    ).result_rows
    return alert, history


@dataclass(frozen=True, slots=True)
class DetectorPrecision:
    detector: str
    alerts: int
    judged: int
    confirmed: int
    false_alarms: int

    @property
    def precision(self) -> float | None:
        return self.confirmed / self.judged if self.judged else None


def precision_by_detector(client: Client) -> list[DetectorPrecision]:
    rows = client.query(
        "SELECT detector, count(), countIf(status IN ('resolved', 'false_alarm')), countIf(status = 'resolved'), "
        "countIf(status = 'false_alarm') FROM alerts_current GROUP BY detector ORDER BY detector"
    ).result_rows
    return [DetectorPrecision(str(d), int(a), int(j), int(c), int(f)) for d, a, j, c, f in rows]
