-- Daily aggregates per day × city × category × test item, kept up to date by a materialized view.
-- Counts are exact distinct result ids, so a replay that inserts a result twice counts it once.
CREATE TABLE IF NOT EXISTS daily_results
(
    day        Date,
    city       LowCardinality(String),
    category   LowCardinality(String),
    test_item  LowCardinality(String),
    results    AggregateFunction(uniqExact, UUID),
    failures   AggregateFunction(uniqExactIf, UUID, UInt8),
    max_ratio  SimpleAggregateFunction(max, Float64)
)
ENGINE = AggregatingMergeTree
ORDER BY (day, city, category, test_item);

CREATE MATERIALIZED VIEW IF NOT EXISTS daily_results_mv TO daily_results AS
SELECT
    toDate(sampled_at) AS day,
    city,
    category,
    test_item,
    uniqExactState(result_id) AS results,
    uniqExactIfState(result_id, verdict = 'fail') AS failures,
    max(ifNull(limit_ratio, 0)) AS max_ratio
FROM results
GROUP BY day, city, category, test_item;
