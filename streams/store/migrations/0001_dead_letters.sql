-- Dead letters from every component: what was rejected, why, and the original bytes.
-- Deterministic ids + ReplacingMergeTree: a replayed dead letter is stored once.
CREATE TABLE IF NOT EXISTS $database.dead_letters
(
    dead_letter_id String,
    component LowCardinality(String),
    source_topic Nullable(String),
    source_partition Nullable(Int32),
    source_offset Nullable(Int64),
    reason_code LowCardinality(String),
    reason String,
    key Nullable(String) CODEC(ZSTD(3)),
    value String CODEC(ZSTD(3)),
    failed_at DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(failed_at)
ORDER BY (component, reason_code, dead_letter_id);
