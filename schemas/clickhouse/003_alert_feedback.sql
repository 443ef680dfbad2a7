-- Officers' feedback on alerts: one row per status change (open → acknowledged → resolved, or
-- false_alarm). The current status is the latest change. Detector precision comes from here:
-- resolved alerts were real, false alarms were not.
CREATE TABLE IF NOT EXISTS alert_feedback
(
    alert_id    UUID,
    status      Enum8('open' = 1, 'acknowledged' = 2, 'resolved' = 3, 'false_alarm' = 4),
    changed_at  DateTime64(3, 'UTC') DEFAULT now64(3),
    changed_by  LowCardinality(String),
    note        String
)
ENGINE = MergeTree
ORDER BY (alert_id, changed_at);

-- Each alert's latest version with its current status ('open' until someone acts on it).
CREATE VIEW IF NOT EXISTS alerts_current AS
SELECT
    a.*,
    ifNull(f.status, 'open') AS status,
    f.last_changed_at AS status_changed_at,
    f.last_changed_by AS status_changed_by,
    f.last_note AS status_note
FROM (SELECT * FROM alerts FINAL) AS a
LEFT JOIN
(
    SELECT
        alert_id,
        toString(argMax(status, changed_at)) AS status,
        max(changed_at) AS last_changed_at,
        argMax(changed_by, changed_at) AS last_changed_by,
        argMax(note, changed_at) AS last_note
    FROM alert_feedback
    GROUP BY alert_id
) AS f USING (alert_id)
SETTINGS join_use_nulls = 1;
