-- One row per alert version. A merged alert (same alert_id, higher count) replaces the
-- earlier version on merge; read with FINAL for the latest version of each alert.
CREATE TABLE IF NOT EXISTS alerts
(
    alert_id          UUID,
    detector          LowCardinality(String),
    signal            String,
    severity          Enum8('not_serious' = 1, 'potentially_serious' = 2, 'serious' = 3),
    score             Float64,
    title             String,
    title_zh          String,
    explanation       String,
    explanation_zh    String,
    category          LowCardinality(String),
    test_item         LowCardinality(Nullable(String)),
    cities            Array(LowCardinality(String)),
    labs              Array(LowCardinality(String)),
    manufacturer_name String,
    manufacturer_uscc String,
    evidence          Array(UUID),
    count             UInt32,
    first_seen        DateTime64(3, 'UTC'),
    last_seen         DateTime64(3, 'UTC'),
    detected_at       DateTime64(3, 'UTC'),
    synthetic         Bool
)
ENGINE = ReplacingMergeTree(count)
PARTITION BY toYYYYMM(first_seen)
ORDER BY (detector, alert_id);
