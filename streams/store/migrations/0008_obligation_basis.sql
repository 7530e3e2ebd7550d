-- Priced or owed: per scope-hour, how much of the obligation rests on intensity events
-- and how much is an estimate for energy no intensity priced (owed at the removal
-- service's conservative rate until the price arrives, then revised). The latest
-- revision of each emission record counts. Grams before the reversal buffer; entries
-- written before this basis was ledgered count as priced.

CREATE VIEW IF NOT EXISTS $database.obligation_basis_hourly AS
SELECT scope, hour_start,
       sum(record_priced_g) AS priced_g,
       sum(record_estimated_g) AS estimated_g,
       sum(record_unpriced_kwh) AS unpriced_kwh,
       sum(record_energy_kwh) AS energy_kwh,
       countIf(record_estimated_g > 0) AS records_estimated
FROM (
    SELECT scope, assumeNotNull(hour_start) AS hour_start,
           JSONExtractString(payload_json, 'record_id') AS record_id,
           argMax(JSONExtractFloat(payload_json, 'emissions_g'), seq) AS record_priced_g,
           argMax(JSONExtractFloat(payload_json, 'estimated_g'), seq) AS record_estimated_g,
           argMax(JSONExtractFloat(payload_json, 'unpriced_kwh'), seq) AS record_unpriced_kwh,
           argMax(JSONExtractFloat(payload_json, 'energy_kwh'), seq) AS record_energy_kwh
    FROM $database.ledger FINAL
    WHERE kind IN ('emission_hour', 'emission_revision') AND hour_start IS NOT NULL
    GROUP BY scope, hour_start, record_id
)
GROUP BY scope, hour_start;
