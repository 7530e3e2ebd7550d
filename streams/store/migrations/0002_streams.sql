-- One table per topic. Every row has a deterministic identity (the table's ORDER BY key)
-- and ReplacingMergeTree collapses the copies an at-least-once sink may insert; where a
-- row is revised, the version column keeps the newest. Read with FINAL (or the views of
-- 0003) to see each logical row once. Times are DateTime64(3, 'UTC'); ingested_at is when
-- the sink wrote the row (the raw-sample TTL counts from it, so replays of old data stay).

CREATE TABLE IF NOT EXISTS $database.gpu_samples
(
    host LowCardinality(String),
    site LowCardinality(String),
    zone LowCardinality(String),
    agent_id LowCardinality(String),
    source LowCardinality(String),
    batch_id String CODEC(ZSTD(3)),
    gpu_uuid LowCardinality(String),
    gpu_index UInt16,
    gpu_model LowCardinality(String),
    mig_instance LowCardinality(String),
    seq UInt64 CODEC(Delta, ZSTD(3)),
    start DateTime64(3, 'UTC') CODEC(Delta, ZSTD(3)),
    end DateTime64(3, 'UTC') CODEC(Delta, ZSTD(3)),
    energy_mj Int64 CODEC(T64, ZSTD(3)),
    energy_method LowCardinality(String),
    flags Array(LowCardinality(String)),
    power_w Float64 CODEC(Gorilla, ZSTD(3)),
    power_limit_w Float64 CODEC(ZSTD(3)),
    utilization_pct Float64 CODEC(Gorilla, ZSTD(3)),
    memory_used_bytes UInt64 CODEC(T64, ZSTD(3)),
    temperature_c Float64 CODEC(Gorilla, ZSTD(3)),
    job_ids Array(String) CODEC(ZSTD(3)),
    job_tenants Array(LowCardinality(String)),
    job_models Array(String) CODEC(ZSTD(3)),
    job_shares Array(Float64) CODEC(ZSTD(3)),
    job_energy_mj Array(Int64) CODEC(ZSTD(3)),
    job_prompt_tokens Array(UInt64) CODEC(ZSTD(3)),
    job_generation_tokens Array(UInt64) CODEC(ZSTD(3)),
    published_at DateTime64(3, 'UTC') CODEC(Delta, ZSTD(3)),
    ingested_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(start)
ORDER BY (host, gpu_uuid, mig_instance, seq);

CREATE TABLE IF NOT EXISTS $database.grid_intensity
(
    event_id String,
    zone LowCardinality(String),
    period_start DateTime64(3, 'UTC'),
    period_end DateTime64(3, 'UTC'),
    intensity_g_per_kwh Float64,
    signal LowCardinality(String),
    variant LowCardinality(String),
    provider LowCardinality(String),
    kind LowCardinality(String),
    estimation_method Nullable(String),
    revision UInt32,
    published_at DateTime64(3, 'UTC'),
    ingested_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(period_start)
ORDER BY (zone, signal, variant, provider, period_start, revision);

CREATE TABLE IF NOT EXISTS $database.emissions_hourly
(
    record_id String,
    hour_start DateTime64(3, 'UTC'),
    host LowCardinality(String),
    site LowCardinality(String),
    zone LowCardinality(String),
    gpu_uuid LowCardinality(String),
    gpu_model LowCardinality(String),
    job_id String,
    tenant LowCardinality(String),
    model LowCardinality(String),
    status LowCardinality(String),
    revision UInt32,
    energy_mj Int64,
    energy_kwh Float64,
    facility_energy_kwh Float64,
    water_l Float64,
    embodied_g Float64,
    coverage Float64,
    prompt_tokens UInt64,
    generation_tokens UInt64,
    emissions_average_g Nullable(Float64),
    intensity_average_g_per_kwh Nullable(Float64),
    priced_fraction_average Nullable(Float64),
    variant_average LowCardinality(Nullable(String)),
    providers_average Array(LowCardinality(String)),
    intensity_events_average Array(String) CODEC(ZSTD(3)),
    estimated_average Nullable(Bool),
    emissions_marginal_g Nullable(Float64),
    intensity_marginal_g_per_kwh Nullable(Float64),
    priced_fraction_marginal Nullable(Float64),
    variant_marginal LowCardinality(Nullable(String)),
    providers_marginal Array(LowCardinality(String)),
    intensity_events_marginal Array(String) CODEC(ZSTD(3)),
    estimated_marginal Nullable(Bool),
    computed_at DateTime64(3, 'UTC'),
    ingested_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(revision)
PARTITION BY toYYYYMM(hour_start)
ORDER BY (hour_start, record_id);

CREATE TABLE IF NOT EXISTS $database.emissions_live
(
    record_id String,
    hour_start DateTime64(3, 'UTC'),
    host LowCardinality(String),
    site LowCardinality(String),
    zone LowCardinality(String),
    gpu_uuid LowCardinality(String),
    job_id String,
    tenant LowCardinality(String),
    energy_mj Int64,
    emissions_average_g Nullable(Float64),
    emissions_marginal_g Nullable(Float64),
    coverage Float64,
    as_of DateTime64(3, 'UTC'),
    computed_at DateTime64(3, 'UTC'),
    ingested_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(as_of)
PARTITION BY toYYYYMM(hour_start)
ORDER BY (hour_start, record_id)
TTL toDateTime(ingested_at) + INTERVAL 7 DAY;

CREATE TABLE IF NOT EXISTS $database.capture_commands
(
    command_id String,
    site LowCardinality(String),
    unit_id LowCardinality(String),
    hour_start DateTime64(3, 'UTC'),
    action LowCardinality(String),
    target_rate_g_per_h Float64,
    expected_capture_g Float64,
    expected_parasitic_g Float64,
    intensity_g_per_kwh Float64,
    reason String,
    issued_at DateTime64(3, 'UTC'),
    ingested_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(hour_start)
ORDER BY (site, unit_id, hour_start, command_id);

CREATE TABLE IF NOT EXISTS $database.capture_telemetry
(
    telemetry_id String,
    unit_id LowCardinality(String),
    site LowCardinality(String),
    command_id Nullable(String),
    period_start DateTime64(3, 'UTC'),
    period_end DateTime64(3, 'UTC'),
    captured_g Float64,
    electric_kwh Float64,
    thermal_kwh Float64,
    rate_g_per_h Float64,
    state LowCardinality(String),
    reported_at DateTime64(3, 'UTC'),
    ingested_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(period_start)
ORDER BY (site, unit_id, period_start, telemetry_id);

CREATE TABLE IF NOT EXISTS $database.removal_orders
(
    order_id String,
    idempotency_key String,
    scope LowCardinality(String),
    method LowCardinality(String),
    quantity_g Int64,
    status LowCardinality(String),
    provider LowCardinality(String),
    provider_order_id Nullable(String),
    serial_numbers Array(String) CODEC(ZSTD(3)),
    retired_at Nullable(DateTime64(3, 'UTC')),
    sequestered_at Nullable(DateTime64(3, 'UTC')),
    deadline DateTime64(3, 'UTC'),
    hour_starts Array(DateTime64(3, 'UTC')),
    price_per_t Nullable(Float64),
    currency LowCardinality(Nullable(String)),
    reason Nullable(String),
    version UInt32,
    updated_at DateTime64(3, 'UTC'),
    ingested_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(version)
ORDER BY order_id;

CREATE TABLE IF NOT EXISTS $database.ledger
(
    seq UInt64,
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
ORDER BY seq;

CREATE TABLE IF NOT EXISTS $database.signals
(
    signal_id String,
    kind LowCardinality(String),
    zone LowCardinality(Nullable(String)),
    mode LowCardinality(Nullable(String)),
    intensity_g_per_kwh Nullable(Float64),
    percentile Nullable(Float64),
    reason String,
    valid_from DateTime64(3, 'UTC'),
    valid_until Nullable(DateTime64(3, 'UTC')),
    payload_json String CODEC(ZSTD(3)),
    issued_at DateTime64(3, 'UTC'),
    ingested_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(valid_from)
ORDER BY (kind, valid_from, signal_id);
