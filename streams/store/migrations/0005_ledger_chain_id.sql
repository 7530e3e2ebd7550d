-- The ledger is keyed by (chain_id, seq): a second ledger written into the same store
-- (a new broker, a re-created topic) adds rows beside the first instead of replacing
-- its entries seq by seq, and `llcr ledger verify` sees both. Rows of v1 chains keep
-- chain_id ''.

CREATE TABLE IF NOT EXISTS $database.ledger_chained
(
    seq UInt64,
    chain_id String,
    entry_id String,
    kind LowCardinality(String),
    scope LowCardinality(String),
    hour_start Nullable(DateTime64(3, 'UTC')),
    quantity_g Float64,
    ref_id String,
    payload_json String CODEC(ZSTD(3)),
    recorded_at DateTime64(3, 'UTC'),
    prev_hash String,
    hash String,
    ingested_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
ORDER BY (chain_id, seq);

INSERT INTO $database.ledger_chained
    (seq, chain_id, entry_id, kind, scope, hour_start, quantity_g, ref_id, payload_json,
     recorded_at, prev_hash, hash, ingested_at)
SELECT seq, '', entry_id, kind, scope, hour_start, quantity_g, ref_id, payload_json,
       recorded_at, prev_hash, hash, ingested_at
FROM $database.ledger;

EXCHANGE TABLES $database.ledger AND $database.ledger_chained;

DROP TABLE $database.ledger_chained;
