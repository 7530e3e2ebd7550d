-- Removal views over the ledger (one total order; FINAL collapses re-inserted entries).
-- Obligation = emission entries (emissions x (1 + buffer), revisions as +/- deltas);
-- removed = allocation entries (net capture and retired credits matched to the hour,
-- earliest unmatched hour first). Quantities in grams.

CREATE VIEW IF NOT EXISTS $database.carbon_debt_hourly AS
SELECT scope, hour_start, obligation_g, removed_g, obligation_g - removed_g AS debt_g
FROM (
    SELECT scope, assumeNotNull(hour_start) AS hour_start,
           sumIf(quantity_g, kind IN ('emission_hour', 'emission_revision')) AS obligation_g,
           sumIf(quantity_g, kind = 'allocation') AS removed_g
    FROM $database.ledger AS l FINAL
    WHERE l.hour_start IS NOT NULL
    GROUP BY scope, hour_start
);

-- Outstanding debt of each scope after every ledger entry (what a chart of debt shows).
CREATE VIEW IF NOT EXISTS $database.carbon_debt_timeline AS
SELECT seq, recorded_at, scope,
       sum(delta_g) OVER (PARTITION BY scope ORDER BY seq) AS debt_g
FROM (
    SELECT seq, recorded_at, scope,
           multiIf(kind IN ('emission_hour', 'emission_revision'), quantity_g,
                   kind = 'allocation', -quantity_g, 0) AS delta_g
    FROM $database.ledger FINAL
);

-- Per scope-hour: when the ledger made it fully covered, and the latency from hour end.
-- The clock is the ledger's recorded_at of the allocation that completed the coverage
-- (a credit counts once it is retired; its sequestered_at is kept on the order).
CREATE VIEW IF NOT EXISTS $database.removal_latency AS
SELECT scope, hour_start, obligation_g, removed_g, covered_at,
       if(covered_at IS NULL, NULL,
          (toUnixTimestamp64Milli(covered_at) - toUnixTimestamp64Milli(hour_start) - 3600000)
          / 3600000.0) AS latency_h
FROM (
    SELECT scope, assumeNotNull(hour_start) AS hour_start,
           sumIf(quantity_g, kind IN ('emission_hour', 'emission_revision')) AS obligation_g,
           sumIf(quantity_g, kind = 'allocation') AS removed_g,
           if(obligation_g > 0 AND removed_g >= obligation_g - 0.001,
              maxIf(recorded_at, kind = 'allocation'), NULL) AS covered_at
    FROM $database.ledger AS l FINAL
    WHERE l.hour_start IS NOT NULL
    GROUP BY scope, hour_start
);

-- Matching score: the share of each day's obligation covered within the latency target.
CREATE VIEW IF NOT EXISTS $database.matching_score_daily AS
SELECT scope, day, obligation_g, within_target_g,
       if(obligation_g > 0, least(1.0, within_target_g / obligation_g), NULL) AS score
FROM (
    SELECT scope, toDate(assumeNotNull(hour_start)) AS day,
           sumIf(quantity_g, kind IN ('emission_hour', 'emission_revision')) AS obligation_g,
           sumIf(quantity_g, kind = 'allocation'
                 AND JSONExtractBool(payload_json, 'within_target')) AS within_target_g
    FROM $database.ledger FINAL
    WHERE hour_start IS NOT NULL
    GROUP BY scope, day
);

CREATE VIEW IF NOT EXISTS $database.capture_hourly AS
SELECT c.site AS site, c.unit_id AS unit_id, c.hour_start AS hour_start, c.action AS action,
       c.target_rate_g_per_h AS target_rate_g_per_h,
       c.expected_capture_g - c.expected_parasitic_g AS expected_net_g,
       t.captured_g AS captured_g, t.electric_kwh * c.intensity_g_per_kwh AS parasitic_g,
       t.captured_g - t.electric_kwh * c.intensity_g_per_kwh AS net_g
FROM $database.capture_commands AS c FINAL
LEFT JOIN (SELECT * FROM $database.capture_telemetry FINAL) AS t ON t.command_id = c.command_id;
