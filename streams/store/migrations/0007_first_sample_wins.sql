-- A sample is a fact: the first message that carried a (host, gpu_uuid, mig_instance, seq)
-- is the one kept. gpu_samples was a ReplacingMergeTree without a version, so the *last*
-- row inserted won: a forged message repeating a sample's key with other numbers replaced
-- the real row for analysts (the worker, which keeps the first, priced the real one).
-- Now the version is the reverse of the source offset: the earliest message wins, an
-- exact re-delivery (same offset) is still one row, and rows from before source offsets
-- (-1) rank first.

ALTER TABLE $database.gpu_samples
    ADD COLUMN IF NOT EXISTS arrival_rank UInt64
    MATERIALIZED toUInt64(9223372036854775807) - toUInt64(source_offset + 1);

CREATE TABLE IF NOT EXISTS $database.gpu_samples_first_wins AS $database.gpu_samples
ENGINE = ReplacingMergeTree(arrival_rank)
PARTITION BY toYYYYMM(start)
ORDER BY (host, gpu_uuid, mig_instance, seq);

INSERT INTO $database.gpu_samples_first_wins SELECT * FROM $database.gpu_samples;

EXCHANGE TABLES $database.gpu_samples AND $database.gpu_samples_first_wins;

DROP TABLE $database.gpu_samples_first_wins;
