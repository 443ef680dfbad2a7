-- One row per lab result (sample × test item), values in the test item's canonical unit.
-- ReplacingMergeTree: a replay after a crash inserts identical rows again; they collapse on
-- merge, and queries that must count exactly read with FINAL (or GROUP BY result_id).
CREATE TABLE IF NOT EXISTS results
(
    result_id         UUID,
    report_id         String,
    sample_id         String,
    lab_id            LowCardinality(String),
    lab_name          LowCardinality(String),
    city              LowCardinality(String),
    programme         LowCardinality(String),
    category          LowCardinality(String),
    product_name      String,
    manufacturer_name String,
    manufacturer_uscc String,
    sampling_site     String,
    site_kind         LowCardinality(String),
    sampled_at        DateTime64(3, 'UTC'),
    tested_at         DateTime64(3, 'UTC'),
    published_at      DateTime64(3, 'UTC'),
    test_item         LowCardinality(String),
    value             Nullable(Float64),
    unit              LowCardinality(String),
    qualitative       LowCardinality(Nullable(String)),
    lod               Nullable(Float64),
    limit_value       Nullable(Float64),
    limit_type        Enum8('max' = 1, 'min' = 2),
    limit_ratio       Nullable(Float64),
    standard          LowCardinality(String),
    verdict           Enum8('pass' = 1, 'fail' = 2),
    reported_value    Nullable(Float64),
    reported_unit     LowCardinality(String),
    synthetic         Bool,
    source_partition  Int32,
    source_offset     Int64,
    ingested_at       DateTime64(3, 'UTC') DEFAULT now64(3),
    INDEX idx_result_id result_id TYPE bloom_filter GRANULARITY 4,
    INDEX idx_manufacturer manufacturer_uscc TYPE bloom_filter GRANULARITY 4
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(sampled_at)
ORDER BY (category, test_item, city, sampled_at, result_id);
