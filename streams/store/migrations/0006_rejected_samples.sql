-- Samples outside the physical bounds (schemas/bounds.py) never land in gpu_samples: the
-- sink stores them here, with the reason, so analysts summing gpu_samples never sum
-- energy the worker refused. gpu_samples rows also remember the message they came from,
-- so gpu_samples_accepted can leave out what the worker dead-lettered for reasons only it
-- can see (an overlap, a closed hour, an unknown zone or source).

ALTER TABLE $database.gpu_samples
    ADD COLUMN IF NOT EXISTS source_partition Int32 DEFAULT -1,
    ADD COLUMN IF NOT EXISTS source_offset Int64 DEFAULT -1;

-- A refused sample can hold any value its schema allows (a seq of -5, a start in 1970,
-- a 2 MB job id): it is kept whole, as JSON, beside the few columns that find it.
CREATE TABLE IF NOT EXISTS $database.gpu_samples_rejected
(
    host String,
    gpu_uuid String,
    seq Int64,
    batch_id String,
    sample_json String CODEC(ZSTD(3)),
    source_partition Int32,
    source_offset Int64,
    reason_code LowCardinality(String),
    reason String,
    ingested_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
ORDER BY (source_partition, source_offset, gpu_uuid, seq);

CREATE OR REPLACE VIEW $database.gpu_samples_accepted AS
SELECT *
FROM $database.gpu_samples FINAL
WHERE (source_partition, source_offset) NOT IN (
        -- a whole batch refused: its dead letter id is the message's own
        SELECT assumeNotNull(source_partition), assumeNotNull(source_offset)
        FROM $database.dead_letters
        WHERE component = 'worker.matching'
          AND source_topic LIKE '%gpu.samples%'
          AND dead_letter_id = concat(
              source_topic, ':', toString(source_partition), ':', toString(source_offset))
    )
  AND (source_partition, source_offset, gpu_uuid, seq) NOT IN (
        -- one sample refused: its dead letter id ends in :<gpu_uuid>:<seq>
        SELECT assumeNotNull(source_partition), assumeNotNull(source_offset),
               JSONExtractString(value, 'gpu_uuid'), JSONExtractUInt(value, 'seq')
        FROM $database.dead_letters
        WHERE component = 'worker.matching'
          AND source_topic LIKE '%gpu.samples%'
          AND dead_letter_id != concat(
              source_topic, ':', toString(source_partition), ':', toString(source_offset))
    );
