-- Views for the common questions. Each reads the newest version of each logical row once
-- (FINAL on ReplacingMergeTree, or argMax by revision), so at-least-once delivery and
-- replays never change their results. emissions_g is the average (attributional) signal
-- in the configured variant; emissions_marginal_g is the marginal (consequential) one.

CREATE VIEW IF NOT EXISTS $database.emissions AS
SELECT * EXCEPT (ingested_at) FROM $database.emissions_hourly FINAL;

CREATE VIEW IF NOT EXISTS $database.emissions_by_job_hourly AS
SELECT hour_start, tenant, job_id, min(model) AS model,
       sum(energy_kwh) AS energy_kwh, sum(facility_energy_kwh) AS facility_energy_kwh,
       sum(emissions_average_g) AS emissions_g, sum(emissions_marginal_g) AS emissions_marginal_g,
       sum(embodied_g) AS embodied_g, sum(water_l) AS water_l, sum(coverage) AS gpu_hours,
       sumIf(e.energy_kwh, e.emissions_average_g IS NULL) AS unpriced_kwh,
       max(estimated_average) AS any_estimated, max(revision) AS max_revision
FROM $database.emissions AS e GROUP BY hour_start, tenant, job_id;

CREATE VIEW IF NOT EXISTS $database.emissions_by_job_daily AS
SELECT toDate(hour_start) AS day, tenant, job_id, min(model) AS model,
       sum(energy_kwh) AS energy_kwh, sum(facility_energy_kwh) AS facility_energy_kwh,
       sum(emissions_g) AS emissions_g, sum(emissions_marginal_g) AS emissions_marginal_g,
       sum(embodied_g) AS embodied_g, sum(water_l) AS water_l, sum(gpu_hours) AS gpu_hours,
       sum(unpriced_kwh) AS unpriced_kwh
FROM $database.emissions_by_job_hourly GROUP BY day, tenant, job_id;

CREATE VIEW IF NOT EXISTS $database.emissions_by_tenant_hourly AS
SELECT hour_start, tenant,
       sum(energy_kwh) AS energy_kwh, sum(facility_energy_kwh) AS facility_energy_kwh,
       sum(emissions_g) AS emissions_g, sum(emissions_marginal_g) AS emissions_marginal_g,
       sum(embodied_g) AS embodied_g, sum(water_l) AS water_l, sum(gpu_hours) AS gpu_hours,
       sum(unpriced_kwh) AS unpriced_kwh, count() AS jobs
FROM $database.emissions_by_job_hourly GROUP BY hour_start, tenant;

CREATE VIEW IF NOT EXISTS $database.emissions_by_tenant_daily AS
SELECT toDate(hour_start) AS day, tenant,
       sum(energy_kwh) AS energy_kwh, sum(facility_energy_kwh) AS facility_energy_kwh,
       sum(emissions_g) AS emissions_g, sum(emissions_marginal_g) AS emissions_marginal_g,
       sum(embodied_g) AS embodied_g, sum(water_l) AS water_l, sum(gpu_hours) AS gpu_hours,
       sum(unpriced_kwh) AS unpriced_kwh
FROM $database.emissions_by_tenant_hourly GROUP BY day, tenant;

CREATE VIEW IF NOT EXISTS $database.emissions_by_model_hourly AS
SELECT hour_start, model, gpu_model,
       sum(energy_kwh) AS energy_kwh, sum(facility_energy_kwh) AS facility_energy_kwh,
       sum(emissions_average_g) AS emissions_g, sum(emissions_marginal_g) AS emissions_marginal_g,
       sum(embodied_g) AS embodied_g, sum(water_l) AS water_l, sum(coverage) AS gpu_hours,
       sum(prompt_tokens + generation_tokens) AS tokens
FROM $database.emissions GROUP BY hour_start, model, gpu_model;

CREATE VIEW IF NOT EXISTS $database.emissions_by_model_daily AS
SELECT toDate(hour_start) AS day, model, gpu_model,
       sum(energy_kwh) AS energy_kwh, sum(facility_energy_kwh) AS facility_energy_kwh,
       sum(emissions_g) AS emissions_g, sum(emissions_marginal_g) AS emissions_marginal_g,
       sum(embodied_g) AS embodied_g, sum(water_l) AS water_l, sum(gpu_hours) AS gpu_hours,
       sum(tokens) AS tokens
FROM $database.emissions_by_model_hourly GROUP BY day, model, gpu_model;

CREATE VIEW IF NOT EXISTS $database.emissions_by_zone_hourly AS
SELECT *, if(energy_kwh > 0, emissions_g / energy_kwh, NULL) AS effective_g_per_kwh
FROM (
    SELECT hour_start, zone, site,
           sum(energy_kwh) AS energy_kwh, sum(facility_energy_kwh) AS facility_energy_kwh,
           sum(emissions_average_g) AS emissions_g,
           sum(emissions_marginal_g) AS emissions_marginal_g,
           sum(embodied_g) AS embodied_g, sum(water_l) AS water_l, sum(coverage) AS gpu_hours
    FROM $database.emissions GROUP BY hour_start, zone, site
);

CREATE VIEW IF NOT EXISTS $database.emissions_by_zone_daily AS
SELECT *, if(energy_kwh > 0, emissions_g / energy_kwh, NULL) AS effective_g_per_kwh
FROM (
    SELECT toDate(hour_start) AS day, zone, site,
           sum(energy_kwh) AS energy_kwh, sum(facility_energy_kwh) AS facility_energy_kwh,
           sum(emissions_g) AS emissions_g, sum(emissions_marginal_g) AS emissions_marginal_g,
           sum(embodied_g) AS embodied_g, sum(water_l) AS water_l, sum(gpu_hours) AS gpu_hours
    FROM $database.emissions_by_zone_hourly GROUP BY day, zone, site
);

-- Efficiency per day, GPU model and served model: energy and emissions per GPU-hour, and
-- per 1,000 tokens where the agent scraped token counters (NULL otherwise).
CREATE VIEW IF NOT EXISTS $database.efficiency_daily AS
SELECT day, gpu_model, model, energy_kwh, gpu_hours, emissions_g, tokens,
       if(gpu_hours > 0, energy_kwh / gpu_hours, NULL) AS kwh_per_gpu_hour,
       if(gpu_hours > 0, (emissions_g + embodied_g) / gpu_hours, NULL) AS g_per_gpu_hour,
       if(tokens > 0, (emissions_g + embodied_g) / (tokens / 1000), NULL) AS g_per_1k_tokens,
       if(tokens > 0, energy_kwh / (tokens / 1000), NULL) AS kwh_per_1k_tokens
FROM $database.emissions_by_model_daily;

-- The newest revision of each intensity period per provider (the table keeps every one).
CREATE VIEW IF NOT EXISTS $database.grid_intensity_current AS
SELECT zone, signal, variant, provider, period_start,
       argMax(g.period_end, g.revision) AS period_end,
       argMax(g.intensity_g_per_kwh, g.revision) AS intensity_g_per_kwh,
       argMax(g.kind, g.revision) AS kind,
       argMax(g.event_id, g.revision) AS event_id,
       max(g.revision) AS revision
FROM $database.grid_intensity AS g GROUP BY zone, signal, variant, provider, period_start;

CREATE VIEW IF NOT EXISTS $database.removal_orders_current AS
SELECT * EXCEPT (ingested_at) FROM $database.removal_orders FINAL;

CREATE VIEW IF NOT EXISTS $database.dead_letters_daily AS
SELECT toDate(failed_at) AS day, component, reason_code, count() AS messages,
       min(reason) AS example_reason
FROM $database.dead_letters FINAL GROUP BY day, component, reason_code;
